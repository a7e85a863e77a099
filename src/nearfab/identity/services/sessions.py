"""Sessions (web and API): the actor behind a token, idle timeout and absolute lifetime,
logout, and ending a user's sessions. Sessions live in `user_sessions` and can be revoked."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NoReturn

from sqlalchemy import Engine, Row, bindparam, select

from nearfab.common.canonical import sha256_hex
from nearfab.common.errors import Unauthenticated
from nearfab.identity.enums import AuditAction
from nearfab.identity.logic import Actor
from nearfab.identity.models import User, UserSession
from nearfab.identity.services.audit import audit
from nearfab.identity.services.credentials import AccountPolicy
from nearfab.identity.services.directory import actor_from, actor_of, get_user, read_user
from nearfab.identity.services.lockout import locked_error
from nearfab.uow import UnitOfWork

TOKEN_LIFETIME = timedelta(hours=12)  # the default absolute lifetime (AccountPolicy.lifetime)
# last_used_at is written at most this often (an idle timeout counts minutes, not seconds)
_TOUCH_EVERY = timedelta(seconds=60)
# what a request needs of its token, in one statement: the session row and its user's
# current state (built once: the statement is immutable)
_TOKEN_QUERY = (
    select(
        UserSession.id.label("session_id"),
        UserSession.kind,
        UserSession.pending,
        UserSession.ended_at,
        UserSession.expires_at,
        UserSession.last_used_at,
        User.id.label("user_id"),
        User.username,
        User.full_name,
        User.roles,
        User.home_site_id,
        User.active,
        User.locked_at,
    )
    .join(User, User.id == UserSession.user_id)
    .where(UserSession.token_hash == bindparam("token_hash"))
)


def _read_token(uow: UnitOfWork, token_hash: str) -> Row[Any] | None:
    """The token's row of `_TOKEN_QUERY`, read on a pooled connection of its own rather than
    through the unit of work's ORM session (a third of the cost on SQLite, where a request's
    look-up is measured in tenths of a millisecond): what is committed, which is what a
    fresh unit of work sees too. A session bound to one connection (a test's) reads on it."""
    bind = uow.session.get_bind()
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return conn.execute(_TOKEN_QUERY, {"token_hash": token_hash}).first()
    return uow.session.execute(_TOKEN_QUERY, {"token_hash": token_hash}).first()


def end_sessions(uow: UnitOfWork, user_id: str, reason: str, keep: str | None = None) -> int:
    """End every open session of the user but `keep`; how many ended. Does not commit."""
    now = uow.clock.now()
    rows = uow.session.scalars(
        select(UserSession).where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
    )
    ended = 0
    for row in rows:
        if row.id != keep:
            row.ended_at, row.end_reason = now, reason
            ended += 1
    return ended


def session_by_secret(uow: UnitOfWork, secret: str) -> UserSession | None:
    """The session a token or cookie secret opened (only its hash is stored)."""
    return uow.session.scalar(
        select(UserSession).where(UserSession.token_hash == sha256_hex(secret))
    )


class Sessions:
    """Using, expiring, listing and ending sessions."""

    def __init__(self, policy: AccountPolicy) -> None:
        self.policy = policy

    def session_for(self, uow: UnitOfWork, session_id: str) -> UserSession | None:
        return uow.session.get(UserSession, session_id)

    def actor_for_token(self, uow: UnitOfWork, token: str, *, kind: str | None = None) -> Actor:
        """The actor behind a bearer token or web-session secret. Refused: unknown, ended,
        pending its second factor, past its absolute lifetime or idle too long (the session
        then ends, audited), or the user deactivated or locked. Commits the last-use time.

        Every request asks the database (one statement: the session row joined to its user,
        `_TOKEN_QUERY`), so a logout, a revocation, an expiry, a deactivation, a lock or a
        role change made by any process refuses the very next request: nothing is cached
        but the site kinds (`directory._is_control_site`), which never change."""
        found = _read_token(uow, sha256_hex(token))
        now = uow.clock.now()
        if found is None or found.ended_at is not None or (kind and found.kind != kind):
            raise Unauthenticated(
                "bearer token unknown, expired or revoked", code="session_invalid"
            )
        if found.pending is not None:
            raise Unauthenticated("the log-in is not complete", code="totp_required", field="totp")
        if not found.active:
            raise Unauthenticated("the token's user is not active", code="session_invalid")
        if found.locked_at is not None:
            raise locked_error(get_user(uow, found.user_id))
        reason = None
        if found.expires_at <= now:
            reason = "lifetime"
        elif now - found.last_used_at >= self.policy.idle_timeout:
            reason = "idle_timeout"
        if reason is not None:
            self._expire(uow, found.session_id, reason)
        actor = actor_from(
            user_id=found.user_id,
            username=found.username,
            full_name=found.full_name,
            roles=found.roles,
            home_site_id=found.home_site_id,
            session=uow.session,
            session_id=found.session_id,
        )
        if now - found.last_used_at >= _TOUCH_EVERY:
            row = uow.session.get(UserSession, found.session_id)
            assert row is not None  # read a moment ago; sessions are never deleted
            row.last_used_at = now
            uow.commit()
        return actor

    def _expire(self, uow: UnitOfWork, session_id: str, reason: str) -> NoReturn:
        """End a session past its lifetime or idle timeout (audited, committed) and refuse."""
        row = uow.session.get(UserSession, session_id)
        assert row is not None  # read a moment ago; sessions are never deleted
        user = get_user(uow, row.user_id)
        now = uow.clock.now()
        row.ended_at, row.end_reason = now, reason
        audit(
            uow,
            actor_of(user, uow.session, row.id),
            AuditAction.SESSION_EXPIRED,
            "user",
            user.id,
            new={"session_id": row.id, "reason": reason},
            site_id=user.home_site_id,
        )
        uow.commit()
        raise Unauthenticated(
            "the session expired"
            + (
                f" after {int(self.policy.idle_timeout.total_seconds() // 60)} minutes idle"
                if reason == "idle_timeout"
                else ""
            )
            + "; log in again",
            code="session_expired",
        )

    def logout(self, uow: UnitOfWork, token: str) -> UserSession | None:
        """End the session behind a token or cookie secret (audited); None if there is none."""
        row = session_by_secret(uow, token)
        if row is None or row.ended_at is not None:
            return None
        row.ended_at, row.end_reason = uow.clock.now(), "logout"
        user = get_user(uow, row.user_id)
        audit(
            uow,
            actor_of(user, uow.session, row.id),
            AuditAction.LOGOUT,
            "user",
            user.id,
            new={"session_id": row.id, "kind": row.kind},
            site_id=user.home_site_id,
        )
        uow.commit()
        return row

    def sessions(self, uow: UnitOfWork, actor: Actor, user_id: str) -> list[UserSession]:
        user = read_user(uow, actor, user_id)
        return list(
            uow.session.scalars(
                select(UserSession)
                .where(UserSession.user_id == user.id)
                .order_by(UserSession.created_at.desc())
            )
        )
