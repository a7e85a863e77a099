"""Accounts, password login, sessions (web and API), lockout, TOTP and role grants: one
service object (`UserService`) composed of a part per use case.

The rules are in docs/accounts-and-signatures.md. In short: users are never deleted (ids and
usernames are never reused); passwords follow `AccountPolicy`, age, and are temporary when an
administrator set them; consecutive failures (logins and signatures) lock the account until an
administrator unlocks it, raising a security alert; sessions live in `user_sessions` and can
be revoked, with an idle timeout and an absolute lifetime.

The parts: directory.py (finding accounts, `actor_of`), accounts.py (create, list, deactivate),
grants.py (roles, approval requests), passwords.py (hashing, rules, reset, change),
lockout.py (failures, alerts, unlock), totp.py (the second factor), logins.py (log in, open a
session), sessions.py (use, expire, end sessions)."""

from __future__ import annotations

from argon2 import PasswordHasher

from nearfab.identity.services import approvals
from nearfab.identity.services.accounts import Accounts, user_dict
from nearfab.identity.services.credentials import AccountPolicy, SecretBox
from nearfab.identity.services.directory import actor_of, by_username, get_user, read_user
from nearfab.identity.services.grants import Grants
from nearfab.identity.services.lockout import Lockout, locked_error
from nearfab.identity.services.logins import Logins
from nearfab.identity.services.passwords import Passwords
from nearfab.identity.services.sessions import TOKEN_LIFETIME, Sessions
from nearfab.identity.services.totp import Totp

# the one password hasher (argon2id, the library's defaults); the parts read it at each use,
# so the tests can swap in a cheaper one by setting this attribute
_hasher = PasswordHasher()


def _current_hasher() -> PasswordHasher:
    return _hasher


class UserService:
    """Accounts, password login, sessions and tokens, lockout, TOTP and role grants: each use
    case is a method of one part (one module each), offered here under its own name."""

    def __init__(self, policy: AccountPolicy | None = None, box: SecretBox | None = None) -> None:
        self.policy = policy or AccountPolicy()
        self._box = box or SecretBox.ephemeral()
        self._lockout = Lockout(self.policy)
        self._passwords = Passwords(self.policy, _current_hasher, self._lockout)
        self._totp = Totp(self.policy, self._box, self._lockout)
        self._logins = Logins(self.policy, self._passwords, self._totp)
        self._sessions = Sessions(self.policy)
        self._accounts = Accounts(self.policy, self._passwords)
        self._grants = Grants()
        # what an approved request applies, by kind (masterfiles registers "master_file_qp")
        self.appliers: dict[str, approvals.Applier] = self._grants.appliers

        # accounts
        self.get = get_user
        self.by_username = by_username
        self.read_user = read_user
        self.create_user = self._accounts.create_user
        self.list_users = self._accounts.list_users
        self.describe = self._accounts.describe
        self.deactivate = self._accounts.deactivate
        self.reactivate = self._accounts.reactivate
        # role grants and approval requests
        self.register_applier = self._grants.register_applier
        self.change_roles = self._grants.change_roles
        self.request_grant = self._grants.request_grant
        self.decide_request = self._grants.decide_request
        self.requests = self._grants.requests
        self.requests_get = self._grants.requests_get
        self.pending_for = self._grants.pending_for
        # passwords
        self.hash_password = self._passwords.hash_password
        self.check_password = self._passwords.check_password
        self.password_expired = self._passwords.password_expired
        self.reset_password = self._passwords.reset_password
        self.change_password = self._passwords.change_password
        # failures and lockout
        self.record_failure = self._lockout.record_failure
        self.locked_error = locked_error
        self.alerts = self._lockout.alerts
        self.unlock = self._lockout.unlock
        # login
        self.authenticate = self._logins.authenticate
        self.start_session = self._logins.start_session
        self.issue_token = self._logins.issue_token
        self.complete_totp = self._logins.complete_totp
        # sessions
        self.session_for = self._sessions.session_for
        self.actor_for_token = self._sessions.actor_for_token
        self.logout = self._sessions.logout
        self.sessions = self._sessions.sessions
        # TOTP
        self.enrol_totp = self._totp.enrol_totp
        self.confirm_totp = self._totp.confirm_totp
        self.reset_totp = self._totp.reset_totp
        self.verify_totp = self._totp.verify_totp
        self.totp_step_for = self._totp.totp_step_for


__all__ = ["TOKEN_LIFETIME", "UserService", "_hasher", "actor_of", "user_dict"]
