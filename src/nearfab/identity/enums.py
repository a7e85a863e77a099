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
    # the manufacturer's person responsible for regulatory compliance (UK MDR 2002 / EU MDR
    # Art. 15): releases a medical device family's batches where a QP releases a medicine's
    RESPONSIBLE_PERSON = "responsible_person"


class AuditAction(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    TRANSITION = "transition"
    REFUSE = "refuse"
    SIGN = "sign"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    # accounts and sessions (docs/accounts-and-signatures.md)
    LOGOUT = "logout"
    SESSION_EXPIRED = "session_expired"
    DEACTIVATE = "deactivate"
    REACTIVATE = "reactivate"
    LOCK = "lock"
    UNLOCK = "unlock"
    ROLES_CHANGE = "roles_change"
    PASSWORD_CHANGE = "password_change"
    PASSWORD_RESET = "password_reset"
    TOTP_ENROL = "totp_enrol"
    TOTP_ENABLE = "totp_enable"
    TOTP_RESET = "totp_reset"
    SIGN_FAILED = "sign_failed"
