"""Accounts, password login and bearer tokens."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from nearfab.common.canonical import sha256_hex
from nearfab.common.errors import Conflict, NotFound, Unauthenticated, ValidationFailed
from nearfab.common.ids import new_id, new_token
from nearfab.identity.enums import AuditAction, Role
from nearfab.identity.logic import Actor
from nearfab.identity.models import ApiToken, User
from nearfab.identity.permissions import Permission, authorize
from nearfab.identity.services.audit import audit
from nearfab.uow import UnitOfWork

_hasher = PasswordHasher()
TOKEN_LIFETIME = timedelta(hours=12)


def actor_of(user: User, session: Session) -> Actor:
    """The actor a user acts as. A user with no home site, or based at the control site,
    sees the network; anyone else sees their own site (identity/permissions.py)."""
    return Actor(
        user_id=user.id,
        username=user.username,
        full_name=user.full_name,
        roles=tuple(user.roles),
        site_id=user.home_site_id,
        network=_is_control_site(session, user.home_site_id),
    )


def _is_control_site(session: Session, site_id: str | None) -> bool:
    if site_id is None:
        return True
    # identity sits below network in the layers, so it reads the site's kind by name only
    kind = session.execute(
        text("SELECT kind FROM sites WHERE id = :id"), {"id": site_id}
    ).scalar_one_or_none()
    return kind == "control"


class UserService:
    """Accounts, password login and bearer tokens."""

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
    ) -> User:
        authorize(actor, Permission.USERS_MANAGE)
        role_list = sorted({str(r) for r in roles})
        known = {r.value for r in Role}
        for role in role_list:
            if role not in known:
                raise ValidationFailed(f"unknown role {role!r}", field="roles")
        if not username.strip():
            raise ValidationFailed("username is empty", field="username")
        if len(username) > 64:
            raise ValidationFailed("username has more than 64 characters", field="username")
        if len(password) < 8:
            raise ValidationFailed("password must have at least 8 characters", field="password")
        if uow.session.scalar(select(User).where(User.username == username)):
            raise Conflict(f"username {username!r} is taken", field="username")
        user = User(
            id=new_id("usr"),
            username=username,
            full_name=full_name,
            roles=role_list,
            home_site_id=home_site_id,
            password_hash=_hasher.hash(password),
            active=True,
            created_at=uow.clock.now(),
        )
        uow.session.add(user)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "user",
            user.id,
            new={
                "username": username,
                "full_name": full_name,
                "roles": role_list,
                "home_site_id": home_site_id,
            },
            site_id=home_site_id,
        )
        uow.commit()
        return user

    def get(self, uow: UnitOfWork, user_id: str) -> User:
        user = uow.session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user {user_id!r}", field="user_id")
        return user

    def by_username(self, uow: UnitOfWork, username: str) -> User | None:
        return uow.session.scalar(select(User).where(User.username == username))

    def check_password(self, user: User, password: str) -> bool:
        try:
            return _hasher.verify(user.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def _login(self, uow: UnitOfWork, username: str, password: str) -> User:
        """Check credentials and add the audit row; a failure is committed, then raised."""
        user = self.by_username(uow, username)
        if user is None or not user.active or not self.check_password(user, password):
            shown = username[:48]  # whatever was typed, cut to fit the audit columns
            anon = Actor(user_id=f"unknown:{shown}", username=shown, full_name=shown)
            audit(uow, anon, AuditAction.LOGIN_FAILED, "user", user.id if user else shown)
            uow.commit()
            raise Unauthenticated("wrong username or password")
        audit(uow, actor_of(user, uow.session), AuditAction.LOGIN, "user", user.id)
        return user

    def authenticate(self, uow: UnitOfWork, username: str, password: str) -> User:
        """Check a username and password; a failure is audited and does not say which was wrong."""
        user = self._login(uow, username, password)
        uow.commit()
        return user

    def issue_token(self, uow: UnitOfWork, username: str, password: str) -> tuple[str, User]:
        """Log in and hand out a bearer token (only its hash is stored)."""
        user = self._login(uow, username, password)
        token = new_token()
        now = uow.clock.now()
        uow.session.add(
            ApiToken(
                token_hash=sha256_hex(token),
                user_id=user.id,
                created_at=now,
                expires_at=now + TOKEN_LIFETIME,
            )
        )
        uow.commit()
        return token, user

    def actor_for_token(self, uow: UnitOfWork, token: str) -> Actor:
        row = uow.session.get(ApiToken, sha256_hex(token))
        if row is None or row.expires_at <= uow.clock.now():
            raise Unauthenticated("bearer token unknown or expired")
        user = uow.session.get(User, row.user_id)
        if user is None or not user.active:
            raise Unauthenticated("the token's user is not active")
        return actor_of(user, uow.session)
