"""Accounts, password login, sessions (web and API), lockout, TOTP and role grants.

The rules are in docs/accounts-and-signatures.md. In short: users are never deleted (ids and
usernames are never reused); passwords follow `AccountPolicy`, age, and are temporary when an
administrator set them; consecutive failures (logins and signatures) lock the account until an
administrator unlocks it, raising a security alert; sessions live in `user_sessions` and can
be revoked, with an idle timeout and an absolute lifetime."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from nearfab.common.canonical import sha256_hex
from nearfab.common.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    Refused,
    Unauthenticated,
    ValidationFailed,
    require_reason,
)
from nearfab.common.ids import new_id, new_token
from nearfab.identity.enums import AuditAction, Role
from nearfab.identity.logic import Actor
from nearfab.identity.models import (
    ApprovalRequest,
    PasswordHistory,
    SecurityAlert,
    User,
    UserSession,
)
from nearfab.identity.permissions import Permission, authorize, is_network_wide, visible_sites
from nearfab.identity.services import approvals
from nearfab.identity.services.audit import audit
from nearfab.identity.services.credentials import (
    AccountPolicy,
    SecretBox,
    check_password_rules,
    new_totp_secret,
    normalise_password,
    totp_step,
    totp_uri,
)
from nearfab.uow import UnitOfWork

_hasher = PasswordHasher()
TOKEN_LIFETIME = timedelta(hours=12)  # the default absolute lifetime (AccountPolicy.lifetime)
# last_used_at is written at most this often (an idle timeout counts minutes, not seconds)
_TOUCH_EVERY = timedelta(seconds=60)


def actor_of(user: User, session: Session, session_id: str | None = None) -> Actor:
    """The actor a user acts as. A user with no home site, or based at the control site,
    sees the network; anyone else sees their own site (identity/permissions.py)."""
    return Actor(
        user_id=user.id,
        username=user.username,
        full_name=user.full_name,
        roles=tuple(user.roles),
        site_id=user.home_site_id,
        network=_is_control_site(session, user.home_site_id),
        session_id=session_id,
    )


# site id -> is it the control site; a site's kind is fixed when it is created and ids are
# never reused, so every request after the first skips the query
_CONTROL_SITES: dict[str, bool] = {}


def _is_control_site(session: Session, site_id: str | None) -> bool:
    if site_id is None:
        return True
    known = _CONTROL_SITES.get(site_id)
    if known is not None:
        return known
    # identity sits below network in the layers, so it reads the site's kind by name only
    kind = session.execute(
        text("SELECT kind FROM sites WHERE id = :id"), {"id": site_id}
    ).scalar_one_or_none()
    if kind is not None:
        _CONTROL_SITES[site_id] = kind == "control"
    return kind == "control"


def _anonymous(username: str) -> Actor:
    shown = username[:48]  # whatever was typed, cut to fit the audit columns
    return Actor(user_id=f"unknown:{shown}", username=shown, full_name=shown)


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


class UserService:
    """Accounts, password login, sessions and tokens, lockout, TOTP and role grants."""

    def __init__(self, policy: AccountPolicy | None = None, box: SecretBox | None = None) -> None:
        self.policy = policy or AccountPolicy()
        self._box = box or SecretBox.ephemeral()
        # what an approved request applies, by kind (masterfiles registers "master_file_qp")
        self.appliers: dict[str, approvals.Applier] = {approvals.ROLE_GRANT: self._apply_grant}

    def register_applier(self, kind: str, applier: approvals.Applier) -> None:
        self.appliers[kind] = applier

    # --- passwords ------------------------------------------------------------------------
    def hash_password(self, password: str) -> str:
        return _hasher.hash(normalise_password(password))

    def check_password(self, user: User, password: str) -> bool:
        """The password (NFKC-normalised, as it was hashed) matches. A password longer than
        the policy allows is wrong without being hashed (no work for a 1 MB guess)."""
        if len(password) > self.policy.max_length:
            return False
        normal = normalise_password(password)
        # hashes made before normalisation was introduced hold the password as typed
        for candidate in dict.fromkeys((normal, password)):
            try:
                if _hasher.verify(user.password_hash, candidate):
                    return True
            except (VerificationError, InvalidHashError):
                continue
        return False

    def _check_new_password(
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
        for old_hash in [user.password_hash, *recent]:
            try:
                if _hasher.verify(old_hash, pw):
                    raise ValidationFailed(
                        f"password must differ from your last {self.policy.history} passwords",
                        field="password",
                        code="password_reused",
                    )
            except (VerificationError, InvalidHashError):
                continue
        return pw

    def _set_password(self, uow: UnitOfWork, user: User, password: str, *, temporary: bool) -> None:
        now = uow.clock.now()
        user.password_hash = _hasher.hash(password)
        user.password_changed_at = now
        user.must_change_password = temporary
        uow.session.add(
            PasswordHistory(user_id=user.id, password_hash=user.password_hash, set_at=now)
        )

    def password_expired(self, user: User, now: datetime) -> bool:
        changed = user.password_changed_at or user.created_at
        return now >= changed + self.policy.max_age

    # --- accounts -------------------------------------------------------------------------
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
        role_list = self._roles(roles)
        approvals.check_role_mix(role_list)
        self._check_reach(actor, role_list, field="roles")
        held, requested = self._split_grants(uow, actor, role_list)
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
        password = self._check_new_password(uow, None, username, password)
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
        self._set_password(uow, user, password, temporary=temp)
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
                **self._bootstrap_note(actor, held),
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

    # --- separation of duties ----------------------------------------------------------------
    @staticmethod
    def _check_reach(actor: Actor, roles: list[str], *, field: str) -> None:
        """The auditor grant reads the whole network: only a network administrator gives it."""
        if Role.AUDITOR.value in roles and not is_network_wide(actor, Permission.USERS_MANAGE):
            raise Forbidden(
                "the auditor role reads every site: only an administrator of the control site "
                "grants it",
                field=field,
                code="other_site",
            )

    @staticmethod
    def _bootstrap_note(actor: Actor, roles: list[str]) -> dict[str, Any]:
        if "system" in actor.roles and set(roles) & approvals.APPROVED_ROLES:
            return {"bootstrap": True}
        return {}

    def _split_grants(
        self, uow: UnitOfWork, actor: Actor, roles: list[str]
    ) -> tuple[list[str], list[str]]:
        """(roles given now, roles that wait for a second person's approval). A system
        component gives qp/admin directly only while the network has fewer than two network
        administrators (bootstrap); afterwards it is refused."""
        privileged = sorted(set(roles) & approvals.APPROVED_ROLES)
        plain = sorted(set(roles) - approvals.APPROVED_ROLES)
        if not privileged:
            return plain, []
        if "system" in actor.roles:
            if approvals.bootstrap_open(uow.session):
                return sorted(roles), []
            raise Refused(
                f"granting {', '.join(privileged)} needs a second person: the network has its "
                "administrators, so an administrator requests it (as themselves) and another "
                "administrator of the control site approves",
                field="roles",
                code="approval_required",
            )
        return plain, privileged

    def _apply_grant(self, uow: UnitOfWork, actor: Actor, request: ApprovalRequest) -> None:
        user = self.get(uow, request.subject_user_id)
        role = request.role or ""
        if not user.active:
            raise Refused(f"{user.username} is deactivated", field="request_id", code="inactive")
        if role in user.roles:
            raise Conflict(f"{user.username} already holds {role}", field="request_id")
        new = sorted({*user.roles, role})
        approvals.check_role_mix(new, field="request_id")
        old = sorted(user.roles)
        user.roles = new
        audit(
            uow,
            actor,
            AuditAction.ROLES_CHANGE,
            "user",
            user.id,
            old={"roles": old},
            new={"roles": new, "granted": [role], "revoked": [], "approval_request": request.id},
            reason=request.decision_reason,
            site_id=user.home_site_id,
        )

    def request_grant(
        self, uow: UnitOfWork, actor: Actor, user_id: str, *, role: str, reason: str
    ) -> ApprovalRequest:
        """Ask for `role` (qp or admin) to be granted; another network administrator approves."""
        user = self._managed(uow, actor, user_id)
        (role,) = self._roles([role])
        if role not in approvals.APPROVED_ROLES:
            raise ValidationFailed(
                f"{role} is granted directly (only qp and admin need approval)", field="role"
            )
        if user.id == actor.user_id:
            raise Refused("you cannot ask for roles for yourself", field="user_id", code="self")
        if role in user.roles:
            raise Conflict(f"{user.username} already holds {role}", field="role")
        approvals.check_role_mix(sorted({*user.roles, role}))
        row = approvals.file_request(
            uow, actor, approvals.ROLE_GRANT, user, role=role, reason=reason
        )
        uow.commit()
        return row

    def decide_request(
        self, uow: UnitOfWork, actor: Actor, request_id: str, *, approve: bool, reason: str
    ) -> ApprovalRequest:
        """Approve (the change applies in the same transaction) or refuse; audited."""
        row = approvals.decide(
            uow, actor, request_id, approve=approve, reason=reason, appliers=self.appliers
        )
        uow.commit()
        return row

    def requests(
        self, uow: UnitOfWork, actor: Actor, status: str | None = "pending"
    ) -> list[ApprovalRequest]:
        return approvals.list_requests(uow, actor, status)

    def requests_get(self, uow: UnitOfWork, request_id: str) -> ApprovalRequest:
        return approvals.get_request(uow, request_id)

    def pending_for(self, uow: UnitOfWork, user_id: str) -> list[ApprovalRequest]:
        return list(
            uow.session.scalars(
                select(ApprovalRequest)
                .where(
                    ApprovalRequest.subject_user_id == user_id,
                    ApprovalRequest.status == "pending",
                )
                .order_by(ApprovalRequest.requested_at, ApprovalRequest.id)
            )
        )

    @staticmethod
    def _roles(roles: Iterable[str]) -> list[str]:
        role_list = sorted({str(r) for r in roles})
        known = {r.value for r in Role}
        for role in role_list:
            if role not in known:
                raise ValidationFailed(
                    f"unknown role {role!r}; choose from {', '.join(sorted(known))}", field="roles"
                )
        return role_list

    def get(self, uow: UnitOfWork, user_id: str) -> User:
        user = uow.session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user {user_id!r}", field="user_id")
        return user

    def by_username(self, uow: UnitOfWork, username: str) -> User | None:
        return uow.session.scalar(select(User).where(User.username == username))

    def read_user(self, uow: UnitOfWork, actor: Actor, user_id: str) -> User:
        """One account, for someone allowed to read accounts of its site (or oneself)."""
        user = self.get(uow, user_id)
        if user.id != actor.user_id:
            authorize(actor, Permission.USERS_READ, site_id=user.home_site_id)
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

    def _managed(self, uow: UnitOfWork, actor: Actor, user_id: str) -> User:
        user = self.get(uow, user_id)
        authorize(actor, Permission.USERS_MANAGE, site_id=user.home_site_id)
        return user

    def deactivate(self, uow: UnitOfWork, actor: Actor, user_id: str, *, reason: str) -> User:
        """The account can no longer log in, use a token or sign; its sessions end. Nothing
        is deleted."""
        user = self._managed(uow, actor, user_id)
        why = require_reason(reason, "deactivating an account")
        if user.id == actor.user_id:
            raise Refused("you cannot deactivate your own account", field="user_id", code="self")
        if not user.active:
            raise Conflict(f"{user.username} is already deactivated", field="user_id")
        user.active = False
        self._end_sessions(uow, user.id, "deactivated")
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
        user = self._managed(uow, actor, user_id)
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

    def unlock(self, uow: UnitOfWork, actor: Actor, user_id: str, *, reason: str) -> User:
        user = self._managed(uow, actor, user_id)
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

    def change_roles(
        self,
        uow: UnitOfWork,
        actor: Actor,
        user_id: str,
        *,
        grant: Iterable[str] = (),
        revoke: Iterable[str] = (),
        reason: str,
    ) -> User:
        """Grant and/or revoke roles; the audit row keeps the old and new role lists."""
        user = self._managed(uow, actor, user_id)
        why = require_reason(reason, "changing roles")
        granted, revoked = self._roles(grant), self._roles(revoke)
        if not granted and not revoked:
            raise ValidationFailed("name a role to grant or revoke", field="grant")
        if set(granted) & set(revoked):
            raise ValidationFailed("a role cannot be granted and revoked at once", field="revoke")
        if user.id == actor.user_id:
            raise Refused(
                "you cannot change your own roles (another administrator must)",
                field="user_id",
                code="self",
            )
        old = sorted(user.roles)
        approvals.check_role_mix(sorted((set(old) | set(granted)) - set(revoked)), field="grant")
        self._check_reach(actor, [r for r in granted if r not in old], field="grant")
        now_given, requested = self._split_grants(uow, actor, [r for r in granted if r not in old])
        new = sorted((set(old) | set(now_given)) - set(revoked))
        if new == old and not requested:
            raise Conflict(f"{user.username} already has exactly these roles", field="grant")
        if new != old:
            user.roles = new
            audit(
                uow,
                actor,
                AuditAction.ROLES_CHANGE,
                "user",
                user.id,
                old={"roles": old},
                new={
                    "roles": new,
                    "granted": now_given,
                    "revoked": revoked,
                    **self._bootstrap_note(actor, now_given),
                },
                reason=why,
                site_id=user.home_site_id,
            )
        for role in requested:
            approvals.file_request(uow, actor, approvals.ROLE_GRANT, user, role=role, reason=why)
        uow.commit()
        return user

    def reset_password(
        self, uow: UnitOfWork, actor: Actor, user_id: str, *, password: str, reason: str
    ) -> User:
        """An administrator sets a temporary password (changed at the next login); the user's
        sessions end."""
        user = self._managed(uow, actor, user_id)
        why = require_reason(reason, "setting a password")
        password = self._check_new_password(uow, user, user.username, password)
        self._set_password(uow, user, password, temporary=True)
        self._end_sessions(uow, user.id, "password_reset")
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
        user = self._verify_password(uow, username, current)
        new = self._check_new_password(uow, user, user.username, new)
        self._set_password(uow, user, new, temporary=False)
        self._end_sessions(uow, user.id, "password_changed", keep=keep_session)
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

    # --- failures, lockout, alerts ----------------------------------------------------------
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
        who = actor or _anonymous(typed)
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

    @staticmethod
    def locked_error(user: User) -> Unauthenticated:
        return Unauthenticated(
            f"account {user.username} is locked after repeated failed attempts; an "
            "administrator must unlock it",
            field="username",
            code="account_locked",
        )

    def alerts(self, uow: UnitOfWork, actor: Actor, limit: int = 200) -> list[SecurityAlert]:
        authorize(actor, Permission.USERS_READ)
        stmt = select(SecurityAlert).order_by(SecurityAlert.id.desc()).limit(limit)
        sites = visible_sites(actor, Permission.USERS_READ)
        if sites is not None:
            stmt = stmt.where(SecurityAlert.site_id.in_(sites))
        return list(uow.session.scalars(stmt))

    # --- login ----------------------------------------------------------------------------
    def _verify_password(self, uow: UnitOfWork, username: str, password: str) -> User:
        """The user behind a username and password, or a committed failure record and
        Unauthenticated (the same words for an unknown user, a wrong password and a
        deactivated account; a locked account says so)."""
        user = self.by_username(uow, username)
        if user is not None and user.active and user.locked_at is not None:
            self.record_failure(
                uow, user, username, action=AuditAction.LOGIN_FAILED, why="account locked"
            )
            uow.commit()
            raise self.locked_error(user)
        if user is None or not user.active or not self.check_password(user, password):
            why = (
                "unknown user"
                if user is None
                else ("account deactivated" if not user.active else "wrong password")
            )
            locked = self.record_failure(
                uow, user, username, action=AuditAction.LOGIN_FAILED, why=why
            )
            uow.commit()
            if locked and user is not None:
                raise self.locked_error(user)
            raise Unauthenticated("wrong username or password")
        return user

    def _refuse_login(self, uow: UnitOfWork, user: User, exc: DomainError) -> None:
        """A right password that still cannot log in (password expired or temporary): on
        record, then raised. The failure count is reset: the password was right."""
        user.failed_attempts = 0
        audit(
            uow,
            _anonymous(user.username),
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
        user = self._verify_password(uow, username, password)
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
        if self.password_expired(user, now):
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
            self.verify_totp(uow, user, totp, action=AuditAction.LOGIN_FAILED)
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
        row = uow.session.scalar(
            select(UserSession).where(UserSession.token_hash == sha256_hex(secret))
        )
        now = uow.clock.now()
        if (
            row is None
            or row.pending != "totp"
            or row.ended_at is not None
            or row.expires_at <= now
        ):
            raise Unauthenticated("the log-in expired; start again", code="session_expired")
        user = self.get(uow, row.user_id)
        if not user.active:
            raise Unauthenticated("wrong username or password")
        if user.locked_at is not None:
            raise self.locked_error(user)
        self.verify_totp(uow, user, code, action=AuditAction.LOGIN_FAILED)
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

    # --- sessions ---------------------------------------------------------------------------
    def session_for(self, uow: UnitOfWork, session_id: str) -> UserSession | None:
        return uow.session.get(UserSession, session_id)

    def actor_for_token(self, uow: UnitOfWork, token: str, *, kind: str | None = None) -> Actor:
        """The actor behind a bearer token or web-session secret. Refused: unknown, ended,
        pending its second factor, past its absolute lifetime or idle too long (the session
        then ends, audited), or the user deactivated or locked. Commits the last-use time."""
        row = uow.session.scalar(
            select(UserSession).where(UserSession.token_hash == sha256_hex(token))
        )
        now = uow.clock.now()
        if row is None or row.ended_at is not None or (kind and row.kind != kind):
            raise Unauthenticated(
                "bearer token unknown, expired or revoked", code="session_invalid"
            )
        if row.pending is not None:
            raise Unauthenticated("the log-in is not complete", code="totp_required", field="totp")
        user = uow.session.get(User, row.user_id)
        if user is None or not user.active:
            raise Unauthenticated("the token's user is not active", code="session_invalid")
        if user.locked_at is not None:
            raise self.locked_error(user)
        reason = None
        if row.expires_at <= now:
            reason = "lifetime"
        elif now - row.last_used_at >= self.policy.idle_timeout:
            reason = "idle_timeout"
        if reason is not None:
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
        actor = actor_of(user, uow.session, row.id)
        if now - row.last_used_at >= _TOUCH_EVERY:
            row.last_used_at = now
            uow.commit()
        return actor

    def logout(self, uow: UnitOfWork, token: str) -> UserSession | None:
        """End the session behind a token or cookie secret (audited); None if there is none."""
        row = uow.session.scalar(
            select(UserSession).where(UserSession.token_hash == sha256_hex(token))
        )
        if row is None or row.ended_at is not None:
            return None
        row.ended_at, row.end_reason = uow.clock.now(), "logout"
        user = self.get(uow, row.user_id)
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

    def _end_sessions(
        self, uow: UnitOfWork, user_id: str, reason: str, keep: str | None = None
    ) -> int:
        now = uow.clock.now()
        rows = uow.session.scalars(
            select(UserSession).where(
                UserSession.user_id == user_id, UserSession.ended_at.is_(None)
            )
        )
        ended = 0
        for row in rows:
            if row.id != keep:
                row.ended_at, row.end_reason = now, reason
                ended += 1
        return ended

    def sessions(self, uow: UnitOfWork, actor: Actor, user_id: str) -> list[UserSession]:
        user = self.read_user(uow, actor, user_id)
        return list(
            uow.session.scalars(
                select(UserSession)
                .where(UserSession.user_id == user.id)
                .order_by(UserSession.created_at.desc())
            )
        )

    # --- TOTP -------------------------------------------------------------------------------
    def enrol_totp(self, uow: UnitOfWork, actor: Actor) -> tuple[str, str]:
        """Start TOTP enrolment for oneself: a new secret (stored encrypted) and its otpauth
        URI, shown this once. Login asks for codes only after `confirm_totp`."""
        authorize(actor, Permission.PROFILE_READ)
        user = self.get(uow, actor.user_id)
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
        user = self.get(uow, actor.user_id)
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
        user = self._managed(uow, actor, user_id)
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
            locked = self.record_failure(
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
                raise self.locked_error(user)
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
