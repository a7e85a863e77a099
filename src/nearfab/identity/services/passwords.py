"""Passwords: hashing (argon2id), the rules and history of `AccountPolicy`, age, proving one
at login (a wrong one counts toward the lockout), a temporary one set by an administrator, and
a user changing their own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from nearfab.common.errors import Unauthenticated, ValidationFailed, require_reason
from nearfab.identity.enums import AuditAction
from nearfab.identity.logic import Actor
from nearfab.identity.models import PasswordHistory, User
from nearfab.identity.services.audit import audit
from nearfab.identity.services.credentials import (
    AccountPolicy,
    check_password_rules,
    normalise_password,
)
from nearfab.identity.services.directory import actor_of, by_username, managed_user
from nearfab.identity.services.lockout import Lockout, locked_error
from nearfab.identity.services.sessions import end_sessions
from nearfab.uow import UnitOfWork


class Passwords:
    """`hasher` is asked for the hasher at each use (users.py's `_hasher`, whose cost the
    tests lower)."""

    def __init__(
        self, policy: AccountPolicy, hasher: Callable[[], PasswordHasher], lockout: Lockout
    ) -> None:
        self.policy = policy
        self._hasher = hasher
        self._lockout = lockout

    def hash_password(self, password: str) -> str:
        return self._hasher().hash(normalise_password(password))

    def check_password(self, user: User, password: str) -> bool:
        """The password (NFKC-normalised, as it was hashed) matches. A password longer than
        the policy allows is wrong without being hashed (no work for a 1 MB guess)."""
        if len(password) > self.policy.max_length:
            return False
        normal = normalise_password(password)
        hasher = self._hasher()
        # hashes made before normalisation was introduced hold the password as typed
        for candidate in dict.fromkeys((normal, password)):
            try:
                if hasher.verify(user.password_hash, candidate):
                    return True
            except (VerificationError, InvalidHashError):
                continue
        return False

    def check_new_password(
        self, uow: UnitOfWork, user: User | None, username: str, password: str
    ) -> str:
        """The normalised new password, once it passes the rules and the history."""
        pw = check_password_rules(self.policy, username, password)
        if user is None:
            return pw
        recent = uow.session.scalars(
            select(PasswordHistory.password_hash)
            .where(PasswordHistory.user_id == user.id)
            .order_by(PasswordHistory.id.desc())
            .limit(self.policy.history)
        )
        hasher = self._hasher()
        for old_hash in [user.password_hash, *recent]:
            try:
                if hasher.verify(old_hash, pw):
                    raise ValidationFailed(
                        f"password must differ from your last {self.policy.history} passwords",
                        field="password",
                        code="password_reused",
                    )
            except (VerificationError, InvalidHashError):
                continue
        return pw

    def set_password(self, uow: UnitOfWork, user: User, password: str, *, temporary: bool) -> None:
        now = uow.clock.now()
        user.password_hash = self._hasher().hash(password)
        user.password_changed_at = now
        user.must_change_password = temporary
        uow.session.add(
            PasswordHistory(user_id=user.id, password_hash=user.password_hash, set_at=now)
        )

    def password_expired(self, user: User, now: datetime) -> bool:
        changed = user.password_changed_at or user.created_at
        return now >= changed + self.policy.max_age

    def verify_password(self, uow: UnitOfWork, username: str, password: str) -> User:
        """The user behind a username and password, or a committed failure record and
        Unauthenticated (the same words for an unknown user, a wrong password and a
        deactivated account; a locked account says so)."""
        user = by_username(uow, username)
        if user is not None and user.active and user.locked_at is not None:
            self._lockout.record_failure(
                uow, user, username, action=AuditAction.LOGIN_FAILED, why="account locked"
            )
            uow.commit()
            raise locked_error(user)
        if user is None or not user.active or not self.check_password(user, password):
            why = (
                "unknown user"
                if user is None
                else ("account deactivated" if not user.active else "wrong password")
            )
            locked = self._lockout.record_failure(
                uow, user, username, action=AuditAction.LOGIN_FAILED, why=why
            )
            uow.commit()
            if locked and user is not None:
                raise locked_error(user)
            raise Unauthenticated("wrong username or password")
        return user

    def reset_password(
        self, uow: UnitOfWork, actor: Actor, user_id: str, *, password: str, reason: str
    ) -> User:
        """An administrator sets a temporary password (changed at the next login); the user's
        sessions end."""
        user = managed_user(uow, actor, user_id)
        why = require_reason(reason, "setting a password")
        password = self.check_new_password(uow, user, user.username, password)
        self.set_password(uow, user, password, temporary=True)
        end_sessions(uow, user.id, "password_reset")
        audit(
            uow,
            actor,
            AuditAction.PASSWORD_RESET,
            "user",
            user.id,
            new={"temporary": True},
            reason=why,
            site_id=user.home_site_id,
        )
        uow.commit()
        return user

    def change_password(
        self,
        uow: UnitOfWork,
        username: str,
        current: str,
        new: str,
        *,
        keep_session: str | None = None,
    ) -> User:
        """The user changes their own password, proving the current one (also when it has
        expired or is temporary). A wrong current password counts as a failed login. Every
        other session of the user ends."""
        user = self.verify_password(uow, username, current)
        new = self.check_new_password(uow, user, user.username, new)
        self.set_password(uow, user, new, temporary=False)
        end_sessions(uow, user.id, "password_changed", keep=keep_session)
        audit(
            uow,
            actor_of(user, uow.session),
            AuditAction.PASSWORD_CHANGE,
            "user",
            user.id,
            site_id=user.home_site_id,
        )
        uow.commit()
        return user
