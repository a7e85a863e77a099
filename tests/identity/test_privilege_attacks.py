"""Issue 12, items 1-3: the privilege attacks, performed through the API and the web pages,
on SQLite and PostgreSQL (the seeded demo network of tests/flow_helpers.py).

1. A site administrator must not make or change a network-wide (home-less) account, nor a
   control-site one, nor hand out the network-reading auditor role.
2. Scope is per role grant: auditor reads the network, any other role of the same account
   acts at its own site only (a pharmacist+auditor or qp+auditor held before the rule).
3. Separation of duties: qp and admin grants, and naming a QP for a master file, wait for a
   second person (an administrator of the control site); nobody approves their own request
   or a change to their own account; auditor never goes with a role that acts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import Forbidden, Refused
from nearfab.custody.gs1 import make_identifier
from nearfab.identity import (
    ApprovalRequest,
    AuditEntry,
    Permission,
    User,
    authorize,
    can,
    system_actor,
)
from nearfab.identity.logic import Actor
from nearfab.web.server import create_web_app

seeded = fh.seeded
PASSWORD = fh.TEST_PASSWORD
NEW_PASSWORD = "another-long-secret-77"


# --- helpers ----------------------------------------------------------------------------------
def _account(
    app: App, username: str, roles: list[str], site_code: str | None, *, approve: bool = True
) -> str:
    """An account made the legitimate way (the demo admin requests, admin-two approves), with
    a password that is not temporary, so it can log in at once."""
    home = fh.site_id(app, site_code) if site_code else None
    with app.uow() as uow:
        user = app.users.create_user(
            uow,
            fh.actor(app, "admin"),
            username=username,
            full_name=username.title(),
            roles=roles,
            password=PASSWORD,
            home_site_id=home,
            temporary=False,
        )
    if approve:
        fh.approve_pending(app, user.id)
    return user.id


def _legacy_roles(app: App, username: str, roles: list[str]) -> None:
    """An account that holds roles the rules now refuse together (made before them)."""
    user = fh.actor(app, username)
    fh.edit(app, User, user.user_id, roles=sorted(roles))


@pytest.fixture
def client(seeded: App) -> Iterator[TestClient]:
    with TestClient(create_web_app(seeded)) as c:
        yield c


def _bearer(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _error(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def _browser(app: App, username: str) -> TestClient:
    browser = TestClient(create_web_app(app))
    token = _csrf(browser.get("/login").text)
    r = browser.post(
        "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return browser


def _form(browser: TestClient, url: str, page: str, data: dict[str, Any]) -> Any:
    return browser.post(
        url, data={**data, "csrf_token": _csrf(browser.get(page).text)}, follow_redirects=True
    )


def _users(app: App) -> int:
    with app.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(User)) or 0)


def _roles(app: App, username: str) -> list[str]:
    with app.uow() as uow:
        user = app.users.by_username(uow, username)
        assert user is not None
        return sorted(user.roles)


# --- 1. a site administrator cannot reach the network ------------------------------------------
def test_1_site_admin_cannot_create_or_change_network_accounts_api(
    seeded: App, client: TestClient
) -> None:
    _account(seeded, "admin-gstt", ["admin"], "GSTT-PH")
    site_admin = _bearer(client, "admin-gstt")
    before = _users(seeded)
    body = {"full_name": "Eve", "password": PASSWORD, "roles": ["planner"]}
    # a home-less account is a network account; so is one at the control site
    for extra in ({}, {"home_site_id": None}, {"home_site_id": fh.site_id(seeded, "CTRL")}):
        r = client.post(
            "/api/v1/users", headers=site_admin, json={**body, "username": "eve", **extra}
        )
        assert r.status_code == 403, (extra, r.text)
        assert _error(r)["field"] == "site_id"
    # nor a home-less administrator (the attack of the issue: then read every site)
    r = client.post(
        "/api/v1/users",
        headers=site_admin,
        json={**body, "username": "eve-admin", "roles": ["admin"]},
    )
    assert r.status_code == 403
    assert _users(seeded) == before
    # nor change the network's accounts: home-less admin and control-site admin-two
    for target in ("admin", "admin-two"):
        uid = fh.actor(seeded, target).user_id
        for path, payload in (
            ("password", {"password": NEW_PASSWORD, "reason": "take over"}),
            ("deactivate", {"reason": "take over"}),
            ("roles", {"revoke": ["admin"], "reason": "take over"}),
            ("unlock", {"reason": "take over"}),
            ("totp/reset", {"reason": "take over"}),
        ):
            r = client.post(f"/api/v1/users/{uid}/{path}", headers=site_admin, json=payload)
            assert r.status_code == 403, (target, path, r.text)
        assert client.get(f"/api/v1/users/{uid}", headers=site_admin).status_code == 403
    assert _roles(seeded, "admin") == ["admin"]
    # the auditor role reads every site: a site administrator cannot hand it out
    pharmacist = fh.actor(seeded, "pharmacist").user_id
    r = client.post(
        f"/api/v1/users/{pharmacist}/roles",
        headers=site_admin,
        json={"grant": ["auditor"], "reason": "wants to read the network"},
    )
    assert r.status_code in (403, 409), r.text
    assert _roles(seeded, "pharmacist") == ["pharmacist"]
    r = client.post(
        "/api/v1/users",
        headers=site_admin,
        json={
            **body,
            "username": "eve-auditor",
            "roles": ["auditor"],
            "home_site_id": fh.site_id(seeded, "GSTT-PH"),
        },
    )
    assert r.status_code == 403 and _error(r)["field"] == "roles"
    # the site administrator still runs their own site
    r = client.post(
        "/api/v1/users",
        headers=site_admin,
        json={**body, "username": "gstt-planner", "home_site_id": fh.site_id(seeded, "GSTT-PH")},
    )
    assert r.status_code == 201, r.text
    # and a network administrator may make a network account
    r = client.post(
        "/api/v1/users",
        headers=_bearer(client, "admin-two"),
        json={**body, "username": "network-planner"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["home_site_id"] is None


def test_1_site_admin_cannot_create_or_change_network_accounts_web(seeded: App) -> None:
    _account(seeded, "admin-gstt", ["admin"], "GSTT-PH")
    browser = _browser(seeded, "admin-gstt")
    before = _users(seeded)
    r = _form(
        browser,
        "/users",
        "/users",
        {
            "username": "eve",
            "full_name": "Eve",
            "password": PASSWORD,
            "roles": ["admin"],
            "home_site_id": "",
        },
    )
    assert "Not created" in r.text
    assert _users(seeded) == before
    target = fh.actor(seeded, "admin").user_id
    r = _form(
        browser,
        f"/users/{target}/password",
        "/users",
        {"password": NEW_PASSWORD, "reason": "take over"},
    )
    assert "Refused" in r.text or r.status_code in (403, 404)  # refused, or not even shown
    r = _form(browser, f"/users/{target}/deactivate", "/users", {"reason": "take over"})
    assert "Refused" in r.text or r.status_code in (403, 404)  # refused, or not even shown
    with seeded.uow() as uow:
        admin = seeded.users.get(uow, target)
        assert admin.active and not admin.must_change_password


def test_1_none_is_never_allowed_everywhere(seeded: App) -> None:
    """A record of no site belongs to the network; `None` among the sharing sites opens
    nothing (every `site_id=None` and `one_of` with None in the code)."""
    pharmacist = fh.actor(seeded, "pharmacist")
    gstt = fh.site_id(seeded, "GSTT-PH")
    with pytest.raises(Forbidden):
        authorize(pharmacist, Permission.DISPENSE, site_id=None)
    with pytest.raises(Forbidden):
        authorize(pharmacist, Permission.PATIENT_IDENTITY_READ, one_of={None})
    with pytest.raises(Forbidden):
        authorize(pharmacist, Permission.TRACE_READ, one_of=[None, fh.site_id(seeded, "MAN-PH")])
    authorize(pharmacist, Permission.TRACE_READ, one_of=[None, gstt])
    assert not can(pharmacist, Permission.DISPENSE, site_id=None)
    # a network actor reaches a record of no site
    authorize(fh.actor(seeded, "qp"), Permission.RELEASE_DECIDE, site_id=None)


# --- 2. scope is per role grant ------------------------------------------------------------------
def _released_pack(app: App) -> tuple[str, str, str]:
    """(scan, patient ref, patient id) of a released pack made for GSTT-PH."""
    batch_id = fh.make_batch(app)
    fh.release(app, batch_id)
    batch = fh.batch(app, batch_id)
    with app.uow() as uow:
        unit = app.custody.units_of_batch(uow, batch_id)[0]
        order = app.orders.get(uow, batch.order_id)
        ref = app.orders.patient(uow, order.patient_id).ref
        ident = make_identifier(unit.gtin, unit.serial, unit.batch_number, unit.expiry)
        return "]d2" + ident.datamatrix_data(), ref, order.patient_id


def test_2_auditor_grant_does_not_widen_a_pharmacist(seeded: App, client: TestClient) -> None:
    scan, ref, patient_id = _released_pack(seeded)
    # a pharmacist of another site who (from before the rule) also holds auditor
    _account(seeded, "pharm-man", ["pharmacist"], "MAN-PH")
    _legacy_roles(seeded, "pharm-man", ["pharmacist", "auditor"])
    headers = _bearer(client, "pharm-man")
    r = client.get(f"/api/v1/patients/{patient_id}/identity", headers=headers)
    assert r.status_code == 403, r.text
    r = client.post("/api/v1/dispense", headers=headers, json={"scan": scan, "patient_ref": ref})
    assert r.status_code == 403, r.text
    # the auditor grant still reads the network (the audit trail of the other site)
    r = client.get(
        "/api/v1/audit", headers=headers, params={"site_id": fh.site_id(seeded, "GSTT-PH")}
    )
    assert r.status_code == 200, r.text
    # the site's own pharmacist dispenses it
    r = client.post(
        "/api/v1/dispense",
        headers=_bearer(client, "pharmacist"),
        json={"scan": scan, "patient_ref": ref},
    )
    assert r.status_code == 200, r.text


def test_2_auditor_grant_does_not_widen_a_qp(seeded: App, client: TestClient) -> None:
    batch_id = fh.make_batch(seeded)  # made at GSTT-PH, ready for release
    fh.prepare_release(seeded, batch_id)
    _account(seeded, "qp-man", ["qp"], "MAN-PH")
    _legacy_roles(seeded, "qp-man", ["qp", "auditor"])
    r = client.post(
        f"/api/v1/batches/{batch_id}/decision",
        headers=_bearer(client, "qp-man"),
        json={
            "decision": "release",
            "password": PASSWORD,
            "username": "qp-man",
            "meaning": "QP certification",
        },
    )
    assert r.status_code == 403, r.text
    assert fh.batch(seeded, batch_id).status != "released"


def test_2_scope_is_per_grant_in_the_matrix(seeded: App) -> None:
    man = fh.site_id(seeded, "MAN-PH")
    gstt = fh.site_id(seeded, "GSTT-PH")
    mixed = Actor("usr_x", "mixed", "Mixed", roles=("pharmacist", "auditor"), site_id=man)
    with pytest.raises(Forbidden):
        authorize(mixed, Permission.DISPENSE, site_id=gstt)
    authorize(mixed, Permission.AUDIT_READ, site_id=gstt)  # the auditor grant reads it
    authorize(mixed, Permission.DISPENSE, site_id=man)
    control_qp = fh.actor(seeded, "qp")  # QPs of the control site act network-wide
    authorize(control_qp, Permission.RELEASE_DECIDE, site_id=gstt)


# --- 3. separation of duties --------------------------------------------------------------------
def test_3_qp_grant_needs_a_second_control_site_admin_api(seeded: App, client: TestClient) -> None:
    admin, admin_two = _bearer(client, "admin"), _bearer(client, "admin-two")
    r = client.post(
        "/api/v1/users",
        headers=admin,
        json={
            "username": "qp-new",
            "full_name": "Quinn New",
            "roles": ["qp"],
            "password": PASSWORD,
            "home_site_id": fh.site_id(seeded, "CTRL"),
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["roles"] == []  # not a QP yet
    [pending] = r.json()["pending_approvals"]
    assert (pending["kind"], pending["role"], pending["status"]) == ("role_grant", "qp", "pending")
    # the requester cannot approve their own request
    r = client.post(
        f"/api/v1/approvals/{pending['id']}/approve", headers=admin, json={"reason": "ok"}
    )
    assert r.status_code == 409 and _error(r)["code"] == "own_request"
    # a site administrator is not a second person for this
    _account(seeded, "admin-gstt", ["admin"], "GSTT-PH")
    r = client.post(
        f"/api/v1/approvals/{pending['id']}/approve",
        headers=_bearer(client, "admin-gstt"),
        json={"reason": "ok"},
    )
    assert r.status_code == 403 and _error(r)["code"] == "not_network_admin"
    # nor is the qp-to-be, nor anyone without admin
    assert _roles(seeded, "qp-new") == []
    listed = client.get("/api/v1/approvals", headers=admin_two).json()
    assert pending["id"] in {row["id"] for row in listed}
    r = client.post(
        f"/api/v1/approvals/{pending['id']}/approve",
        headers=admin_two,
        json={"reason": "licence checked"},
    )
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert _roles(seeded, "qp-new") == ["qp"]
    r = client.post(
        f"/api/v1/approvals/{pending['id']}/approve", headers=admin_two, json={"reason": "x"}
    )
    assert r.status_code == 409  # decided once
    with seeded.uow() as uow:
        steps = uow.session.scalars(
            select(AuditEntry.action)
            .where(
                AuditEntry.entity_type == "approval_request", AuditEntry.entity_id == pending["id"]
            )
            .order_by(AuditEntry.seq)
        ).all()
    assert list(steps)[:2] == ["create", "transition"]


def test_3_nobody_approves_a_grant_to_themselves(seeded: App, client: TestClient) -> None:
    admin_two = fh.actor(seeded, "admin-two").user_id
    r = client.post(
        f"/api/v1/users/{admin_two}/grant-requests",
        headers=_bearer(client, "admin"),
        json={"role": "qp", "reason": "also certifies"},
    )
    assert r.status_code == 201, r.text
    r = client.post(
        f"/api/v1/approvals/{r.json()['id']}/approve",
        headers=_bearer(client, "admin-two"),
        json={"reason": "me"},
    )
    assert r.status_code == 409 and _error(r)["code"] == "self"
    assert _roles(seeded, "admin-two") == ["admin"]
    # and nobody asks for roles for themselves
    me = fh.actor(seeded, "admin").user_id
    r = client.post(
        f"/api/v1/users/{me}/grant-requests",
        headers=_bearer(client, "admin"),
        json={"role": "qp", "reason": "me"},
    )
    assert r.status_code == 409


def test_3_admin_cannot_name_a_qp_alone(seeded: App, client: TestClient) -> None:
    qp_two = _account(seeded, "qp-two", ["qp"], "CTRL")
    admin = _bearer(client, "admin")
    code = "MF-HC-PRINTLET"
    with seeded.uow() as uow:
        code = seeded.master_files.list_all(uow)[0].code
    r = client.post(
        f"/api/v1/master-files/{code}/qps",
        headers=admin,
        json={"user": "qp-two", "reason": "second QP"},
    )
    assert r.status_code == 201 and r.json()["status"] == "pending", r.text
    request_id = r.json()["id"]
    # master files belong to the network: a site administrator does not even ask
    _account(seeded, "admin-gstt", ["admin"], "GSTT-PH")
    r = client.post(
        f"/api/v1/master-files/{code}/qps",
        headers=_bearer(client, "admin-gstt"),
        json={"user": "qp-two", "reason": "my QP"},
    )
    assert r.status_code == 403 and _error(r)["code"] == "other_site"
    active = client.get(f"/api/v1/master-files/{code}/qps?active=true", headers=admin).json()
    assert qp_two not in {row["user_id"] for row in active}
    r = client.post(f"/api/v1/approvals/{request_id}/approve", headers=admin, json={"reason": "x"})
    assert r.status_code == 409 and _error(r)["code"] == "own_request"
    r = client.post(
        f"/api/v1/approvals/{request_id}/approve",
        headers=_bearer(client, "qp-two"),
        json={"reason": "x"},
    )
    assert r.status_code == 403
    r = client.post(
        f"/api/v1/approvals/{request_id}/refuse",
        headers=_bearer(client, "admin-two"),
        json={"reason": "not on the licence"},
    )
    assert r.status_code == 200 and r.json()["status"] == "refused"
    active = client.get(f"/api/v1/master-files/{code}/qps?active=true", headers=admin).json()
    assert qp_two not in {row["user_id"] for row in active}


def test_3_auditor_never_with_an_acting_role(seeded: App, client: TestClient) -> None:
    admin_two = _bearer(client, "admin-two")
    r = client.post(
        "/api/v1/users",
        headers=admin_two,
        json={
            "username": "aud-pharm",
            "full_name": "Aud Pharm",
            "roles": ["auditor", "pharmacist"],
            "password": PASSWORD,
            "home_site_id": fh.site_id(seeded, "GSTT-PH"),
        },
    )
    assert r.status_code == 409 and _error(r)["code"] == "auditor_with_acting_role"
    assert _error(r)["field"] == "roles"
    auditor = fh.actor(seeded, "auditor").user_id
    r = client.post(
        f"/api/v1/users/{auditor}/roles",
        headers=admin_two,
        json={"grant": ["pharmacist"], "reason": "help out"},
    )
    assert r.status_code == 409 and _error(r)["code"] == "auditor_with_acting_role"
    assert _roles(seeded, "auditor") == ["auditor"]


def test_3_system_components_grant_qp_only_at_bootstrap(seeded: App) -> None:
    """The CLI without --user acts as a system component: with two network administrators in
    place it cannot make a QP any more (the bootstrap path is closed)."""
    cli = system_actor("cli:root")
    with pytest.raises(Refused) as refused, seeded.uow() as uow:
        seeded.users.create_user(
            uow,
            cli,
            username="qp-sneaky",
            full_name="Sneaky",
            roles=["qp"],
            password=PASSWORD,
            home_site_id=fh.site_id(seeded, "CTRL"),
        )
    assert refused.value.code == "approval_required" and refused.value.field == "roles"
    with seeded.uow() as uow:
        assert seeded.users.by_username(uow, "qp-sneaky") is None
    # and the demo's own QP went through a request approved by the second administrator
    with seeded.uow() as uow:
        qp = fh.actor(seeded, "qp").user_id
        approved = uow.session.scalars(
            select(ApprovalRequest).where(
                ApprovalRequest.subject_user_id == qp, ApprovalRequest.kind == "role_grant"
            )
        ).all()
    assert [(a.role, a.status) for a in approved] == [("qp", "approved")]
    assert approved[0].requested_by != approved[0].decided_by


def test_3_approval_through_the_web_pages(seeded: App) -> None:
    _account(seeded, "qp-web", ["qp"], "CTRL", approve=False)
    with seeded.uow() as uow:
        [pending] = seeded.users.pending_for(uow, fh.actor(seeded, "qp-web").user_id)
    requester = _browser(seeded, "admin")
    page = requester.get("/users")
    assert pending.id in page.text
    r = _form(requester, f"/users/approvals/{pending.id}/approve", "/users", {"reason": "ok"})
    assert "Refused" in r.text
    assert _roles(seeded, "qp-web") == []
    second = _browser(seeded, "admin-two")
    r = _form(second, f"/users/approvals/{pending.id}/approve", "/users", {"reason": "checked"})
    assert "approved" in r.text
    assert _roles(seeded, "qp-web") == ["qp"]


def test_3_cli_requests_and_second_admin_approves(
    seeded: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nearfab users`: the host's operator (no --user) cannot make a QP once two network
    administrators exist; an admin requests, another approves, from the CLI."""
    import json

    from typer.testing import CliRunner

    from nearfab.cli.main import app as cli

    monkeypatch.setenv(
        "NEARFAB_DATABASE_URL", str(seeded.engine.url.render_as_string(hide_password=False))
    )
    monkeypatch.setenv("NEARFAB_PASSWORD_MAX_AGE_DAYS", "3650")  # the CLI runs on the real clock
    runner = CliRunner()
    base = ["--data-dir", str(seeded.settings.data_dir), "users"]
    made = runner.invoke(
        cli,
        [
            *base,
            "create",
            "qp-cli",
            "--name",
            "Q Cli",
            "--role",
            "qp",
            "--new-password",
            PASSWORD,
            "--json",
        ],
    )
    assert made.exit_code != 0
    assert json.loads(made.stdout)["error"]["code"] == "approval_required"
    _account(seeded, "qp-cli", ["planner"], "CTRL")
    admin = ["--user", "admin", "--password", PASSWORD]
    asked = runner.invoke(
        cli,
        [*base, "request-grant", "qp-cli", "--role", "qp", "--reason", "new QP", *admin, "--json"],
    )
    assert asked.exit_code == 0, asked.output
    request_id = json.loads(asked.stdout)["id"]
    own = runner.invoke(cli, [*base, "approve", request_id, "--reason", "ok", *admin, "--json"])
    assert own.exit_code != 0 and json.loads(own.stdout)["error"]["code"] == "own_request"
    listed = runner.invoke(cli, [*base, "requests", *admin, "--json"])
    assert request_id in {r["id"] for r in json.loads(listed.stdout)}
    second = ["--user", "admin-two", "--password", PASSWORD]
    done = runner.invoke(cli, [*base, "approve", request_id, "--reason", "ok", *second, "--json"])
    assert done.exit_code == 0, done.output
    assert _roles(seeded, "qp-cli") == ["planner", "qp"]
