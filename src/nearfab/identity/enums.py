"""Roles and audit actions."""

from enum import StrEnum


class Role(StrEnum):
    OPERATOR = "operator"
    PHARMACIST = "pharmacist"
    QP = "qp"
    CLINICIAN = "clinician"
    PLANNER = "planner"
    AUDITOR = "auditor"
    ADMIN = "admin"


class AuditAction(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    TRANSITION = "transition"
    REFUSE = "refuse"
    SIGN = "sign"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
