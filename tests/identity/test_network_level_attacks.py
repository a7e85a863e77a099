"""Issue 12, item 1 (`None` never means "allowed everywhere"): network-level actions.

Sites, their lifecycle, GS1 identity and signing policy, master files, recalls, monitoring
models, platform-wide telemetry retention, and the simulated network itself are records of the
whole network. Holding the role is not enough: only a grant that reaches the network (staff of
the control site, home-less accounts) may act on them. A site's administrator, QP or planner
of a point-of-care site (GSTT-PH, a hospital pharmacy) holds the role the matrix names, and is
refused `other_site` even for their own site's entry; a control-site holder of the same role
succeeds. Through the API (and the web page where there is one), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import Forbidden
from nearfab.custody import Recall
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import MATRIX, Permission, Role
from nearfab.masterfiles import MasterFile
from nearfab.materials import MaterialLot
from nearfab.monitoring import MonitoringModel
from nearfab.network import Site
from nearfab.web.server import create_web_app

seeded = fh.seeded
P = Permission
POC = "GSTT-PH"  # a point-of-care site: a hospital pharmacy
# the attackers: holders of a role at the point-of-care site (created legitimately below)
SITE_USERS = {"admin": "poc-admin", "qp": "poc-qp", "planner": "poc-planner"}
# control-site holders of the same roles (demo accounts based at CTRL)
CONTROL_USERS = {"admin": "admin-two", "qp": "qp", "planner": "planner"}
LOT = f"HC-FIL-2.5-{POC}-001"  # the demo's lot received at the point-of-care site
PRINTER = "GSTT printer A"


@dataclass
class Net:
    app: App
    client: TestClient
    headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def post(self, username: str, url: str, body: Any = None) -> Any:
        return self.client.post(url, json=body, headers=self.headers[username])


def _token(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
def net(seeded: App) -> Iterator[Net]:
    home = fh.site_id(seeded, POC)
    for role, username in SITE_USERS.items():
        with seeded.uow() as uow:
            user = seeded.users.create_user(
                uow,
                fh.actor(seeded, "admin"),
                username=username,
                full_name=f"{role} of {POC}",
                roles=[role],
                password=fh.TEST_PASSWORD,
                home_site_id=home,
                temporary=False,
            )
        fh.approve_pending(seeded, user.id)  # qp and admin: a second network admin approves
        with seeded.uow() as uow:
            assert seeded.users.by_username(uow, username).roles == [role]  # type: ignore[union-attr]
    with TestClient(create_web_app(seeded)) as client:
        world = Net(seeded, client)
        for username in [*SITE_USERS.values(), *CONTROL_USERS.values()]:
            world.headers[username] = _token(client, username)
        yield world


def _attackers(permission: Permission) -> list[str]:
    """The point-of-care site's holders of a role the matrix gives `permission`: the refusal
    that follows is the network rule, never a missing role."""
    found = [SITE_USERS[r] for r in SITE_USERS if Role(r) in MATRIX[permission]]
    assert found, f"no site role holds {permission}"
    return found


def _controller(permission: Permission) -> str:
    return next(CONTROL_USERS[r] for r in CONTROL_USERS if Role(r) in MATRIX[permission])


def _refused_other_site(r: Any, who: str) -> None:
    assert r.status_code == 403, f"{who}: {r.status_code} {r.text}"
    assert r.json()["error"]["code"] == "other_site", f"{who}: {r.text}"


def _site(app: App, code: str = POC) -> Site:
    with app.uow() as uow:
        site = app.network.get_site(uow, code)
        uow.session.expunge(site)
        return site


def _mf(app: App, mf_id: str) -> MasterFile:
    with app.uow() as uow:
        mf = app.master_files.get(uow, mf_id)
        uow.session.expunge(mf)
        return mf


def _count(app: App, model: type[Any], *where: Any) -> int:
    with app.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _draft(app: App) -> str:
    """A new draft version of the hydrocortisone master file, by the control-site QP."""
    with app.uow() as uow:
        data = app.master_files.effective_for_code(uow, HYDROCORTISONE).content()
    data.pop("version")
    data["title"] = "Hydrocortisone printlets (network test)"
    with app.uow() as uow:
        return app.master_files.draft(uow, fh.actor(app, "qp"), data).id


def _sign(username: str) -> dict[str, str]:
    return {"username": username, "password": fh.TEST_PASSWORD, "meaning": "approval"}


# --- each network-level action: (permission, setup, request, state before/after) ----------------
@dataclass(frozen=True)
class Attack:
    permission: Permission
    url: Callable[[Net], str]
    body: Callable[[Net, str], Any]
    state: Callable[[Net], Any]  # what the action changes: unchanged after every refusal
    expected: Callable[[Any, Any], bool]  # (before, after) once the control-site holder acted
    setup: Callable[[Net], None] = lambda n: None
    ok: int = 200


def _suspend(n: Net) -> None:
    """The regulator suspended the point-of-care site; leaving it is the network's decision."""
    with n.app.uow() as uow:
        n.app.network.transition_site(
            uow,
            fh.actor(n.app, "qp"),
            fh.site_id(n.app, POC),
            "regulator_suspended",
            reason="inspection finding",
            regulatory_reference="MHRA-2026-001",
        )


def _totp_on(n: Net) -> None:
    with n.app.uow() as uow:
        n.app.network.set_signing_policy(
            uow, fh.actor(n.app, "qp"), fh.site_id(n.app, POC), totp_for_signing=True, reason="x"
        )
    with n.app.uow() as uow:
        n.app.master_files.set_signing_policy(
            uow,
            fh.actor(n.app, "qp"),
            fh.master_file_id(n.app, HYDROCORTISONE),
            totp_for_signing=True,
            reason="x",
        )


def _drafted(n: Net) -> None:
    _draft(n.app)


def _faults(n: Net) -> int:
    """Faults the printer's digital twin suffers from now on."""
    adapter = n.app.fleet.adapter_for(fh.machine(n.app, fh.machine_id(n.app, PRINTER)))
    return len(adapter._faults)  # type: ignore[attr-defined]


def _approved(n: Net) -> None:
    mf_id = _draft(n.app)
    with n.app.uow() as uow:
        n.app.master_files.approve(uow, fh.actor(n.app, "qp"), mf_id, password=fh.TEST_PASSWORD)


def _latest(n: Net) -> MasterFile:
    with n.app.uow() as uow:
        mf = uow.session.scalars(
            select(MasterFile)
            .where(MasterFile.code == HYDROCORTISONE)
            .order_by(MasterFile.version.desc())
        ).first()
        assert mf is not None
        uow.session.expunge(mf)
        return mf


def _lot(n: Net) -> tuple[str, int]:
    with n.app.uow() as uow:
        lot = uow.session.scalar(select(MaterialLot).where(MaterialLot.lot_number == LOT))
        assert lot is not None and lot.site_id == fh.site_id(n.app, POC)
        status = lot.status
    return status, _count(n.app, Recall)


def _audit_of(action: str) -> Callable[[Net], int]:
    from nearfab.identity import AuditEntry

    def count(n: Net) -> int:
        return _count(n.app, AuditEntry, AuditEntry.entity_type == action)

    return count


# a partner's EPCIS document (a wholesaler's receiving event)
PARTNER_DOC = fh.epcis_receiving_document("urn:epc:id:sgtin:0614141.107346.4242")


def _events(n: Net) -> int:
    from nearfab.custody import EpcisEvent

    return _count(n.app, EpcisEvent)


def _change_controls(n: Net) -> list[tuple[str, str]]:
    from nearfab.masterfiles import ChangeControl

    with n.app.uow() as uow:
        rows = uow.session.scalars(select(ChangeControl).order_by(ChangeControl.raised_at))
        return [(r.id, r.status) for r in rows]


def _raised(n: Net) -> None:
    """A change control of the drafted next version (docs/central-qa.md)."""
    mf_id = _draft(n.app)
    with n.app.uow() as uow:
        n.app.change_controls.raise_change(
            uow,
            fh.actor(n.app, "qp"),
            {"proposed_master_file_id": mf_id, "title": "t", "description": "d", "reason": "r"},
        )


ATTACKS: dict[str, Attack] = {
    "raise a change control of a master file": Attack(
        P.CHANGE_CONTROL_RAISE,
        setup=_drafted,
        url=lambda n: "/api/v1/change-controls",
        body=lambda n, who: {
            "proposed_master_file_id": _latest(n).id,
            "title": "new version",
            "description": "d",
            "reason": "r",
        },
        state=lambda n: len(_change_controls(n)),
        expected=lambda b, a: a == b + 1,
        ok=201,
    ),
    "approve a change control (e-signed)": Attack(
        P.CHANGE_CONTROL_APPROVE,
        setup=_raised,
        url=lambda n: f"/api/v1/change-controls/{_change_controls(n)[-1][0]}/decide",
        body=lambda n, who: {
            "approve": True,
            "reason": "impact accepted",
            "username": who,
            "password": fh.TEST_PASSWORD,
        },
        state=lambda n: _change_controls(n)[-1][1],
        expected=lambda b, a: (b, a) == ("raised", "approved"),
    ),
    "create a site": Attack(
        P.SITE_CREATE,
        url=lambda n: "/api/v1/sites",
        body=lambda n, who: {"code": "ROGUE-1", "name": "Rogue site", "kind": "clinic"},
        state=lambda n: _count(n.app, Site, Site.code == "ROGUE-1"),
        expected=lambda b, a: (b, a) == (0, 1),
        ok=201,
    ),
    "lift the regulator's suspension of its own site": Attack(
        P.SITE_STATUS,
        setup=_suspend,
        url=lambda n: f"/api/v1/sites/{fh.site_id(n.app, POC)}/status",
        body=lambda n, who: {
            "status": "paused",
            "reason": "we fixed it",
            "regulatory_reference": "MHRA-2026-001/closed",
        },
        state=lambda n: _site(n.app).status,
        expected=lambda b, a: (b, a) == ("regulator_suspended", "paused"),
    ),
    "switch off TOTP for signing at its own site": Attack(
        P.SIGNING_POLICY,
        setup=_totp_on,
        url=lambda n: f"/api/v1/sites/{fh.site_id(n.app, POC)}/signing-policy",
        body=lambda n, who: {"totp_for_signing": False, "reason": "codes are a nuisance"},
        state=lambda n: _site(n.app).totp_for_signing,
        expected=lambda b, a: (b, a) == (True, False),
    ),
    "switch off TOTP for signing a product": Attack(
        P.SIGNING_POLICY,
        setup=_totp_on,
        url=lambda n: (
            f"/api/v1/master-files/{fh.master_file_id(n.app, HYDROCORTISONE)}/signing-policy"
        ),
        body=lambda n, who: {"totp_for_signing": False, "reason": "codes are a nuisance"},
        state=lambda n: _mf(n.app, fh.master_file_id(n.app, HYDROCORTISONE)).totp_for_signing,
        expected=lambda b, a: (b, a) == (True, False),
    ),
    "inject a fault into its own site's printer": Attack(
        P.FAULT_INJECT,
        url=lambda n: f"/api/v1/machines/{fh.machine_id(n.app, PRINTER)}/faults",
        body=lambda n, who: {"kind": "nozzle_clog", "severity": 0.5},
        state=_faults,
        expected=lambda b, a: a == b + 1,
        ok=202,
    ),
    "run the simulated network": Attack(
        P.NETWORK_RUN,
        url=lambda n: "/api/v1/network/run",
        body=lambda n, who: {"until_idle": False},
        state=lambda n: None,
        expected=lambda b, a: True,  # the 200 is the proof: a step of every site's machines
    ),
    "draft a master file version": Attack(
        P.MASTER_FILE_DRAFT,
        url=lambda n: "/api/v1/master-files",
        body=lambda n, who: {
            **{
                k: v
                for k, v in _mf(n.app, fh.master_file_id(n.app, HYDROCORTISONE)).content().items()
                if k != "version"
            },
            "title": f"Hydrocortisone by {who}",
        },
        state=lambda n: _count(n.app, MasterFile, MasterFile.code == HYDROCORTISONE),
        expected=lambda b, a: a == b + 1,  # one new draft version
        ok=201,
    ),
    "approve a master file": Attack(
        P.MASTER_FILE_APPROVE,
        setup=_drafted,
        url=lambda n: f"/api/v1/master-files/{_latest(n).id}/approve",
        body=lambda n, who: _sign(who),
        state=lambda n: _latest(n).status,
        expected=lambda b, a: (b, a) == ("draft", "approved"),
    ),
    "make a master file effective": Attack(
        P.MASTER_FILE_EFFECTIVE,
        setup=_approved,
        url=lambda n: f"/api/v1/master-files/{_latest(n).id}/effective",
        body=lambda n, who: None,
        state=lambda n: _latest(n).status,
        expected=lambda b, a: (b, a) == ("approved", "effective"),
    ),
    "withdraw a master file": Attack(
        P.MASTER_FILE_WITHDRAW,
        url=lambda n: f"/api/v1/master-files/{fh.master_file_id(n.app, HYDROCORTISONE)}/withdraw",
        body=lambda n, who: {"reason": "we prefer our own recipe"},
        state=lambda n: _latest(n).status,
        expected=lambda b, a: (b, a) == ("effective", "withdrawn"),
    ),
    "recall a lot of its own site across the network": Attack(
        P.RECALL_CREATE,
        url=lambda n: "/api/v1/recalls",
        body=lambda n, who: {"lot": LOT, "reason": "suspected contamination"},
        state=_lot,
        expected=lambda b, a: (b, a) == (("approved", 0), ("recalled", 1)),
        ok=201,
    ),
    "capture a partner's EPCIS events into the network's store": Attack(
        P.EPCIS_CAPTURE,
        url=lambda n: "/api/v1/epcis/capture",
        body=lambda n, who: PARTNER_DOC,
        state=_events,
        expected=lambda b, a: a == b + 1,
        ok=201,
    ),
    "thin every site's raw telemetry": Attack(
        P.TELEMETRY_RETENTION,
        url=lambda n: "/api/v1/telemetry/retention",
        body=lambda n, who: {"older_than_days": 3650, "reason": "disk full"},
        state=_audit_of("telemetry"),
        expected=lambda b, a: a == b + 1,  # the thinning, audited
    ),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_site_holders_of_the_role_are_refused_network_level_actions(net: Net, name: str) -> None:
    attack = ATTACKS[name]
    attack.setup(net)
    before = attack.state(net)
    for who in _attackers(attack.permission):
        r = net.post(who, attack.url(net), attack.body(net, who))
        _refused_other_site(r, f"{name} as {who}")
        assert attack.state(net) == before, f"{name} as {who}: something changed"
    boss = _controller(attack.permission)
    r = net.post(boss, attack.url(net), attack.body(net, boss))
    assert r.status_code == attack.ok, f"{name} as {boss}: {r.status_code} {r.text}"
    after = attack.state(net)
    assert attack.expected(before, after), f"{name} as {boss}: {before} -> {after}"


# reports on the whole network: (method, url, permission)
REPORTS = [
    ("GET", "/api/v1/audit/verify", P.AUDIT_VERIFY),
    ("POST", "/api/v1/audit/checkpoints", P.AUDIT_VERIFY),  # signed with the control's key
    ("POST", "/api/v1/audit/checkpoints/export", P.AUDIT_VERIFY),
    ("GET", "/api/v1/custody/ledger/verify", P.LEDGER_VERIFY),
    ("GET", "/api/v1/telemetry/dead-letters", P.DEAD_LETTERS_READ),
    # the annual report to the control site's regulator (docs/central-qa.md)
    ("GET", f"/api/v1/annual-reports/{HYDROCORTISONE}/2026", P.ANNUAL_REPORT_READ),
    ("GET", f"/api/v1/annual-reports/{HYDROCORTISONE}/2026/export", P.ANNUAL_REPORT_READ),
]


def test_network_reports_are_for_the_network_and_its_auditors(net: Net) -> None:
    """A site's QP or admin does not read (or sign a checkpoint of) the whole network's audit
    chain, ledgers or unreadable telemetry; the auditor grant does, even at a site."""
    with net.app.uow() as uow:
        net.app.users.create_user(
            uow,
            fh.actor(net.app, "admin"),  # a network administrator grants auditor
            username="poc-auditor",
            full_name="Auditor of the point-of-care site",
            roles=["auditor"],
            password=fh.TEST_PASSWORD,
            home_site_id=fh.site_id(net.app, POC),
            temporary=False,
        )
    net.headers["poc-auditor"] = _token(net.client, "poc-auditor")
    for method, url, permission in REPORTS:
        for who in _attackers(permission):
            r = net.client.request(method, url, headers=net.headers[who])
            _refused_other_site(r, f"{method} {url} as {who}")
        for who in ("poc-auditor", _controller(permission)):
            r = net.client.request(method, url, headers=net.headers[who])
            assert r.status_code == 200, f"{method} {url} as {who}: {r.status_code} {r.text}"
    for page in ("/audit/verify", "/ledger"):
        for who in _attackers(P.AUDIT_VERIFY):
            assert fh.web_login(net.app, who).get(page).status_code == 403, f"{page} as {who}"
        assert fh.web_login(net.app, "qp").get(page).status_code == 200, page
    site_qp, control_qp = fh.web_login(net.app, SITE_USERS["qp"]), fh.web_login(net.app, "qp")
    assert 'id="verify-link"' not in site_qp.get("/audit").text
    assert 'id="verify-link"' in control_qp.get("/audit").text


def test_every_network_level_permission_with_a_route_is_attacked_here() -> None:
    from nearfab.identity import NETWORK_LEVEL

    attacked = {a.permission for a in ATTACKS.values()} | {
        P.MODEL_TRAIN,  # the model lifecycle test below
        P.MODEL_APPROVE,
        P.MODEL_RETIRE,
        P.SITE_GLN,  # no route: the service test below
        P.MASTER_FILE_QP_ASSIGN,  # tests/identity/test_privilege_attacks.py
        # a site's QP refused other_site, the control site's QP succeeds:
        # tests/comparability/test_api.py::test_api_attacks_on_rounds_results_and_suspensions
        P.PROFICIENCY_ROUND,
        P.PROFICIENCY_CAPA_CLOSE,
        # the pharmacy's responsible person refused other_site, the control site's succeeds:
        # tests/families/device/test_entry_points.py::test_the_api_approves_a_home_build_only_by_*
        P.BUILD_APPROVE,
        *(p for _, _, p in REPORTS),
    }
    assert attacked >= NETWORK_LEVEL, sorted(NETWORK_LEVEL - attacked)


def test_monitoring_models_are_the_networks(net: Net) -> None:
    """Training, approving and retiring a model that then judges every site's runs."""
    from tests.monitoring.test_alarms_and_models import released_runs

    released_runs(net.app, 3)
    train = {"kind": "spc", "master_file_code": HYDROCORTISONE, "machine_type": "tablet_printer"}
    for who in _attackers(P.MODEL_TRAIN):
        _refused_other_site(net.post(who, "/api/v1/monitoring/models", train), who)
    assert _count(net.app, MonitoringModel) == 0
    r = net.post(_controller(P.MODEL_TRAIN), "/api/v1/monitoring/models", train)
    assert r.status_code == 201, r.text
    model_id = r.json()["id"]
    for who in _attackers(P.MODEL_APPROVE):
        r = net.post(who, f"/api/v1/monitoring/models/{model_id}/approve", _sign(who))
        _refused_other_site(r, who)
    with net.app.uow() as uow:
        assert net.app.monitoring.get_model(uow, model_id).status == "draft"
    boss = _controller(P.MODEL_APPROVE)
    r = net.post(boss, f"/api/v1/monitoring/models/{model_id}/approve", _sign(boss))
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text
    for who in _attackers(P.MODEL_RETIRE):
        r = net.post(who, f"/api/v1/monitoring/models/{model_id}/retire", {"note": "noisy"})
        _refused_other_site(r, who)
    with net.app.uow() as uow:
        assert net.app.monitoring.get_model(uow, model_id).status == "approved"
    r = net.post(boss, f"/api/v1/monitoring/models/{model_id}/retire", {"note": "noisy"})
    assert r.status_code == 200 and r.json()["status"] == "retired", r.text


def test_a_sites_gln_is_set_by_the_network(net: Net) -> None:
    """No route sets a GLN; the service is the one door (CLI and tests)."""
    epcis = net.app.custody_chain.epcis
    site = fh.site_id(net.app, POC)
    with net.app.uow() as uow:
        before = epcis.site_location(uow, site).gln
        uow.commit()
    gln = "9506000000992"  # check digit 2: weights 3,1 from the right sum to 78
    assert gln != before
    for who in _attackers(P.SITE_GLN):
        with net.app.uow() as uow, pytest.raises(Forbidden) as refused:
            epcis.set_gln(uow, fh.actor(net.app, who), site, gln, 7)
        assert refused.value.code == "other_site"
    with net.app.uow() as uow:
        assert epcis.site_location(uow, site).gln == before
    with net.app.uow() as uow:
        epcis.set_gln(uow, fh.actor(net.app, _controller(P.SITE_GLN)), site, gln, 7)
    with net.app.uow() as uow:
        assert epcis.site_location(uow, site).gln == gln


# --- the web page: the recall form -----------------------------------------------------------
def test_the_epcis_capture_form_is_the_networks(net: Net) -> None:
    document = json.dumps(PARTNER_DOC)
    before = _events(net)
    for who in _attackers(P.EPCIS_CAPTURE):
        browser = fh.web_login(net.app, who)
        page = browser.get("/epcis")
        assert page.status_code == 200 and 'action="/epcis/capture"' not in page.text, who
        r = browser.post(
            "/epcis/capture",
            data={"document": document, "csrf_token": fh.csrf(page.text)},
            follow_redirects=True,
        )
        assert r.status_code == 403, f"{who}: {r.status_code}"
        assert _events(net) == before, who
    browser = fh.web_login(net.app, _controller(P.EPCIS_CAPTURE))
    page = browser.get("/epcis")
    assert 'action="/epcis/capture"' in page.text
    r = browser.post(
        "/epcis/capture", data={"document": document, "csrf_token": fh.csrf(page.text)}
    )
    assert r.status_code == 200, r.text
    assert _events(net) == before + 1


def test_the_recall_form_is_the_networks(net: Net) -> None:
    for who in _attackers(P.RECALL_CREATE):
        browser = fh.web_login(net.app, who)
        page = browser.get("/recalls")
        assert page.status_code == 200 and 'id="recall-form"' not in page.text, who
        r = browser.post(
            "/recalls",
            data={
                "lot": LOT,
                "reason": "suspected contamination",
                "csrf_token": fh.csrf(page.text),
            },
            follow_redirects=True,
        )
        assert r.status_code == 403, f"{who}: {r.status_code}"
        assert _lot(net) == ("approved", 0), who
    boss = _controller(P.RECALL_CREATE)
    browser = fh.web_login(net.app, boss)
    page = browser.get("/recalls")
    assert 'id="recall-form"' in page.text
    r = browser.post(
        "/recalls",
        data={"lot": LOT, "reason": "suspected contamination", "csrf_token": fh.csrf(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/recalls/"), r.text
    assert _lot(net) == ("recalled", 1)


# --- site records found role-only in the same audit: now checked against their site --------
def test_site_records_found_role_only_now_name_their_site(net: Net) -> None:
    """Machine downtime, transport times and cold-chain readings belong to a site: a
    point-of-care site's holder of the role is refused them at another site (no API route
    serves them; the services are the one door)."""
    from datetime import timedelta

    from nearfab.common.errors import ValidationFailed

    planning = net.app.scheduling.planning
    assert planning is not None
    planner = fh.actor(net.app, SITE_USERS["planner"])
    now = net.app.clock.now()
    other, own = fh.machine_id(net.app, "MAN printer A"), fh.machine_id(net.app, PRINTER)
    with net.app.uow() as uow, pytest.raises(Forbidden) as refused:
        planning.add_downtime(uow, planner, other, now, now + timedelta(hours=1), reason="x")
    assert refused.value.code == "other_site"
    with net.app.uow() as uow:
        planning.add_downtime(uow, planner, own, now, now + timedelta(hours=1), reason="x")
        uow.commit()
    with net.app.uow() as uow, pytest.raises(Forbidden) as refused:
        planning.set_transport(uow, planner, fh.site_id(net.app, "MAN-PH"), "home:M1", 30)
    assert refused.value.code == "other_site"
    with net.app.uow() as uow:
        planning.set_transport(uow, planner, fh.site_id(net.app, POC), "home:M1", 30)
        uow.commit()
    qp = fh.actor(net.app, SITE_USERS["qp"])
    with net.app.uow() as uow, pytest.raises(Forbidden) as refused:
        net.app.custody.record_temperature(
            uow, qp, unit_ids=[], site_id=fh.site_id(net.app, "MAN-PH"), readings=[]
        )
    assert refused.value.code == "other_site"
    with net.app.uow() as uow, pytest.raises(ValidationFailed) as bad:  # past the site check
        net.app.custody.record_temperature(
            uow, qp, unit_ids=[], site_id=fh.site_id(net.app, POC), readings=[]
        )
    assert bad.value.field == "readings"
