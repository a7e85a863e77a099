"""Identity use cases: users, login and tokens, the audit trail, electronic signatures."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, NoReturn

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from nearfab.common.canonical import sha256_hex, to_jsonable
from nearfab.common.clock import Clock
from nearfab.common.errors import (
    Conflict,
    DomainError,
    NotFound,
    Unauthenticated,
    ValidationFailed,
)
from nearfab.common.ids import new_id, new_token
from nearfab.common.states import S, check_transition
from nearfab.identity.enums import AuditAction, Role
from nearfab.identity.logic import Actor, record_hash, require_role
from nearfab.identity.models import ApiToken, AuditEntry, PlatformKey, Signature, User
from nearfab.uow import UnitOfWork

_hasher = PasswordHasher()
TOKEN_LIFETIME = timedelta(hours=12)


def audit(
    uow: UnitOfWork,
    actor: Actor,
    action: AuditAction | str,
    entity_type: str,
    entity_id: str,
    *,
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
    reason: str | None = None,
    site_id: str | None = None,
) -> AuditEntry:
    """Add an audit row to the current transaction: it commits or rolls back with the change."""
    entry = AuditEntry(
        at=uow.clock.now(),
        actor_id=actor.user_id,
        actor_name=actor.full_name,
        action=str(action),
        entity_type=entity_type,
        entity_id=entity_id,
        old=to_jsonable(old) if old is not None else None,
        new=to_jsonable(new) if new is not None else None,
        reason=reason,
        site_id=site_id,
    )
    uow.session.add(entry)
    return entry


def audited_transition(
    uow: UnitOfWork,
    actor: Actor,
    record: Any,
    target: S,
    allowed: Mapping[S, frozenset[S]],
    *,
    entity_type: str,
    label: str,
    reason: str | None,
    site_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> S:
    """Move `record.status` to `target` if `allowed` says so, with its audit row in the same
    transaction; an illegal move raises InvalidTransition and writes nothing. Returns the old
    state."""
    current = type(target)(record.status)
    check_transition(label, current, target, allowed)
    record.status = target.value
    audit(
        uow,
        actor,
        AuditAction.TRANSITION,
        entity_type,
        record.id,
        old={"status": current.value},
        new={"status": target.value, **(extra or {})},
        reason=reason,
        site_id=site_id,
    )
    return current


def refuse(
    uow: UnitOfWork,
    actor: Actor,
    exc: DomainError,
    entity_type: str,
    entity_id: str,
    *,
    site_id: str | None = None,
) -> NoReturn:
    """Undo the attempted change but keep a committed record of the refusal, then raise it."""
    uow.session.rollback()
    audit(
        uow,
        actor,
        AuditAction.REFUSE,
        entity_type,
        entity_id[:64],
        new={"code": exc.code, "field": exc.field},
        reason=exc.message,
        site_id=site_id,
    )
    uow.commit()
    raise exc


def audit_trail(uow: UnitOfWork, entity_type: str, entity_id: str) -> list[AuditEntry]:
    stmt = (
        select(AuditEntry)
        .where(AuditEntry.entity_type == entity_type, AuditEntry.entity_id == entity_id)
        .order_by(AuditEntry.id)
    )
    return list(uow.session.scalars(stmt))


def actor_of(user: User) -> Actor:
    return Actor(
        user_id=user.id,
        username=user.username,
        full_name=user.full_name,
        roles=tuple(user.roles),
        site_id=user.home_site_id,
    )


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
        require_role(actor, Role.ADMIN, action="creating a user")
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
        audit(uow, actor_of(user), AuditAction.LOGIN, "user", user.id)
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
        return actor_of(user)


class SignatureService:
    """E-signatures: password re-entry plus a stated meaning, bound to the record's hash."""

    def __init__(self, users: UserService) -> None:
        self._users = users

    def sign(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        password: str,
        meaning: str,
        record_type: str,
        record_id: str,
        content: dict[str, Any],
    ) -> Signature:
        """Add a signature to the current transaction; the caller commits it with the change."""
        if not meaning or not meaning.strip():
            raise ValidationFailed("a signature needs its meaning", field="meaning")
        user = uow.session.get(User, actor.user_id)
        if user is None or not user.active or not self._users.check_password(user, password):
            raise Unauthenticated("signature refused: the password does not match the signer")
        sig = Signature(
            id=new_id("sig"),
            signer_id=user.id,
            signer_name=user.full_name,
            meaning=meaning.strip(),
            signed_at=uow.clock.now(),
            record_type=record_type,
            record_id=record_id,
            record_hash=record_hash(content),
        )
        uow.session.add(sig)
        audit(
            uow,
            actor,
            AuditAction.SIGN,
            record_type,
            record_id,
            new={"signature_id": sig.id, "meaning": sig.meaning, "record_hash": sig.record_hash},
        )
        return sig

    def signatures_for(self, uow: UnitOfWork, record_type: str, record_id: str) -> list[Signature]:
        stmt = (
            select(Signature)
            .where(Signature.record_type == record_type, Signature.record_id == record_id)
            .order_by(Signature.signed_at)
        )
        return list(uow.session.scalars(stmt))

    @staticmethod
    def is_valid(sig: Signature, content: dict[str, Any]) -> bool:
        """True while the record still hashes to what was signed."""
        return sig.record_hash == record_hash(content)


class KeyMismatch(RuntimeError):
    """This worker's keys are not the ones the database was started with."""


def check_platform_keys(
    session_factory: sessionmaker[Any], clock: Clock, fingerprints: Mapping[str, str]
) -> None:
    """Every worker on one database must hold the same keys: the first start records their
    fingerprints (audited); a later start with other keys is refused before it signs or
    encrypts anything."""
    for _attempt in range(2):  # two first starts at once: the loser re-reads and compares
        with session_factory() as session:
            for name, fingerprint in fingerprints.items():
                row = session.get(PlatformKey, name)
                if row is None:
                    now = clock.now()
                    session.add(PlatformKey(name=name, fingerprint=fingerprint, created_at=now))
                    session.add(
                        AuditEntry(
                            at=now,
                            actor_id="system:bootstrap",
                            actor_name="nearfab bootstrap",
                            action=AuditAction.CREATE.value,
                            entity_type="platform_key",
                            entity_id=name,
                            old=None,
                            new={"fingerprint": fingerprint},
                            reason="first start on this database",
                            site_id=None,
                        )
                    )
                elif row.fingerprint != fingerprint:
                    raise KeyMismatch(
                        f"key {name!r} in this data folder ({fingerprint}) is not the one this "
                        f"database was started with ({row.fingerprint}); copy the keys/ folder "
                        "from the first installation"
                    )
            try:
                session.commit()
                return
            except IntegrityError:
                session.rollback()
    raise KeyMismatch("the platform keys could not be registered; try again")
