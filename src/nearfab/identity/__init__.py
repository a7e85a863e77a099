"""Identity: users and roles, login, the audit trail and electronic signatures."""

from nearfab.identity.enums import AuditAction, Role
from nearfab.identity.logic import Actor, record_hash, system_actor
from nearfab.identity.models import (
    ApprovalRequest,
    AuditChainHead,
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
    ChainReport,
    KeyMismatch,
    SignatureService,
    UserService,
    actor_of,
    append_audit_rows,
    audit,
    audit_trail,
    audited_transition,
    check_platform_keys,
    refuse,
    search_audit,
    signatures_on,
    verify_audit_chain,
)
from nearfab.identity.services.approvals import MASTER_FILE_QP as APPROVAL_MASTER_FILE_QP
from nearfab.identity.services.approvals import describe as approval_dict
from nearfab.identity.services.approvals import file_request as request_approval
from nearfab.identity.services.credentials import AccountPolicy, SecretBox

__all__ = [
    "APPROVAL_MASTER_FILE_QP",
    "MATRIX",
    "AccountPolicy",
    "Actor",
    "ApprovalRequest",
    "AuditAction",
    "AuditChainHead",
    "AuditEntry",
    "ChainReport",
    "KeyMismatch",
    "PasswordHistory",
    "Permission",
    "PlatformKey",
    "Role",
    "SecretBox",
    "SecurityAlert",
    "Signature",
    "SignatureService",
    "User",
    "UserService",
    "UserSession",
    "actor_of",
    "append_audit_rows",
    "approval_dict",
    "audit",
    "audit_trail",
    "audited_transition",
    "authorize",
    "can",
    "check_platform_keys",
    "is_network_wide",
    "record_hash",
    "refuse",
    "request_approval",
    "search_audit",
    "signatures_on",
    "site_filter",
    "system_actor",
    "verify_audit_chain",
    "visible_sites",
]
