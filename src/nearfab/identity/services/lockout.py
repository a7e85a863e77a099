"""Failed attempts and lockout: consecutive failures (logins and signatures) lock the account
until an administrator unlocks it, raising a security alert."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from nearfab.common.errors import Conflict, Unauthenticated, require_reason
from nearfab.identity.enums import AuditAction
from nearfab.identity.logic import Actor
from nearfab.identity.models import SecurityAlert, User
from nearfab.identity.permissions import Permission, authorize, visible_sites
from nearfab.identity.services.audit import audit
from nearfab.identity.services.credentials import AccountPolicy
from nearfab.identity.services.directory import anonymous, managed_user
from nearfab.uow import UnitOfWork


def locked_error(user: User) -> Unauthenticated:
    return Unauthenticated(
        f"account {user.username} is locked after repeated failed attempts; an "
        "administrator must unlock it",
        field="username",
        code="account_locked",
    )


class Lockout:
    """Counting failures, locking at the policy's threshold, alerts and unlocking."""

    def __init__(self, policy: AccountPolicy) -> None:
        self.policy = policy

    def record_failure(
        self,
        uow: UnitOfWork,
        user: User | None,
        typed: str,
        *,
        action: AuditAction,
        entity_type: str = "user",
        entity_id: str | None = None,
        why: str,
        actor: Actor | None = None,
        about: dict[str, Any] | None = None,
    ) -> bool:
        """Count a failed login or signature on the account (persisted), audit it and lock the
        account at the threshold (with a security alert). Does not commit. True if this
        failure locked the account."""
        who = actor or anonymous(typed)
        site = user.home_site_id if user else None
        audit(
            uow,
            who,
            action,
            entity_type,
            entity_id or (user.id if user else typed[:48]),
            new={"failed_attempts": (user.failed_attempts + 1) if user else None, **(about or {})},
            reason=why,
            site_id=site,
        )
        if user is None or not user.active or user.locked_at is not None:
            return False
        user.failed_attempts = (user.failed_attempts or 0) + 1
        if user.failed_attempts < self.policy.lockout_after:
            return False
        now = uow.clock.now()
        user.locked_at = now
        message = (
            f"account {user.username} locked after {user.failed_attempts} consecutive failed "
            "log-in or signature attempts"
        )
        uow.session.add(
            SecurityAlert(
                raised_at=now,
                kind="account_locked",
                user_id=user.id,
                username=user.username,
                site_id=site,
                message=message,
            )
        )
        audit(
            uow,
            who,
            AuditAction.LOCK,
            "user",
            user.id,
            old={"locked_at": None},
            new={"locked_at": now, "failed_attempts": user.failed_attempts},
            reason=message,
            site_id=site,
        )
        return True

    def alerts(self, uow: UnitOfWork, actor: Actor, limit: int = 200) -> list[SecurityAlert]:
        authorize(actor, Permission.USERS_READ)
        stmt = select(SecurityAlert).order_by(SecurityAlert.id.desc()).limit(limit)
        sites = visible_sites(actor, Permission.USERS_READ)
        if sites is not None:
            stmt = stmt.where(SecurityAlert.site_id.in_(sites))
        return list(uow.session.scalars(stmt))

    def unlock(self, uow: UnitOfWork, actor: Actor, user_id: str, *, reason: str) -> User:
        user = managed_user(uow, actor, user_id)
        why = require_reason(reason, "unlocking an account")
        if user.locked_at is None:
            raise Conflict(f"{user.username} is not locked", field="user_id")
        old = {"locked_at": user.locked_at, "failed_attempts": user.failed_attempts}
        user.locked_at, user.failed_attempts = None, 0
        audit(
            uow,
            actor,
            AuditAction.UNLOCK,
            "user",
            user.id,
            old=old,
            new={"locked_at": None, "failed_attempts": 0},
            reason=why,
            site_id=user.home_site_id,
        )
        uow.commit()
        return user
