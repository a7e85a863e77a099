"""Identity services on both databases: accounts, login, tokens, e-signatures, the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select

import nearfab.identity.services.users as identity_services
from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Unauthenticated,
    ValidationFailed,
)
from nearfab.identity import (
    Actor,
    AuditEntry,
    Signature,
    User,
    UserSession,
    actor_of,
    audit,
    audit_trail,
    record_hash,
    system_actor,
)
from nearfab.uow import UnitOfWork

ADMIN = system_actor("test-admin")
PASSWORD = "a-long-secret-42"
CONTENT = {"batch": "B-001", "decision": "released", "units": 21}


@pytest.fixture
def app(app_with_product_policies: App) -> App:
    """Token lifetimes here are the product's, not the long ones of clock-jumping tests."""
    return app_with_product_policies


PRODUCTION_HASHER = PasswordHasher()  # users.py builds its hasher with argon2's defaults


def act(app: App, user: User) -> Actor:
    with app.uow() as uow:
        return actor_of(user, uow.session)


def make_user(app: App, username: str = "quentin", *, actor: Actor = ADMIN, **changes: Any) -> User:
    data = {"full_name": f"{username} Full", "roles": ["qp"], "password": PASSWORD, **changes}
    with app.uow() as uow:
        return app.users.create_user(uow, actor, username=username, **data)


def login(app: App, username: str = "quentin", password: str = PASSWORD) -> User:
    with app.uow() as uow:
        return app.users.authenticate(uow, username, password)


def refused(app: App, error: type[DomainError], use_case: Callable[[UnitOfWork], Any]) -> Any:
    """Run a use case in its own unit of work, expect `error`, return it."""
    with pytest.raises(error) as info, app.uow() as uow:
        use_case(uow)
    return info.value


def fails(error: type[DomainError], step: Callable[[], Any]) -> Any:
    with pytest.raises(error) as info:
        step()
    return info.value


def trail(app: App, entity_type: str, entity_id: str) -> list[AuditEntry]:
    with app.uow() as uow:
        return audit_trail(uow, entity_type, entity_id)


def count(app: App, model: type[Any]) -> int:
    with app.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model)) or 0)


# --- accounts --------------------------------------------------------------------------------
def test_create_user_stores_an_argon2_hash_and_audits_without_the_password(
    app: App, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(identity_services, "_hasher", PRODUCTION_HASHER)  # the production cost
    user = make_user(app, roles=["qp", "planner", "qp"])
    with app.uow() as uow:
        stored = app.users.get(uow, user.id)
        assert stored.roles == ["planner", "qp"]
        assert stored.password_hash.startswith("$argon2id$")
        assert PASSWORD not in stored.password_hash
        assert app.users.check_password(stored, PASSWORD)
        assert not app.users.check_password(stored, PASSWORD + "x")
    [entry] = trail(app, "user", user.id)
    assert (entry.action, entry.actor_id, entry.actor_name) == (
        "create",
        ADMIN.user_id,
        ADMIN.full_name,
    )
    assert entry.at == clock.now() and entry.at.utcoffset() == timedelta(0)
    assert entry.old is None and entry.new is not None
    assert entry.new["username"] == "quentin" and entry.new["roles"] == ["planner", "qp"]
    assert entry.new["bootstrap"] is True  # a system component granted qp (no admins yet)
    assert PASSWORD not in str(entry.new)


def test_create_user_refuses_bad_input_naming_the_field(app: App) -> None:
    cases = [
        ({"roles": ["qp", "wizard"]}, "roles"),
        ({"password": "short12"}, "password"),
        ({"username": "   "}, "username"),
    ]
    for changes, field in cases:
        args: dict[str, Any] = {"username": "newbie", **changes}
        assert fails(ValidationFailed, lambda a=args: make_user(app, **a)).field == field
    with app.uow() as uow:  # only the platform's key registration is on record
        kinds = {e.entity_type for e in uow.session.query(AuditEntry).all()}
    assert count(app, User) == 0 and kinds <= {"platform_key"}


def test_duplicate_username_conflicts_and_only_admins_create_users(app: App) -> None:
    qp = make_user(app)
    assert fails(Conflict, lambda: make_user(app, full_name="Other")).field == "username"
    fails(Forbidden, lambda: make_user(app, "mallory", actor=act(app, qp), roles=["admin"]))
    assert count(app, User) == 1


def test_overlong_username_is_a_validation_error(app: App) -> None:
    assert fails(ValidationFailed, lambda: make_user(app, "u" * 65)).field == "username"


# --- login and tokens ------------------------------------------------------------------------
def test_failed_logins_are_refused_alike_and_their_audit_rows_survive(app: App) -> None:
    user = make_user(app)
    wrong = fails(Unauthenticated, lambda: login(app, "quentin", "not-the-password"))
    unknown = fails(Unauthenticated, lambda: login(app, "ghost"))
    assert wrong.message == unknown.message  # says nothing about which part was wrong
    refused(app, Unauthenticated, lambda uow: app.users.issue_token(uow, "quentin", "nope-nope"))
    # the refusing transactions ended with an exception; the failures are still on record
    actions = [e.action for e in trail(app, "user", user.id)]
    assert actions == ["create", "login_failed", "login_failed"]
    [ghost] = trail(app, "user", "ghost")
    assert ghost.action == "login_failed" and ghost.actor_id == "unknown:ghost"
    assert count(app, UserSession) == 0
    assert login(app).id == user.id
    assert trail(app, "user", user.id)[-1].action == "login"


def test_failed_login_with_long_username_is_refused_and_audited(app: App) -> None:
    name = "a" * 300  # whatever is typed is cut to fit the audit columns, never lost
    fails(Unauthenticated, lambda: login(app, name))
    assert [e.action for e in trail(app, "user", name[:48])] == ["login_failed"]


def test_token_maps_to_its_actor_until_it_expires(app: App, clock: ManualClock) -> None:
    make_user(app, roles=["pharmacist"])
    with app.uow() as uow:
        token, user = app.users.issue_token(uow, "quentin", PASSWORD)
    with app.uow() as uow:
        stored = uow.session.scalars(select(UserSession.token_hash)).all()
        assert token not in stored and len(stored) == 1  # only the hash is stored
        actor = app.users.actor_for_token(uow, token)
    assert (actor.user_id, actor.username, actor.roles) == (user.id, "quentin", ("pharmacist",))
    refused(app, Unauthenticated, lambda uow: app.users.actor_for_token(uow, token + "x"))
    for _ in range(11 * 6):  # used every 10 minutes: never idle for 15
        clock.advance(600)
        with app.uow() as uow:
            app.users.actor_for_token(uow, token)
    clock.advance(3600)  # 12 h after issue: past the absolute lifetime
    error = refused(app, Unauthenticated, lambda uow: app.users.actor_for_token(uow, token))
    assert error.code == "session_expired"


def test_deactivated_user_cannot_log_in_use_a_token_or_sign(app: App) -> None:
    make_user(app)
    with app.uow() as uow:
        token, user = app.users.issue_token(uow, "quentin", PASSWORD)
    with app.uow() as uow:
        app.users.get(uow, user.id).active = False
        uow.commit()
    fails(Unauthenticated, lambda: login(app))
    refused(app, Unauthenticated, lambda uow: app.users.actor_for_token(uow, token))
    fails(Unauthenticated, lambda: sign(app, act(app, user)))


# --- electronic signatures -------------------------------------------------------------------
def sign(
    app: App,
    actor: Actor,
    *,
    password: str = PASSWORD,
    meaning: str = "QP release",
    commit: bool = True,
) -> Signature:
    with app.uow() as uow:
        sig = app.signatures.sign(
            uow,
            actor,
            password=password,
            meaning=meaning,
            record_type="batch",
            record_id="B-001",
            content=CONTENT,
        )
        if commit:
            uow.commit()
    return sig


def test_signature_refuses_wrong_password_and_empty_meaning(app: App) -> None:
    actor = act(app, make_user(app))
    with pytest.raises(Unauthenticated):
        sign(app, actor, password="guessing-1234")
    with pytest.raises(ValidationFailed) as info:
        sign(app, actor, meaning="   ")
    assert info.value.field == "meaning"
    sign(app, actor, commit=False)  # the signer's use case did not commit: nothing is kept
    assert count(app, Signature) == 0
    assert trail(app, "batch", "B-001") == []
    # the failed attempt is on the signer's account (committed on its own)
    assert "sign_failed" in [e.action for e in trail(app, "user", actor.user_id)]


def test_signature_is_bound_to_the_content_hash(app: App, clock: ManualClock) -> None:
    user = make_user(app)
    sig = sign(app, act(app, user), meaning="  QP release  ")
    with app.uow() as uow:
        [stored] = app.signatures.signatures_for(uow, "batch", "B-001")
    assert (stored.signer_id, stored.signer_name, stored.meaning) == (
        user.id,
        "quentin Full",
        "QP release",
    )
    assert stored.signed_at == clock.now() and stored.signed_at.tzinfo is not None
    assert stored.record_hash == record_hash(CONTENT) == sig.record_hash
    assert app.signatures.is_valid(stored, dict(CONTENT))
    assert not app.signatures.is_valid(stored, {**CONTENT, "units": 22})
    assert not app.signatures.is_valid(stored, {**CONTENT, "note": "added later"})
    [entry] = trail(app, "batch", "B-001")
    assert entry.action == "sign" and entry.actor_id == user.id
    assert entry.new == {
        "signature_id": stored.id,
        "meaning": "QP release",
        "record_hash": stored.record_hash,
        "signature_hash": stored.signature_hash,
        "components": "password",
        "session_id": None,
    }


# --- the audit trail -------------------------------------------------------------------------
def test_audit_rows_keep_utc_time_actor_old_new_and_reason(app: App) -> None:
    paris = ManualClock(datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=2))))
    actor = Actor(user_id="usr_1", username="qp", full_name="Quentin Parr", roles=("qp",))
    with UnitOfWork(app.session_factory, paris, app.bus) as uow:
        audit(
            uow,
            actor,
            "update",
            "thing",
            "T-1",
            old={"limit": 5},
            new={"limit": 7, "due": datetime(2026, 3, 2, tzinfo=UTC)},
            reason="spec change CC-12",
            site_id="site_A",
        )
        uow.commit()
    with UnitOfWork(app.session_factory, paris, app.bus) as uow:
        audit(uow, actor, "update", "thing", "T-1", new={"limit": 9})  # rolled back
    [entry] = trail(app, "thing", "T-1")
    assert entry.at == datetime(2026, 3, 1, 7, 30, tzinfo=UTC)
    assert entry.at.tzinfo is not None and entry.at.utcoffset() == timedelta(0)
    assert (entry.actor_id, entry.actor_name, entry.action) == ("usr_1", "Quentin Parr", "update")
    assert entry.old == {"limit": 5}
    assert entry.new == {"limit": 7, "due": "2026-03-02T00:00:00+00:00"}
    assert (entry.reason, entry.site_id) == ("spec change CC-12", "site_A")
