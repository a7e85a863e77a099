"""Accounts: creating, listing, showing, deactivating and reactivating. Users are never
deleted: ids and usernames are never reused."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from nearfab.common.errors import Conflict, Refused, ValidationFailed, require_reason
from nearfab.common.ids import new_id
from nearfab.identity.enums import AuditAction
from nearfab.identity.logic import Actor
from nearfab.identity.models import User
from nearfab.identity.permissions import Permission, authorize, visible_sites
from nearfab.identity.services import approvals
from nearfab.identity.services.audit import audit
from nearfab.identity.services.credentials import AccountPolicy
from nearfab.identity.services.directory import known_roles, managed_user
from nearfab.identity.services.grants import bootstrap_note, check_reach, split_grants
from nearfab.identity.services.passwords import Passwords
from nearfab.identity.services.sessions import end_sessions
from nearfab.uow import UnitOfWork


def user_dict(user: User, now: datetime, policy: AccountPolicy) -> dict[str, Any]:
    """What the API, CLI and pages show of an account (never a hash or a secret)."""
    changed = user.password_changed_at or user.created_at
    return {
        "id": user.id,
        "username": user.username,
        "full_name": user.full_name,
        "roles": list(user.roles),
        "home_site_id": user.home_site_id,
        "active": user.active,
        "locked": user.locked_at is not None,
        "locked_at": user.locked_at,
        "failed_attempts": user.failed_attempts,
        "created_at": user.created_at,
        "password_changed_at": changed,
        "password_expires_at": changed + policy.max_age,
        "must_change_password": user.must_change_password,
        "totp_enabled": user.totp_enabled_at is not None,
    }


class Accounts:
    def __init__(self, policy: AccountPolicy, passwords: Passwords) -> None:
        self.policy = policy
        self._passwords = passwords

    def create_user(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        username: str,
        full_name: str,
        roles: Iterable[str],
        password: str,
        home_site_id: str | None = None,
        temporary: bool | None = None,
    ) -> User:
        """A new account. A password set by a person (an administrator) is temporary: it must
        be changed at the first login. Usernames are unique forever, ignoring case."""
        # an account of no site is a network account: only a network administrator makes one
        authorize(actor, Permission.USERS_MANAGE, site_id=home_site_id)
        role_list = known_roles(roles)
        approvals.check_role_mix(role_list)
        check_reach(actor, role_list, field="roles")
        held, requested = split_grants(uow, actor, role_list)
        if not username.strip():
            raise ValidationFailed("username is empty", field="username")
        if len(username) > 64:
            raise ValidationFailed("username has more than 64 characters", field="username")
        if username != username.strip() or any(c.isspace() for c in username):
            raise ValidationFailed("username must not contain spaces", field="username")
        if not full_name.strip():
            raise ValidationFailed("full name is empty", field="full_name")
        taken = uow.session.scalar(
            select(User.id).where(func.lower(User.username) == username.lower())
        )
        if taken:
            # accounts are never deleted, so a username (even a deactivated one's) is never reused
            raise Conflict(f"username {username!r} is taken", field="username")
        password = self._passwords.check_new_password(uow, None, username, password)
        user = User(
            id=new_id("usr"),
            username=username,
            full_name=full_name.strip(),
            roles=held,
            home_site_id=home_site_id,
            password_hash="",
            active=True,
            created_at=uow.clock.now(),
            failed_attempts=0,
        )
        uow.session.add(user)
        uow.session.flush()
        temp = "system" not in actor.roles if temporary is None else temporary
        self._passwords.set_password(uow, user, password, temporary=temp)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "user",
            user.id,
            new={
                "username": username,
                "full_name": user.full_name,
                "roles": held,
                "home_site_id": home_site_id,
                "temporary_password": temp,
                **bootstrap_note(actor, held),
            },
            site_id=home_site_id,
        )
        for role in requested:
            approvals.file_request(
                uow,
                actor,
                approvals.ROLE_GRANT,
                user,
                role=role,
                reason=f"new account {username} to hold {role}",
            )
        uow.commit()
        return user

    def list_users(self, uow: UnitOfWork, actor: Actor) -> list[User]:
        authorize(actor, Permission.USERS_READ)
        stmt = select(User).order_by(User.username)
        sites = visible_sites(actor, Permission.USERS_READ)
        if sites is not None:
            stmt = stmt.where(User.home_site_id.in_(sites))
        return list(uow.session.scalars(stmt))

    def describe(self, user: User, now: datetime) -> dict[str, Any]:
        return user_dict(user, now, self.policy)

    def deactivate(self, uow: UnitOfWork, actor: Actor, user_id: str, *, reason: str) -> User:
        """The account can no longer log in, use a token or sign; its sessions end. Nothing
        is deleted."""
        user = managed_user(uow, actor, user_id)
        why = require_reason(reason, "deactivating an account")
        if user.id == actor.user_id:
            raise Refused("you cannot deactivate your own account", field="user_id", code="self")
        if not user.active:
            raise Conflict(f"{user.username} is already deactivated", field="user_id")
        user.active = False
        end_sessions(uow, user.id, "deactivated")
        audit(
            uow,
            actor,
            AuditAction.DEACTIVATE,
            "user",
            user.id,
            old={"active": True},
            new={"active": False},
            reason=why,
            site_id=user.home_site_id,
        )
        uow.commit()
        return user

    def reactivate(self, uow: UnitOfWork, actor: Actor, user_id: str, *, reason: str) -> User:
        user = managed_user(uow, actor, user_id)
        why = require_reason(reason, "reactivating an account")
        if user.active:
            raise Conflict(f"{user.username} is active", field="user_id")
        user.active = True
        audit(
            uow,
            actor,
            AuditAction.REACTIVATE,
            "user",
            user.id,
            old={"active": False},
            new={"active": True},
            reason=why,
            site_id=user.home_site_id,
        )
        uow.commit()
        return user
