"""Logging in: password, password age and the TOTP code, then a session (web or API, with a
web session pending its second factor when the code is asked for on a second page)."""

from __future__ import annotations

from nearfab.common.canonical import sha256_hex
from nearfab.common.errors import DomainError, Forbidden, Unauthenticated
from nearfab.common.ids import new_id, new_token
from nearfab.identity.enums import AuditAction
from nearfab.identity.models import User, UserSession
from nearfab.identity.services.audit import audit
from nearfab.identity.services.credentials import AccountPolicy
from nearfab.identity.services.directory import actor_of, anonymous, get_user
from nearfab.identity.services.lockout import locked_error
from nearfab.identity.services.passwords import Passwords
from nearfab.identity.services.sessions import session_by_secret
from nearfab.identity.services.totp import Totp
from nearfab.uow import UnitOfWork


class Logins:
    def __init__(self, policy: AccountPolicy, passwords: Passwords, totp: Totp) -> None:
        self.policy = policy
        self._passwords = passwords
        self._totp = totp

    def _refuse_login(self, uow: UnitOfWork, user: User, exc: DomainError) -> None:
        """A right password that still cannot log in (password expired or temporary): on
        record, then raised. The failure count is reset: the password was right."""
        user.failed_attempts = 0
        audit(
            uow,
            anonymous(user.username),
            AuditAction.LOGIN_FAILED,
            "user",
            user.id,
            new={"code": exc.code},
            reason=exc.message,
            site_id=user.home_site_id,
        )
        uow.commit()
        raise exc

    def _login(self, uow: UnitOfWork, username: str, password: str, totp: str | None) -> User:
        """Check password, password age and (when enrolled) the TOTP code. Does not commit
        success; every failure is committed, then raised."""
        user = self._passwords.verify_password(uow, username, password)
        now = uow.clock.now()
        if user.must_change_password:
            self._refuse_login(
                uow,
                user,
                Forbidden(
                    "your password was set by an administrator: choose your own before logging in",
                    field="password",
                    code="password_expired",
                ),
            )
        if self._passwords.password_expired(user, now):
            self._refuse_login(
                uow,
                user,
                Forbidden(
                    f"your password is older than {self.policy.max_age.days} days: change it",
                    field="password",
                    code="password_expired",
                ),
            )
        if user.totp_enabled_at is not None and totp is not None:
            self._totp.verify_totp(uow, user, totp, action=AuditAction.LOGIN_FAILED)
        user.failed_attempts = 0
        return user

    def authenticate(
        self, uow: UnitOfWork, username: str, password: str, *, totp: str | None = None
    ) -> User:
        """Check a username, password and (when the user enrolled) TOTP code; audited."""
        user = self._login(uow, username, password, totp)
        if user.totp_enabled_at is not None and totp is None:
            uow.commit()  # the failure count reset
            raise Unauthenticated(
                "this account needs its authenticator code", field="totp", code="totp_required"
            )
        audit(uow, actor_of(user, uow.session), AuditAction.LOGIN, "user", user.id)
        uow.commit()
        return user

    def start_session(
        self,
        uow: UnitOfWork,
        username: str,
        password: str,
        *,
        kind: str = "api",
        totp: str | None = None,
        client: str | None = None,
    ) -> tuple[str, User, UserSession]:
        """Log in and open a session (kind "web" or "api"); returns its secret (only the hash
        is stored). A web login of a TOTP user without a code opens a session pending the
        second factor (`complete_totp`); an API login must give the code at once."""
        user = self._login(uow, username, password, totp)
        pending = None
        if user.totp_enabled_at is not None and totp is None:
            if kind != "web":
                uow.commit()
                raise Unauthenticated(
                    "this account needs its authenticator code", field="totp", code="totp_required"
                )
            pending = "totp"
        secret = new_token()
        now = uow.clock.now()
        row = UserSession(
            id=new_id("ses"),
            token_hash=sha256_hex(secret),
            kind=kind,
            user_id=user.id,
            created_at=now,
            last_used_at=now,
            expires_at=now + (self.policy.totp_step_timeout if pending else self.policy.lifetime),
            pending=pending,
            client=(client or "")[:64] or None,
        )
        uow.session.add(row)
        if pending is None:
            audit(
                uow,
                actor_of(user, uow.session, row.id),
                AuditAction.LOGIN,
                "user",
                user.id,
                new={"session_id": row.id, "kind": kind},
                site_id=user.home_site_id,
            )
        uow.commit()
        return secret, user, row

    def issue_token(
        self,
        uow: UnitOfWork,
        username: str,
        password: str,
        *,
        totp: str | None = None,
        client: str | None = None,
    ) -> tuple[str, User]:
        """Log in and hand out a bearer token (an API session)."""
        token, user, _row = self.start_session(
            uow, username, password, kind="api", totp=totp, client=client
        )
        return token, user

    def complete_totp(self, uow: UnitOfWork, secret: str, code: str) -> tuple[User, UserSession]:
        """Second step of a web login: the TOTP code turns the pending session into a full one
        (with a fresh lifetime). A wrong code counts as a failed attempt."""
        row = session_by_secret(uow, secret)
        now = uow.clock.now()
        if (
            row is None
            or row.pending != "totp"
            or row.ended_at is not None
            or row.expires_at <= now
        ):
            raise Unauthenticated("the log-in expired; start again", code="session_expired")
        user = get_user(uow, row.user_id)
        if not user.active:
            raise Unauthenticated("wrong username or password")
        if user.locked_at is not None:
            raise locked_error(user)
        self._totp.verify_totp(uow, user, code, action=AuditAction.LOGIN_FAILED)
        user.failed_attempts = 0
        row.pending, row.last_used_at, row.expires_at = None, now, now + self.policy.lifetime
        audit(
            uow,
            actor_of(user, uow.session, row.id),
            AuditAction.LOGIN,
            "user",
            user.id,
            new={"session_id": row.id, "kind": row.kind, "totp": True},
            site_id=user.home_site_id,
        )
        uow.commit()
        return user, row
