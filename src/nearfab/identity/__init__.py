"""Identity: users and roles, login, the audit trail and electronic signatures."""

from nearfab.identity.enums import AuditAction, Role
from nearfab.identity.logic import Actor, record_hash, require_role, system_actor
from nearfab.identity.models import (
    AuditEntry,
    PasswordHistory,
    PlatformKey,
    SecurityAlert,
    Signature,
    User,
    UserSession,
)
from nearfab.identity.permissions import (
    MATRIX,
    Permission,
    authorize,
    can,
    is_network_wide,
    site_filter,
    visible_sites,
)
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
    "MATRIX",
    "Actor",
    "AuditAction",
    "AuditEntry",
    "KeyMismatch",
    "Permission",
    "PasswordHistory",
    "PlatformKey",
    "Role",
    "SecurityAlert",
    "Signature",
    "SignatureService",
    "User",
    "UserService",
    "UserSession",
    "actor_of",
    "audit",
    "audit_trail",
    "audited_transition",
    "authorize",
    "can",
    "check_platform_keys",
    "is_network_wide",
    "site_filter",
    "record_hash",
    "refuse",
    "require_role",
    "system_actor",
    "visible_sites",
]
