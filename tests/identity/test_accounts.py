"""Accounts on both databases, through the service and through the HTTP API: identification
codes never reused (21 CFR 11.100(a), 11.300(a)), password policy and ageing (11.300(b)),
lockout with a security alert (11.300(d)), session timeout and revocation (11.10(d), Annex 11
§12), TOTP second factor, and audited role changes (Annex 11 §12.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import nearfab.identity.services.users as users_module
from nearfab.api.security import LoginThrottle
from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Refused,
    Unauthenticated,
    ValidationFailed,
)
from nearfab.identity import (
    Actor,
    AuditEntry,
    PasswordHistory,
    SecurityAlert,
    User,
    UserSession,
    actor_of,
    audit_trail,
    system_actor,
)
from nearfab.uow import UnitOfWork
from nearfab.web.server import create_web_app

BOOT = system_actor("test-admin")
PASSWORD = "a-long-secret-42"


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Low-cost argon2id for speed (the hash format test is in test_identity_services)."""
    monkeypatch.setattr(
        users_module, "_hasher", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )


@pytest.fixture
def app(app_with_product_policies: App) -> App:
    """The product's own session and password policies (the shared `app` fixture lengthens
    them because other tests jump their clocks by days)."""
    return app_with_product_policies


# --- helpers ---------------------------------------------------------------------------------
def make_user(
    app: App,
    username: str = "quentin",
    *,
    actor: Actor = BOOT,
    roles: list[str] | None = None,
    password: str = PASSWORD,
    site_id: str | None = None,
) -> User:
    with app.uow() as uow:
        return app.users.create_user(
            uow,
            actor,
            username=username,
            full_name=f"{username.title()} Person",
            roles=roles or ["qp"],
            password=password,
            home_site_id=site_id,
        )


def act(app: App, user_id: str) -> Actor:
    with app.uow() as uow:
        return actor_of(app.users.get(uow, user_id), uow.session)


def run(app: App, step: Callable[[UnitOfWork], Any]) -> Any:
    with app.uow() as uow:
        return step(uow)


def fails(error: type[DomainError], step: Callable[[], Any]) -> Any:
    with pytest.raises(error) as info:
        step()
    return info.value


def login(app: App, username: str = "quentin", password: str = PASSWORD, **kw: Any) -> User:
    return run(app, lambda uow: app.users.authenticate(uow, username, password, **kw))


def token(app: App, username: str = "quentin", password: str = PASSWORD, **kw: Any) -> str:
    value, _user = run(app, lambda uow: app.users.issue_token(uow, username, password, **kw))
    return str(value)


def trail(app: App, entity_id: str) -> list[AuditEntry]:
    return run(app, lambda uow: audit_trail(uow, "user", entity_id))


def new_site(app: App, code: str) -> str:
    with app.uow() as uow:
        return app.network.create_site(uow, BOOT, code=code, name=code, kind="clinic").id


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    web = create_web_app(app)
    web.state.login_throttle = LoginThrottle(limit=1000)  # these tests are about the lockout
    with TestClient(web) as c:
        yield c


def bearer(
    client: TestClient, username: str, password: str = PASSWORD, **extra: Any
) -> dict[str, str]:
    r = client.post(
        "/api/v1/auth/token", json={"username": username, "password": password, **extra}
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def error_of(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


# --- 11.100(a) / 11.300(a): unique identification, never reused -----------------------------
def test_11_100_a_user_ids_never_reused(app: App, client: TestClient) -> None:
    admin = make_user(app, "ada", roles=["admin"])
    user = make_user(app)
    with app.uow() as uow:
        app.users.deactivate(uow, act(app, admin.id), user.id, reason="left the trust")
    # the username is kept by the deactivated account: not reusable, whatever the case
    for name in ("quentin", "Quentin", "QUENTIN"):
        assert fails(Conflict, lambda n=name: make_user(app, n)).field == "username"
    # the deactivated account can no longer log in, hold a token or sign
    fails(Unauthenticated, lambda: login(app))
    fails(Unauthenticated, lambda: token(app))
    with app.uow() as uow:
        assert app.users.get(uow, user.id).active is False  # still there, never deleted
    # through the API: no route deletes an account; re-creating the name is refused
    headers = bearer(client, "ada")
    assert client.delete(f"/api/v1/users/{user.id}", headers=headers).status_code in (404, 405)
    r = client.post(
        "/api/v1/users",
        headers=headers,
        json={"username": "quentin", "full_name": "Other Q", "roles": ["qp"], "password": PASSWORD},
    )
    assert r.status_code == 409 and error_of(r)["field"] == "username"
    # reactivation, with a reason, brings the same id back
    r = client.post(f"/api/v1/users/{user.id}/reactivate", headers=headers, json={"reason": "back"})
    assert r.status_code == 200 and r.json()["id"] == user.id and r.json()["active"] is True
    assert login(app).id == user.id
    actions = [e.action for e in trail(app, user.id)]
    assert actions[:1] == ["create"] and "deactivate" in actions and "reactivate" in actions
    [row] = [e for e in trail(app, user.id) if e.action == "deactivate"]
    assert row.reason == "left the trust" and row.old == {"active": True}


def test_deactivation_ends_sessions_and_needs_a_reason(app: App, client: TestClient) -> None:
    admin = make_user(app, "ada", roles=["admin"])
    user = make_user(app)
    headers = bearer(client, "quentin")
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    admin_h = bearer(client, "ada")
    r = client.post(f"/api/v1/users/{user.id}/deactivate", headers=admin_h, json={"reason": " "})
    assert r.status_code == 422 and error_of(r)["field"] == "reason"
    r = client.post(f"/api/v1/users/{admin.id}/deactivate", headers=admin_h, json={"reason": "x"})
    assert r.status_code == 409 and error_of(r)["code"] == "self"
    r = client.post(f"/api/v1/users/{user.id}/deactivate", headers=admin_h, json={"reason": "left"})
    assert r.status_code == 200 and r.json()["active"] is False
    assert client.get("/api/v1/me", headers=headers).status_code == 401


# --- 11.300(b): password policy and ageing ---------------------------------------------------
def test_password_policy_length_username_common_and_history(app: App) -> None:
    cases = [
        ("short-pw-1", "password_too_short"),
        ("my-quentin-secret", "password_has_username"),
        ("Password2024!", "password_common"),
        ("qwertyuiop12", "password_common"),
    ]
    for pw, code in cases:
        error = fails(ValidationFailed, lambda p=pw: make_user(app, password=p))
        assert (error.field, error.code) == ("password", code), pw
    assert run(app, lambda uow: uow.session.scalar(select(func.count()).select_from(User))) == 0
    user = make_user(app)
    history = [PASSWORD] + [f"another-secret-{i:02d}" for i in range(1, 6)]
    for old, new in pairwise(history):
        run(app, lambda uow, o=old, n=new: app.users.change_password(uow, "quentin", o, n))
    current = history[-1]
    # the last 5 (the current one included) are refused; the 6th-last is allowed again
    for reused in history[-5:]:
        error = fails(
            ValidationFailed,
            lambda r=reused: run(
                app, lambda uow: app.users.change_password(uow, "quentin", current, r)
            ),
        )
        assert error.code == "password_reused"
    run(app, lambda uow: app.users.change_password(uow, "quentin", current, history[0]))
    hashes = run(
        app,
        lambda uow: list(
            uow.session.scalars(
                select(PasswordHistory.password_hash).where(PasswordHistory.user_id == user.id)
            )
        ),
    )
    assert len(hashes) == 7 and all(h.startswith("$argon2id$") for h in hashes)
    assert all(PASSWORD not in str(e.new) for e in trail(app, user.id))


def test_11_300_b_password_ageing(app: App, clock: ManualClock, client: TestClient) -> None:
    make_user(app)
    clock.advance(89 * 86400)
    assert login(app).username == "quentin"
    clock.advance(86400)  # 90 days old
    error = fails(Forbidden, lambda: login(app))
    assert (error.code, error.field) == ("password_expired", "password")
    r = client.post("/api/v1/auth/token", json={"username": "quentin", "password": PASSWORD})
    assert r.status_code == 403 and error_of(r)["code"] == "password_expired"
    # the way out: change it with the current one (no token needed)
    r = client.post(
        "/api/v1/auth/password",
        json={
            "username": "quentin",
            "current_password": PASSWORD,
            "new_password": "fresh-secret-77",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["must_change_password"] is False
    bearer(client, "quentin", "fresh-secret-77")
    refused = [e for e in trail(app, r.json()["id"]) if e.action == "login_failed"]
    assert refused and refused[-1].new == {"code": "password_expired"}


def test_admin_set_password_is_temporary_until_changed(app: App, client: TestClient) -> None:
    admin = make_user(app, "ada", roles=["admin"])
    user = make_user(app, actor=act(app, admin.id))  # set by a person: temporary
    error = fails(Forbidden, lambda: login(app))
    assert error.code == "password_expired"
    r = client.post("/api/v1/auth/token", json={"username": "quentin", "password": PASSWORD})
    assert r.status_code == 403 and error_of(r)["code"] == "password_expired"
    run(app, lambda uow: app.users.change_password(uow, "quentin", PASSWORD, "my-own-secret-1"))
    assert login(app, password="my-own-secret-1").id == user.id
    # an administrator's reset makes it temporary again and ends the user's sessions
    headers = bearer(client, "quentin", "my-own-secret-1")
    r = client.post(
        f"/api/v1/users/{user.id}/password",
        headers=bearer(client, "ada"),
        json={"password": "reset-by-admin-9", "reason": "forgotten"},
    )
    assert r.status_code == 200 and r.json()["must_change_password"] is True
    assert client.get("/api/v1/me", headers=headers).status_code == 401
    assert (
        fails(Forbidden, lambda: login(app, password="reset-by-admin-9")).code == "password_expired"
    )


# --- 11.300(d): lockout and security alert ---------------------------------------------------
def test_11_300_d_lockout_after_failed_attempts_alerts_security(
    app: App, client: TestClient
) -> None:
    site = new_site(app, "SITE-A")
    make_user(app, "ada", roles=["admin"])
    auditor = make_user(app, "audrey", roles=["auditor"])
    user = make_user(app, roles=["operator"], site_id=site)
    for attempt in range(1, 5):
        error = fails(Unauthenticated, lambda: login(app, password="not-the-password"))
        assert error.code == "unauthenticated", attempt
    with app.uow() as uow:
        assert app.users.get(uow, user.id).failed_attempts == 4  # persisted, not in memory
    error = fails(Unauthenticated, lambda: login(app, password="not-the-password"))
    assert error.code == "account_locked"
    # even the right password is refused now, on the service and on the API
    assert fails(Unauthenticated, lambda: login(app)).code == "account_locked"
    r = client.post("/api/v1/auth/token", json={"username": "quentin", "password": PASSWORD})
    assert r.status_code == 401 and error_of(r)["code"] == "account_locked"
    # the alert: a row, an audit entry, listed for administrators and auditors
    alerts = run(app, lambda uow: list(uow.session.scalars(select(SecurityAlert))))
    assert [(a.kind, a.user_id, a.site_id) for a in alerts] == [("account_locked", user.id, site)]
    assert [e.action for e in trail(app, user.id)].count("lock") == 1
    for who in ("ada", "audrey"):
        listed = client.get("/api/v1/security/alerts", headers=bearer(client, who)).json()
        assert [a["username"] for a in listed] == ["quentin"], who
    # only an administrator unlocks, with a reason, audited
    r = client.post(
        f"/api/v1/users/{user.id}/unlock", headers=bearer(client, "audrey"), json={"reason": "x"}
    )
    assert r.status_code == 403
    r = client.post(
        f"/api/v1/users/{user.id}/unlock",
        headers=bearer(client, "ada"),
        json={"reason": "identity checked by phone"},
    )
    assert r.status_code == 200 and r.json()["locked"] is False
    assert login(app).id == user.id
    [unlock] = [e for e in trail(app, user.id) if e.action == "unlock"]
    assert unlock.reason == "identity checked by phone" and unlock.old is not None
    assert auditor.id != user.id


def test_a_success_resets_the_count_of_consecutive_failures(app: App) -> None:
    user = make_user(app)
    for _ in range(4):
        fails(Unauthenticated, lambda: login(app, password="wrong-password-1"))
    login(app)
    for _ in range(4):
        fails(Unauthenticated, lambda: login(app, password="wrong-password-1"))
    with app.uow() as uow:
        assert app.users.get(uow, user.id).locked_at is None


# --- 11.10(d) / Annex 11 §12: sessions ---------------------------------------------------------
def test_11_10_d_session_timeout(app: App, clock: ManualClock, client: TestClient) -> None:
    make_user(app)
    value = token(app)
    # used every 14 minutes, the token lives on; 15 minutes idle ends it
    for _ in range(3):
        clock.advance(14 * 60)
        assert run(app, lambda uow: app.users.actor_for_token(uow, value)).username == "quentin"
    clock.advance(15 * 60)
    error = fails(
        Unauthenticated, lambda: run(app, lambda uow: app.users.actor_for_token(uow, value))
    )
    assert error.code == "session_expired"
    [row] = run(app, lambda uow: list(uow.session.scalars(select(UserSession))))
    assert (row.end_reason, row.ended_at) == ("idle_timeout", clock.now())
    # through the API: the same on a bearer token
    headers = bearer(client, "quentin")
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    clock.advance(16 * 60)
    r = client.get("/api/v1/me", headers=headers)
    assert r.status_code == 401 and error_of(r)["code"] == "session_expired"
    assert "session_expired" in [e.action for e in trail(app, row.user_id)]


def test_logout_revokes_the_api_token(app: App, client: TestClient) -> None:
    make_user(app)
    headers = bearer(client, "quentin")
    me = client.get("/api/v1/me", headers=headers)
    assert me.status_code == 200
    r = client.post("/api/v1/auth/logout", headers=headers)
    assert r.status_code == 200
    assert client.get("/api/v1/me", headers=headers).status_code == 401
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 401
    assert "logout" in [e.action for e in trail(app, me.json()["user_id"])]


def test_web_logout_revokes_the_server_side_session(app: App) -> None:
    import re

    make_user(app)
    web = create_web_app(app)
    browser = TestClient(web)
    page = browser.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    r = browser.post(
        "/login",
        data={"username": "quentin", "password": PASSWORD, "csrf_token": csrf.group(1)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    stolen = browser.cookies.get("nearfab_session")
    assert browser.get("/account", follow_redirects=False).status_code == 200
    csrf2 = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/account").text)
    assert csrf2 is not None
    browser.post("/logout", data={"csrf_token": csrf2.group(1)}, follow_redirects=False)
    # a copy of the old cookie no longer opens anything: the session row has ended
    replay = TestClient(web, cookies={"nearfab_session": stolen or ""})
    assert replay.get("/account", follow_redirects=False).status_code == 303
    [row] = run(app, lambda uow: list(uow.session.scalars(select(UserSession))))
    assert (row.kind, row.end_reason) == ("web", "logout")


# --- TOTP --------------------------------------------------------------------------------------
def enrol(app: App, user_id: str) -> str:
    actor = act(app, user_id)
    secret, uri = run(app, lambda uow: app.users.enrol_totp(uow, actor))
    assert uri.startswith("otpauth://totp/") and f"secret={secret}" in uri
    code = pyotp.TOTP(secret).at(app.clock.now())
    run(app, lambda uow: app.users.confirm_totp(uow, actor, code))
    return str(secret)


def test_totp_is_asked_at_login_once_confirmed(
    app: App, clock: ManualClock, client: TestClient
) -> None:
    user = make_user(app)
    actor = act(app, user.id)
    secret, _uri = run(app, lambda uow: app.users.enrol_totp(uow, actor))
    login(app)  # enrolled but not confirmed: not asked yet
    bad = fails(
        ValidationFailed, lambda: run(app, lambda uow: app.users.confirm_totp(uow, actor, "000000"))
    )
    assert bad.code == "totp_invalid"
    run(app, lambda uow: app.users.confirm_totp(uow, actor, pyotp.TOTP(secret).at(clock.now())))
    with app.uow() as uow:
        stored = app.users.get(uow, user.id).totp_secret
    assert stored is not None and secret not in stored  # encrypted at rest
    assert fails(Unauthenticated, lambda: login(app)).code == "totp_required"
    assert fails(Unauthenticated, lambda: login(app, totp="123456")).code == "totp_invalid"
    clock.advance(30)
    assert login(app, totp=pyotp.TOTP(secret).at(clock.now())).id == user.id
    # a code works once
    replay = pyotp.TOTP(secret).at(clock.now())
    assert fails(Unauthenticated, lambda: login(app, totp=replay)).code == "totp_invalid"
    # the API: the code in the token request
    r = client.post("/api/v1/auth/token", json={"username": "quentin", "password": PASSWORD})
    assert r.status_code == 401 and error_of(r)["code"] == "totp_required"
    clock.advance(30)
    bearer(client, "quentin", totp=pyotp.TOTP(secret).at(clock.now()))
    # enrolment cannot be restarted over an active one (the secret is never shown again)
    assert (
        fails(Conflict, lambda: run(app, lambda uow: app.users.enrol_totp(uow, actor))).field
        == "totp"
    )


def test_totp_enrolment_through_the_api(app: App, clock: ManualClock, client: TestClient) -> None:
    make_user(app)
    headers = bearer(client, "quentin")
    r = client.post("/api/v1/me/totp", headers=headers)
    assert r.status_code == 200
    secret = r.json()["secret"]
    code = pyotp.TOTP(secret).at(clock.now())
    r = client.post("/api/v1/me/totp/confirm", headers=headers, json={"code": code})
    assert r.status_code == 200 and r.json()["totp_enabled"] is True
    assert client.post("/api/v1/me/totp", headers=headers).status_code == 409


# --- Annex 11 §12.1: role grants audited --------------------------------------------------------
def test_role_changes_are_audited_with_old_and_new_lists_and_a_reason(
    app: App, client: TestClient
) -> None:
    site_a, site_b = new_site(app, "SITE-A"), new_site(app, "SITE-B")
    make_user(app, "ada", roles=["admin"], site_id=site_a)
    user = make_user(app, roles=["operator"], site_id=site_a)
    other = make_user(app, "bob", roles=["operator"], site_id=site_b)
    headers = bearer(client, "ada")
    r = client.post(
        f"/api/v1/users/{user.id}/roles",
        headers=headers,
        json={"grant": ["pharmacist"], "revoke": ["operator"], "reason": "qualified as pharmacist"},
    )
    assert r.status_code == 200 and r.json()["roles"] == ["pharmacist"]
    [row] = [e for e in trail(app, user.id) if e.action == "roles_change"]
    assert row.old == {"roles": ["operator"]}
    assert row.new == {"roles": ["pharmacist"], "granted": ["pharmacist"], "revoked": ["operator"]}
    assert row.reason == "qualified as pharmacist"
    r = client.post(f"/api/v1/users/{user.id}/roles", headers=headers, json={"grant": ["qp"]})
    assert r.status_code == 422  # no reason
    r = client.post(
        f"/api/v1/users/{user.id}/roles", headers=headers, json={"grant": ["wizard"], "reason": "x"}
    )
    assert r.status_code == 422 and error_of(r)["field"] == "roles"
    # a site's administrator manages that site's accounts only, and never their own roles
    r = client.post(
        f"/api/v1/users/{other.id}/roles", headers=headers, json={"grant": ["qp"], "reason": "x"}
    )
    assert r.status_code == 403 and error_of(r)["code"] == "other_site"
    me = client.get("/api/v1/me", headers=headers).json()
    r = client.post(
        f"/api/v1/users/{me['user_id']}/roles",
        headers=headers,
        json={"grant": ["qp"], "reason": "x"},
    )
    assert r.status_code == 409 and error_of(r)["code"] == "self"
    # the site admin's list shows their site only
    listed = client.get("/api/v1/users", headers=headers).json()
    assert {u["username"] for u in listed} == {"ada", "quentin"}
    fails(
        Refused,
        lambda: run(
            app,
            lambda uow: app.users.deactivate(
                uow, act(app, me["user_id"]), me["user_id"], reason="x"
            ),
        ),
    )
