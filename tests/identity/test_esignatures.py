"""Electronic signatures, on both databases, through the service and the HTTP API:
21 CFR 11.200(a)(1) (two components at the first signing of a continuous session, the
password alone later in it), a TOTP third component where a site or master file demands it,
11.50 (printed name, date and time with zone, meaning), 11.70 (signature bound to its record:
not movable, not editable), 11.300(d) (failed signing attempts audited, counted toward the
lockout, and rate limited)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from tests import flow_helpers as fh

import nearfab.identity.services.users as users_module
from nearfab.api.security import LoginThrottle
from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import DomainError, Refused, Unauthenticated
from nearfab.identity import (
    Actor,
    AuditEntry,
    SecurityAlert,
    Signature,
    User,
    actor_of,
    audit_trail,
    system_actor,
)
from nearfab.network import Site
from nearfab.uow import UnitOfWork
from nearfab.web.server import create_web_app

seeded = fh.seeded
BOOT = system_actor("test-admin")
PASSWORD = "a-long-secret-42"
CONTENT = {"batch": "B-001", "decision": "released", "units": 21}


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        users_module, "_hasher", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )


def run(app: App, step: Callable[[UnitOfWork], Any]) -> Any:
    with app.uow() as uow:
        return step(uow)


def fails(error: type[DomainError], step: Callable[[], Any]) -> Any:
    with pytest.raises(error) as info:
        step()
    return info.value


def make_qp(app: App, username: str = "quentin", site_id: str | None = None) -> User:
    with app.uow() as uow:
        return app.users.create_user(
            uow,
            BOOT,
            username=username,
            full_name="Quentin Parr",
            roles=["qp"],
            password=PASSWORD,
            home_site_id=site_id,
        )


def session_actor(app: App, username: str = "quentin", password: str = PASSWORD) -> Actor:
    """The actor of a new continuous session (an API token), as an entry point sees it."""
    token = run(app, lambda uow: app.users.issue_token(uow, username, password))[0]
    actor: Actor = run(app, lambda uow: app.users.actor_for_token(uow, token))
    assert actor.session_id is not None
    return actor


def sign(
    app: App,
    actor: Actor,
    *,
    record_id: str = "B-001",
    content: dict[str, Any] | None = None,
    **components: Any,
) -> Signature:
    args = {"password": PASSWORD, **components}
    with app.uow() as uow:
        sig = app.signatures.sign(
            uow,
            actor,
            meaning="QP release",
            record_type="batch",
            record_id=record_id,
            content=content or CONTENT,
            **args,
        )
        uow.commit()
        return sig


def signatures(app: App) -> list[Signature]:
    return run(
        app, lambda uow: list(uow.session.scalars(select(Signature).order_by(Signature.signed_at)))
    )


def trail(app: App, entity_type: str, entity_id: str) -> list[AuditEntry]:
    return run(app, lambda uow: audit_trail(uow, entity_type, entity_id))


# --- 11.200(a)(1): components and continuous sessions ----------------------------------------
def test_11_200_a1_two_components_first_signing(app: App) -> None:
    user = make_qp(app)
    actor = session_actor(app)
    # the password alone does not start a session's signing
    error = fails(Unauthenticated, lambda: sign(app, actor))
    assert (error.code, error.field) == ("username_required", "username")
    # another person's user ID with this person's password is a failed attempt, on record
    fails(Unauthenticated, lambda: sign(app, actor, username="mallory"))
    assert signatures(app) == []
    [failed] = [e for e in trail(app, "user", user.id) if e.action == "sign_failed"]
    assert (failed.actor_id, failed.reason) == (actor.user_id, "user ID does not match")
    assert failed.new == {"failed_attempts": 1, "record_type": "batch", "record_id": "B-001"}
    sig = sign(app, actor, username="quentin")
    assert (sig.components, sig.session_id) == ("user_id+password", actor.session_id)


def test_11_200_a1_password_only_later_in_same_session(app: App, clock: ManualClock) -> None:
    make_qp(app)
    actor = session_actor(app)
    sign(app, actor, username="quentin")
    clock.advance(60)
    later = sign(app, actor, record_id="B-002")  # the password alone, same session
    assert later.components == "password"
    # still a password: a wrong one is refused
    assert fails(Unauthenticated, lambda: sign(app, actor, password="not-the-password")).field == (
        "password"
    )
    assert [s.record_id for s in signatures(app)] == ["B-001", "B-002"]


def test_11_200_a1_new_session_needs_both_components_again(app: App) -> None:
    make_qp(app)
    sign(app, session_actor(app), username="quentin")
    fresh = session_actor(app)  # logged in again: a new continuous session
    assert fails(Unauthenticated, lambda: sign(app, fresh)).code == "username_required"
    assert sign(app, fresh, username="quentin").components == "user_id+password"


def test_11_200_a1_through_the_api_first_release_needs_the_user_id(seeded: App) -> None:
    web = create_web_app(seeded)
    client = TestClient(web)
    first, second = fh.make_batch(seeded), fh.make_batch(seeded)
    r = client.post("/api/v1/auth/token", json={"username": "qp", "password": fh.TEST_PASSWORD})
    qp = {"Authorization": f"Bearer {r.json()['access_token']}"}
    body = {
        "decision": "release",
        "password": fh.TEST_PASSWORD,
        "meaning": "QP release",
        "reason": "reviewed",
    }
    r = client.post(f"/api/v1/batches/{first}/decision", json=body, headers=qp)
    assert r.status_code == 401 and r.json()["error"]["code"] == "username_required"
    assert fh.batch(seeded, first).status == "completed"  # nothing signed
    r = client.post(
        f"/api/v1/batches/{first}/decision", json={**body, "username": "qp"}, headers=qp
    )
    assert r.status_code == 200, r.text
    r = client.post(f"/api/v1/batches/{second}/decision", json=body, headers=qp)
    assert r.status_code == 200, r.text  # same token: the password alone
    with seeded.uow() as uow:
        comps = [
            s.components
            for b in (first, second)
            for s in seeded.signatures.signatures_for(uow, "batch", b)
        ]
    assert comps == ["user_id+password", "password"]


# --- TOTP as a third component -------------------------------------------------------------------
def enrol(app: App, user_id: str) -> str:
    with app.uow() as uow:
        actor = actor_of(app.users.get(uow, user_id), uow.session)
    secret, _uri = run(app, lambda uow: app.users.enrol_totp(uow, actor))
    run(app, lambda uow: app.users.confirm_totp(uow, actor, pyotp.TOTP(secret).at(app.clock.now())))
    return str(secret)


def test_11_200_totp_third_component_when_the_site_demands_it(app: App, clock: ManualClock) -> None:
    with app.uow() as uow:
        site = app.network.create_site(uow, BOOT, code="S1", name="S1", kind="clinic").id
    user = make_qp(app)
    sign(app, session_actor(app), username="quentin")  # the site does not ask yet
    fh.edit(app, Site, site, totp_for_signing=True)
    actor = session_actor(app)

    def on_site(**kw: Any) -> Signature:
        return sign(app, actor, record_id="B-9", site_id=site, username="quentin", **kw)

    assert fails(Refused, on_site).code == "totp_not_enrolled"
    clock.advance(60)
    secret = enrol(app, user.id)
    clock.advance(30)
    assert fails(Unauthenticated, on_site).code == "totp_required"
    assert fails(Unauthenticated, lambda: on_site(totp="000000")).code == "totp_invalid"
    [failed] = [e for e in trail(app, "user", user.id) if e.action == "sign_failed"]
    assert failed.new is not None and failed.new["record_id"] == "B-9"
    code = pyotp.TOTP(secret).at(clock.now())
    sig = on_site(totp=code)
    assert sig.components == "user_id+password+totp"
    # the same code again: refused (a code works once)
    assert fails(Unauthenticated, lambda: on_site(totp=code)).code == "totp_invalid"
    # the caller may demand it for its record (a master file's totp_for_signing)
    assert fails(Unauthenticated, lambda: sign(app, actor, require_totp=True)).code == (
        "totp_required"
    )


def test_11_200_master_file_demanding_totp_through_the_api(seeded: App, clock: ManualClock) -> None:
    qp = fh.actor(seeded, "qp")
    with seeded.uow() as uow:
        mf = seeded.master_files.list_all(uow)[0]
        data = mf.content()
    data.pop("version")
    with seeded.uow() as uow:
        draft = seeded.master_files.draft(uow, qp, data)
    from nearfab.masterfiles import MasterFile

    fh.edit(seeded, MasterFile, draft.id, totp_for_signing=True)
    secret = enrol(seeded, qp.user_id)
    clock.advance(30)  # the code used to confirm is spent
    client = TestClient(create_web_app(seeded))
    r = client.post(
        "/api/v1/auth/token",
        json={
            "username": "qp",
            "password": fh.TEST_PASSWORD,
            "totp": pyotp.TOTP(secret).at(clock.now()),
        },
    )
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    body = {"password": fh.TEST_PASSWORD, "meaning": "QP approval", "username": "qp"}
    r = client.post(f"/api/v1/master-files/{draft.id}/approve", json=body, headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "totp_required"
    clock.advance(30)
    body["totp"] = pyotp.TOTP(secret).at(clock.now())
    r = client.post(f"/api/v1/master-files/{draft.id}/approve", json=body, headers=headers)
    assert r.status_code == 200, r.text
    with seeded.uow() as uow:
        [sig] = seeded.signatures.signatures_for(uow, "master_file", draft.id)
    assert sig.components == "user_id+password+totp"


# --- 11.50: what a signature shows ---------------------------------------------------------
def test_11_50_signature_shows_printed_name_time_zone_and_meaning(
    seeded: App, clock: ManualClock
) -> None:
    batch_id = fh.make_batch(seeded)
    fh.release(seeded, batch_id, reason="reviewed")
    with seeded.uow() as uow:
        [sig] = seeded.signatures.signatures_for(uow, "batch", batch_id)
        shown = seeded.signatures.describe(sig)
    assert shown["printed_name"] == "Quentin Parr (QP)"
    assert shown["signed_at"].endswith("+00:00") and shown["time_zone"] == "UTC"
    assert shown["signed_at_display"].endswith(" UTC")
    assert shown["meaning"] and shown["record_hash"] and shown["signature_hash"]
    # on the API and on the batch record page
    client = TestClient(create_web_app(seeded))
    r = client.post("/api/v1/auth/token", json={"username": "qp", "password": fh.TEST_PASSWORD})
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    record = client.get(f"/api/v1/batches/{batch_id}", headers=headers).json()
    [api_sig] = record["signatures"]
    assert api_sig["printed_name"] == "Quentin Parr (QP)" and api_sig["meaning"] == sig.meaning
    assert str(api_sig["signed_at"]).startswith(sig.signed_at.strftime("%Y-%m-%dT%H:%M:%S"))
    page = client.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    client.post(
        "/login", data={"username": "qp", "password": fh.TEST_PASSWORD, "csrf_token": csrf.group(1)}
    )
    html = client.get(f"/batches/{batch_id}").text
    assert "Quentin Parr (QP)" in html and sig.meaning in html
    assert sig.signed_at.strftime("%Y-%m-%d %H:%M:%S UTC") in html


# --- 11.70: binding -----------------------------------------------------------------------------
def _tamper(app: App, sql: str, **params: Any) -> None:
    """Change signature rows behind the application's back. The append-only triggers on
    `signatures` (if this database has them yet) are dropped first: the test is about what
    validity checking sees when someone with database access got past them."""
    with app.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            names = conn.execute(
                text(
                    "SELECT tgname FROM pg_trigger WHERE tgrelid = 'signatures'::regclass "
                    "AND NOT tgisinternal"
                )
            ).scalars()
            for name in list(names):
                conn.execute(text(f'DROP TRIGGER IF EXISTS "{name}" ON signatures'))
        else:
            names = conn.execute(
                text(
                    "SELECT name FROM sqlite_master WHERE type='trigger' AND tbl_name='signatures'"
                )
            ).scalars()
            for name in list(names):
                conn.execute(text(f'DROP TRIGGER IF EXISTS "{name}"'))
        conn.execute(text(sql), params)


def _valid(app: App, sig_id: str, content: dict[str, Any]) -> bool:
    with app.uow() as uow:
        sig = uow.session.get(Signature, sig_id)
        assert sig is not None
        return app.signatures.is_valid(sig, content)


def test_11_70_signature_cannot_be_moved_to_another_record(app: App) -> None:
    make_qp(app)
    # two records with the same content: only the binding of the signature itself tells them apart
    same = {"units": 21, "decision": "released"}
    sig = sign(app, session_actor(app), username="quentin", record_id="B-001", content=same)
    assert _valid(app, sig.id, same)
    _tamper(app, "UPDATE signatures SET record_id = 'B-002' WHERE id = :id", id=sig.id)
    with app.uow() as uow:
        assert app.signatures.signatures_for(uow, "batch", "B-002")  # it now shows on B-002...
    assert not _valid(app, sig.id, same)  # ...but is not valid there
    _tamper(app, "UPDATE signatures SET record_id = 'B-001' WHERE id = :id", id=sig.id)
    assert _valid(app, sig.id, same)  # put back: valid again (nothing else is stored)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("signer_name", "Somebody Else"),
        ("meaning", "QP rejection"),
        ("signed_at", "2025-01-01 00:00:00+00:00"),
        ("record_type", "master_file"),
    ],
)
def test_11_70_signature_edited_in_the_database_is_invalid(
    app: App, column: str, value: str
) -> None:
    make_qp(app)
    sig = sign(app, session_actor(app), username="quentin")
    assert _valid(app, sig.id, CONTENT)
    _tamper(app, f"UPDATE signatures SET {column} = :v WHERE id = :id", v=value, id=sig.id)
    assert not _valid(app, sig.id, CONTENT)


def test_11_70_record_changed_after_signing_is_invalid(app: App) -> None:
    make_qp(app)
    sig = sign(app, session_actor(app), username="quentin")
    assert not _valid(app, sig.id, {**CONTENT, "units": 22})
    # recomputing the record hash into the row does not help: the binding hash covers it
    from nearfab.identity import record_hash

    forged = record_hash({**CONTENT, "units": 22})
    _tamper(app, "UPDATE signatures SET record_hash = :h WHERE id = :id", h=forged, id=sig.id)
    assert not _valid(app, sig.id, {**CONTENT, "units": 22})


# --- 11.300(d): failed signing attempts ------------------------------------------------------
def test_11_300_d_failed_signatures_count_toward_lockout(app: App) -> None:
    user = make_qp(app)
    actor = session_actor(app)
    for _ in range(4):
        fails(
            Unauthenticated, lambda: sign(app, actor, username="quentin", password="guess-1234567")
        )
    error = fails(
        Unauthenticated, lambda: sign(app, actor, username="quentin", password="guess-1234567")
    )
    assert error.code == "account_locked"
    # the account is locked everywhere now: signing with the right password, logging in, the token
    assert (
        fails(Unauthenticated, lambda: sign(app, actor, username="quentin")).code
        == "account_locked"
    )
    with app.uow() as uow:
        assert app.users.get(uow, user.id).locked_at is not None
        [alert] = uow.session.scalars(select(SecurityAlert)).all()
    assert alert.kind == "account_locked" and alert.user_id == user.id
    actions = [e.action for e in trail(app, "user", user.id)]
    assert actions.count("sign_failed") == 5 and actions.count("lock") == 1
    assert signatures(app) == []


def test_11_300_d_signing_attempts_are_rate_limited_on_the_api(seeded: App) -> None:
    web = create_web_app(seeded)
    web.state.login_throttle = LoginThrottle(limit=3, window_s=300)
    client = TestClient(web)
    batch_id = fh.make_batch(seeded)
    r = client.post("/api/v1/auth/token", json={"username": "qp", "password": fh.TEST_PASSWORD})
    qp = {"Authorization": f"Bearer {r.json()['access_token']}"}
    bad = {
        "decision": "release",
        "password": "not-the-password",
        "meaning": "QP release",
        "username": "qp",
        "reason": "reviewed",
    }
    codes = [
        client.post(f"/api/v1/batches/{batch_id}/decision", json=bad, headers=qp).status_code
        for _ in range(4)
    ]
    assert codes == [401, 401, 401, 429]
    r = client.post(f"/api/v1/batches/{batch_id}/decision", json=bad, headers=qp)
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_attempts"
    with seeded.uow() as uow:
        qp_id = fh.actor(seeded, "qp").user_id
        on_user = [e.action for e in audit_trail(uow, "user", qp_id)]
        on_batch = [e.action for e in audit_trail(uow, "batch", batch_id)]
    # the held-back attempts never reached the password check
    assert on_user.count("sign_failed") == 3 and on_batch.count("refuse") == 3
