"""Identity: users and roles, login, the audit trail and electronic signatures."""

from nearfab.identity.enums import AuditAction, Role
from nearfab.identity.logic import Actor, record_hash, require_role, system_actor
from nearfab.identity.models import ApiToken, AuditEntry, PlatformKey, Signature, User
from nearfab.identity.services import (
    KeyMismatch,
    SignatureService,
    UserService,
    actor_of,
    audit,
    audit_trail,
    audited_transition,
    check_platform_keys,
    refuse,
)

__all__ = [
    "Actor",
    "ApiToken",
    "AuditAction",
    "AuditEntry",
    "KeyMismatch",
    "PlatformKey",
    "Role",
    "Signature",
    "SignatureService",
    "User",
    "UserService",
    "actor_of",
    "audit",
    "audit_trail",
    "audited_transition",
    "check_platform_keys",
    "record_hash",
    "refuse",
    "require_role",
    "system_actor",
]
