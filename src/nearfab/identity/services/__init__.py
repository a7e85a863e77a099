"""Identity use cases: users, login and tokens, the audit trail, electronic signatures."""

from nearfab.identity.services.audit import audit, audit_trail, audited_transition, refuse
from nearfab.identity.services.keys import KeyMismatch, check_platform_keys
from nearfab.identity.services.signatures import SignatureService
from nearfab.identity.services.users import UserService, _hasher, actor_of

__all__ = [
    "KeyMismatch",
    "SignatureService",
    "UserService",
    "_hasher",
    "actor_of",
    "audit",
    "audit_trail",
    "audited_transition",
    "check_platform_keys",
    "refuse",
]
