"""Identity use cases: users, login and tokens, the audit trail, electronic signatures."""

from nearfab.identity.services.audit import (
    ChainReport,
    append_audit_rows,
    audit,
    audit_trail,
    audited_transition,
    refuse,
    search_audit,
    signatures_on,
    verify_audit_chain,
)
from nearfab.identity.services.keys import KeyMismatch, check_platform_keys
from nearfab.identity.services.signatures import SignatureService
from nearfab.identity.services.users import UserService, _hasher, actor_of

__all__ = [
    "ChainReport",
    "KeyMismatch",
    "SignatureService",
    "UserService",
    "_hasher",
    "actor_of",
    "append_audit_rows",
    "audit",
    "audit_trail",
    "audited_transition",
    "check_platform_keys",
    "refuse",
    "search_audit",
    "signatures_on",
    "verify_audit_chain",
]
