"""TOTP, the second factor: enrolment by the user, reset by an administrator, and checking a
code (each time step accepted once; a wrong code counts toward the lockout)."""

from __future__ import annotations

from datetime import datetime

from nearfab.common.errors import Conflict, Unauthenticated, ValidationFailed, require_reason
from nearfab.identity.enums import AuditAction
from nearfab.identity.logic import Actor
from nearfab.identity.models import User
from nearfab.identity.permissions import Permission, authorize
from nearfab.identity.services.audit import audit
from nearfab.identity.services.credentials import (
    AccountPolicy,
    SecretBox,
    new_totp_secret,
    totp_step,
    totp_uri,
)
from nearfab.identity.services.directory import get_user, managed_user
from nearfab.identity.services.lockout import Lockout, locked_error
from nearfab.uow import UnitOfWork


class Totp:
    """TOTP secrets are stored sealed by `box`."""

    def __init__(self, policy: AccountPolicy, box: SecretBox, lockout: Lockout) -> None:
        self.policy = policy
        self._box = box
        self._lockout = lockout

    def enrol_totp(self, uow: UnitOfWork, actor: Actor) -> tuple[str, str]:
        """Start TOTP enrolment for oneself: a new secret (stored encrypted) and its otpauth
        URI, shown this once. Login asks for codes only after `confirm_totp`."""
        authorize(actor, Permission.PROFILE_READ)
        user = get_user(uow, actor.user_id)
        if user.totp_enabled_at is not None:
            raise Conflict(
                "TOTP is already enabled; an administrator must reset it first", field="totp"
            )
        secret = new_totp_secret()
        user.totp_secret, user.totp_last_step = self._box.seal(secret), None
        audit(uow, actor, AuditAction.TOTP_ENROL, "user", user.id, site_id=user.home_site_id)
        uow.commit()
        return secret, totp_uri(secret, user.username, self.policy.totp_issuer)

    def confirm_totp(self, uow: UnitOfWork, actor: Actor, code: str) -> User:
        """Finish enrolment with a code from the device; from now on login asks for one."""
        authorize(actor, Permission.PROFILE_READ)
        user = get_user(uow, actor.user_id)
        if user.totp_secret is None:
            raise Conflict("start TOTP enrolment first", field="totp")
        if user.totp_enabled_at is not None:
            raise Conflict("TOTP is already enabled", field="totp")
        secret = self._box.open(user.totp_secret)
        step = totp_step(secret, code, uow.clock.now(), None) if secret else None
        if step is None:
            raise ValidationFailed(
                "the code does not match; try the next one", field="totp", code="totp_invalid"
            )
        user.totp_enabled_at, user.totp_last_step = uow.clock.now(), step
        audit(uow, actor, AuditAction.TOTP_ENABLE, "user", user.id, site_id=user.home_site_id)
        uow.commit()
        return user

    def reset_totp(self, uow: UnitOfWork, actor: Actor, user_id: str, *, reason: str) -> User:
        """An administrator removes a user's TOTP (lost device); the user enrols again."""
        user = managed_user(uow, actor, user_id)
        why = require_reason(reason, "resetting TOTP")
        user.totp_secret, user.totp_enabled_at, user.totp_last_step = None, None, None
        audit(
            uow,
            actor,
            AuditAction.TOTP_RESET,
            "user",
            user.id,
            reason=why,
            site_id=user.home_site_id,
        )
        uow.commit()
        return user

    def verify_totp(
        self,
        uow: UnitOfWork,
        user: User,
        code: str,
        *,
        action: AuditAction,
        entity_type: str = "user",
        entity_id: str | None = None,
        actor: Actor | None = None,
    ) -> None:
        """Accept a code once, or count a failure (committed) and raise `totp_invalid`."""
        step = self.totp_step_for(user, code, uow.clock.now())
        if step is None:
            locked = self._lockout.record_failure(
                uow,
                user,
                user.username,
                action=action,
                entity_type=entity_type,
                entity_id=entity_id,
                why="wrong authenticator code",
                actor=actor,
            )
            uow.session.commit()
            if locked:
                raise locked_error(user)
            raise Unauthenticated(
                "the authenticator code does not match", field="totp", code="totp_invalid"
            )
        user.totp_last_step = step

    def totp_step_for(self, user: User, code: str, now: datetime) -> int | None:
        """The unused time step `code` is valid for, or None (no side effects)."""
        secret = self._box.open(user.totp_secret) if user.totp_secret else None
        if secret is None or user.totp_enabled_at is None:
            return None
        return totp_step(secret, code, now, user.totp_last_step)
