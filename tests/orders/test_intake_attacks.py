"""Prescription intake attacked the ways issue 12 describes (items 4, 11, 12, 13 and the database
file of 15): orders without an ordering site, oversized Bundles, the same prescription twice
(also at the same moment), the prescription's audit page and export. Through the services, the
API, the CLI and the web pages, on SQLite and PostgreSQL. Expected values come from the rules
in docs/prescriptions.md, not from the code's output."""

from __future__ import annotations

import copy
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from nearfab.bootstrap import App
from nearfab.common.errors import Conflict, DomainError, Forbidden, ValidationFailed
from nearfab.identity import AuditEntry, system_actor
from nearfab.orders import Order, Prescription
from nearfab.orders.fhir import SITE_SYSTEM
from nearfab.web.server import create_web_app

from .. import flow_helpers as fh

seeded = fh.seeded

RX_SYSTEM = "https://hospital.example.org/prescriptions"


# --- helpers ------------------------------------------------------------------------------------
def _medication_request(doc: dict[str, Any]) -> dict[str, Any]:
    for entry in doc["entry"]:
        if entry["resource"]["resourceType"] == "MedicationRequest":
            resource: dict[str, Any] = entry["resource"]
            return resource
    raise AssertionError("no MedicationRequest")


def prescription(app: App, value: str | None = None, **kw: Any) -> dict[str, Any]:
    """A demo Bundle for a new patient; with `value`, a prescription identifier."""
    doc = fh.bundle(app, **kw)
    if value is not None:
        _medication_request(doc)["identifier"] = [{"system": RX_SYSTEM, "value": value}]
    return doc


def from_organisation(doc: dict[str, Any], site_code: str) -> dict[str, Any]:
    """The prescriber's organisation named as an Organization with a nearfab site identifier."""
    doc = copy.deepcopy(doc)
    doc["entry"].append(
        {
            "fullUrl": "urn:uuid:org-1",
            "resource": {
                "resourceType": "Organization",
                "id": "org-1",
                "identifier": [{"system": SITE_SYSTEM, "value": site_code}],
                "name": "Prescribing hospital",
            },
        }
    )
    _medication_request(doc)["requester"] = {"reference": "urn:uuid:org-1"}
    return doc


def counts(app: App) -> tuple[int, int, int]:
    with app.uow() as uow:
        return (
            uow.session.scalar(select(func.count()).select_from(Order)) or 0,
            uow.session.scalar(select(func.count()).select_from(Prescription)) or 0,
            uow.session.scalar(select(func.count()).select_from(AuditEntry)) or 0,
        )


def login(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def web_login(app: App, username: str) -> TestClient:
    client = TestClient(create_web_app(app))
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert found, "no CSRF token on the login page"
    r = client.post(
        "/login",
        data={"username": username, "password": fh.TEST_PASSWORD, "csrf_token": found.group(1)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return client


def error_of(r: Any) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "field", "message"}, body
    error: dict[str, Any] = body["error"]
    return error


def order_site(app: App, order_id: str) -> str:
    with app.uow() as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None
        return order.site_id


@pytest.fixture
def client(seeded: App) -> TestClient:
    return TestClient(create_web_app(seeded), raise_server_exceptions=False)


# --- item 4: every order belongs to a site ------------------------------------------------------
def test_intake_without_any_site_is_refused_naming_the_field(seeded: App) -> None:
    """The CLI's and the demo's system actors, a network-wide admin and control-site staff
    used to make orders without a site, visible to every site."""
    control_clinician = fh.create_user(seeded, "ctrl-clinician", ["clinician"], "CTRL")
    for who in (
        system_actor("cli:root"),
        system_actor("demo-prescriber"),
        fh.actor(seeded, "admin"),
        control_clinician,
    ):
        before = counts(seeded)
        with pytest.raises(ValidationFailed) as caught, seeded.uow() as uow:
            seeded.orders.submit(uow, who, prescription(seeded))
        assert caught.value.field == "site", who.username
        assert "site" in caught.value.message
        assert counts(seeded) == before  # nothing half-written


def test_api_intake_without_a_site_is_refused_and_with_one_is_scoped(
    seeded: App, client: TestClient
) -> None:
    admin = login(client, "admin")
    before = counts(seeded)
    r = client.post("/api/v1/orders", json=prescription(seeded), headers=admin)
    assert r.status_code == 422, r.text
    assert error_of(r)["field"] == "site"
    assert counts(seeded) == before

    r = client.post("/api/v1/orders?site=MAN-PH", json=prescription(seeded), headers=admin)
    assert r.status_code == 201, r.text
    (order,) = r.json()["orders"]
    man = fh.site_id(seeded, "MAN-PH")
    assert order["site_id"] == man == order_site(seeded, order["id"])

    # the control site does not order: it is refused by name
    r = client.post("/api/v1/orders?site=CTRL", json=prescription(seeded), headers=admin)
    assert r.status_code == 422 and error_of(r)["field"] == "site"
    r = client.post("/api/v1/orders?site=NOWHERE", json=prescription(seeded), headers=admin)
    assert r.status_code == 422 and error_of(r)["field"] == "site"


def test_another_sites_staff_cannot_see_the_order_or_the_patient(
    seeded: App, client: TestClient
) -> None:
    """The order of MAN-PH (named at intake) is not another site's, patient identity included."""
    pharm_man = fh.create_user(seeded, "pharm-man", ["pharmacist"], "MAN-PH")
    r = client.post(
        "/api/v1/orders?site=MAN-PH", json=prescription(seeded), headers=login(client, "admin")
    )
    assert r.status_code == 201, r.text
    order_id = r.json()["orders"][0]["id"]
    with seeded.uow() as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None
        patient_id = order.patient_id

    other = login(client, "pharmacist")  # GSTT-PH
    assert order_id not in [o["id"] for o in client.get("/api/v1/orders", headers=other).json()]
    r = client.get(f"/api/v1/orders/{order_id}", headers=other)
    assert r.status_code in (403, 404), r.text
    r = client.get(f"/api/v1/patients/{patient_id}/identity", headers=other)
    assert r.status_code == 403, r.text
    # the ordering site's own pharmacist does see both
    with seeded.uow() as uow:
        assert order_id in [o.id for o in seeded.orders.list_orders(uow, actor=pharm_man)]
    with seeded.uow() as uow:
        assert seeded.orders.patient_identity(uow, pharm_man, patient_id)["identifiers"]


def test_site_staff_order_for_their_own_site_only(seeded: App, client: TestClient) -> None:
    clinician = login(client, "clinician")  # GSTT-PH
    r = client.post("/api/v1/orders", json=prescription(seeded), headers=clinician)
    assert r.status_code == 201, r.text
    assert r.json()["orders"][0]["site_id"] == fh.site_id(seeded, "GSTT-PH")
    before = counts(seeded)
    r = client.post("/api/v1/orders?site=MAN-PH", json=prescription(seeded), headers=clinician)
    assert r.status_code == 403, r.text
    assert counts(seeded) == before


def test_the_prescribers_organisation_is_the_ordering_site(seeded: App) -> None:
    with seeded.uow() as uow:
        (order,) = seeded.orders.submit(
            uow, system_actor("feed"), from_organisation(prescription(seeded), "MAN-PH")
        )
    assert order.site_id == fh.site_id(seeded, "MAN-PH")
    # a named site that contradicts the organisation is refused, naming the field
    with pytest.raises(ValidationFailed) as caught, seeded.uow() as uow:
        seeded.orders.submit(
            uow,
            system_actor("feed"),
            from_organisation(prescription(seeded), "MAN-PH"),
            site_id="GSTT-PH",
        )
    assert caught.value.field == "site"
    # an organisation naming no site of the network (or the control site) is refused
    for code in ("ELSEWHERE", "CTRL"):
        with pytest.raises(ValidationFailed) as caught, seeded.uow() as uow:
            seeded.orders.submit(
                uow, system_actor("feed"), from_organisation(prescription(seeded), code)
            )
        assert caught.value.field == "Bundle.entry[1].resource.requester"


def test_the_demo_stream_orders_for_a_point_of_care_site(seeded: App) -> None:
    from nearfab.demo_loop import DemoLoop

    loop = DemoLoop(seeded, qp_password=None)
    for _ in range(3):
        loop.submit_one()
    with seeded.uow() as uow:
        orders = list(uow.session.scalars(select(Order)))
        kinds = {seeded.network.get_site(uow, o.site_id).kind for o in orders}
    assert len(orders) == 3
    assert "control" not in kinds


def test_the_database_refuses_an_order_without_a_site(seeded: App) -> None:
    with seeded.uow() as uow:
        (order,) = seeded.orders.submit(
            uow, system_actor("t"), prescription(seeded), site_id="GSTT-PH"
        )
    with pytest.raises(IntegrityError), seeded.engine.begin() as conn:
        conn.execute(text("UPDATE orders SET site_id = NULL WHERE id = :o"), {"o": order.id})
    with pytest.raises(IntegrityError), seeded.engine.begin() as conn:
        conn.execute(text("UPDATE orders SET site_id = 'site_NOPE' WHERE id = :o"), {"o": order.id})
    assert order_site(seeded, order.id) == fh.site_id(seeded, "GSTT-PH")


def test_cli_intake_needs_a_site_and_refuses_an_oversized_file(seeded: App, tmp_path: Path) -> None:
    """`nearfab order submit` runs as the local system actor: it names the site."""
    import json

    from typer.testing import CliRunner

    from nearfab.cli.main import app as cli

    runner = CliRunner()
    data_dir = str(seeded.settings.data_dir)
    env = {"NEARFAB_DATABASE_URL": seeded.settings.resolved_database_url()}
    doc = tmp_path / "rx.json"
    doc.write_text(json.dumps(prescription(seeded)))
    r = runner.invoke(cli, ["order", "submit", str(doc), "--data-dir", data_dir, "--json"], env=env)
    assert r.exit_code == 2, r.output
    assert json.loads(r.stdout)["error"]["field"] == "site"
    r = runner.invoke(
        cli,
        ["order", "submit", str(doc), "--site", "MOB-1", "--data-dir", data_dir, "--json"],
        env=env,
    )
    assert r.exit_code == 0, r.output
    (order,) = json.loads(r.stdout)["orders"]
    assert order["site_id"] == fh.site_id(seeded, "MOB-1")

    big = tmp_path / "big.json"
    with big.open("wb") as fh_:
        fh_.truncate(seeded.settings.prescription_max_body_bytes + 1)  # sparse: no real bytes
    before = counts(seeded)
    r = runner.invoke(
        cli,
        ["order", "submit", str(big), "--site", "MOB-1", "--data-dir", data_dir, "--json"],
        env=env,
    )
    assert r.exit_code == 2, r.output
    assert json.loads(r.stdout)["error"]["field"] == "FILE"
    assert counts(seeded) == before


# --- item 11: entries per Bundle --------------------------------------------------------------
def many_requests(app: App, n: int) -> dict[str, Any]:
    """One Bundle of `n` MedicationRequests for one patient."""
    doc = prescription(app)
    mr = _medication_request(doc)
    entries = [e for e in doc["entry"] if e["resource"]["resourceType"] != "MedicationRequest"]
    for i in range(n):
        again = copy.deepcopy(mr)
        again["id"] = f"rx-{i}"
        entries.append({"fullUrl": f"urn:uuid:rx-{i}", "resource": again})
    doc["entry"] = entries
    return doc


def test_a_bundle_with_too_many_entries_makes_no_order(seeded: App, client: TestClient) -> None:
    limit = seeded.settings.bundle_max_entries
    assert limit == 50  # the documented default
    before = counts(seeded)
    with pytest.raises(DomainError) as caught, seeded.uow() as uow:
        seeded.orders.submit(uow, system_actor("t"), many_requests(seeded, 2000), site_id="MOB-1")
    assert caught.value.field == "Bundle.entry" and str(limit) in caught.value.message
    assert counts(seeded) == before

    # through the API: a Bundle within the size limit but over the entry limit
    admin = login(client, "admin")
    r = client.post("/api/v1/orders?site=MOB-1", json=many_requests(seeded, limit), headers=admin)
    assert r.status_code == 422, r.text
    assert error_of(r)["field"] == "Bundle.entry"
    # the attack itself (2,000 MedicationRequests): refused whole, by size or by count
    r = client.post("/api/v1/orders?site=MOB-1", json=many_requests(seeded, 2000), headers=admin)
    assert r.status_code in (413, 422), r.text
    assert error_of(r)["code"] in ("body_too_large", "validation_failed")
    assert counts(seeded)[:2] == before[:2]

    # at the limit, it is taken whole
    r = client.post(
        "/api/v1/orders?site=MOB-1", json=many_requests(seeded, limit - 1), headers=admin
    )
    assert r.status_code == 201, r.text
    assert len(r.json()["orders"]) == limit - 1


# --- item 12: the same prescription twice -------------------------------------------------------
def test_the_same_prescription_twice_is_refused_naming_the_order(
    seeded: App, client: TestClient
) -> None:
    clinician = login(client, "clinician")
    doc = prescription(seeded, "RX-0001")
    r = client.post("/api/v1/orders", json=doc, headers=clinician)
    assert r.status_code == 201, r.text
    first = r.json()["orders"][0]["id"]
    before = counts(seeded)
    r = client.post("/api/v1/orders", json=doc, headers=clinician)
    assert r.status_code == 409, r.text
    error = error_of(r)
    assert error["code"] == "duplicate_prescription"
    assert first in error["message"] and "RX-0001" in error["message"]
    assert error["field"] == "Bundle.entry[1].resource.identifier"
    assert counts(seeded) == before
    # another sender's copy (other resource ids, same identifier and patient) is the same
    again = copy.deepcopy(doc)
    _medication_request(again)["id"] = "another-id"
    r = client.post("/api/v1/orders", json=again, headers=clinician)
    assert r.status_code == 409 and first in error_of(r)["message"]
    # the same identifier for another patient is another prescription
    r = client.post("/api/v1/orders", json=prescription(seeded, "RX-0001"), headers=clinician)
    assert r.status_code == 201, r.text


def test_a_resubmission_after_cancellation_is_explicit_and_audited(
    seeded: App, client: TestClient
) -> None:
    clinician = login(client, "clinician")
    doc = prescription(seeded, "RX-0002")
    first = client.post("/api/v1/orders", json=doc, headers=clinician).json()["orders"][0]["id"]
    # naming an order that is not cancelled does not get past the duplicate rule
    r = client.post(f"/api/v1/orders?resubmit_of={first}", json=doc, headers=clinician)
    assert r.status_code == 409, r.text
    assert error_of(r)["code"] == "not_cancelled" and error_of(r)["field"] == "resubmit_of"

    r = client.post(
        f"/api/v1/orders/{first}/cancel", json={"reason": "wrong strength"}, headers=clinician
    )
    assert r.status_code == 200, r.text
    # cancelled: still refused unless the resubmission is explicit, and the answer says how
    r = client.post("/api/v1/orders", json=doc, headers=clinician)
    assert r.status_code == 409 and f"resubmit_of={first}" in error_of(r)["message"]
    # resubmit_of naming some other order is refused by name
    other = client.post("/api/v1/orders", json=prescription(seeded), headers=clinician).json()[
        "orders"
    ][0]["id"]
    r = client.post(f"/api/v1/orders?resubmit_of={other}", json=doc, headers=clinician)
    assert r.status_code == 409, r.text

    r = client.post(f"/api/v1/orders?resubmit_of={first}", json=doc, headers=clinician)
    assert r.status_code == 201, r.text
    (second,) = r.json()["orders"]
    assert second["resubmit_of"] == first and second["id"] != first
    with seeded.uow() as uow:
        trail = list(
            uow.session.scalars(
                select(AuditEntry)
                .where(AuditEntry.entity_type == "order", AuditEntry.entity_id == first)
                .order_by(AuditEntry.seq)
            )
        )
        created = uow.session.scalar(
            select(AuditEntry).where(
                AuditEntry.entity_type == "order",
                AuditEntry.entity_id == second["id"],
                AuditEntry.action == "create",
            )
        )
    assert trail[-1].action == "resubmitted"
    assert trail[-1].new == {
        "resubmitted_as": second["id"],
        "prescription_id": trail[-1].new["prescription_id"],
    }
    assert trail[-1].actor_id == fh.actor(seeded, "clinician").user_id
    assert created is not None and created.new["resubmit_of"] == first
    # and once resubmitted, the same again is a duplicate of the new order
    r = client.post("/api/v1/orders", json=doc, headers=clinician)
    assert r.status_code == 409 and second["id"] in error_of(r)["message"]


def test_the_same_prescription_twice_in_one_bundle_is_refused(seeded: App) -> None:
    doc = prescription(seeded, "RX-0003")
    mr = _medication_request(doc)
    twin = copy.deepcopy(mr)
    twin["id"] = "twin"
    doc["entry"].append({"fullUrl": "urn:uuid:twin", "resource": twin})
    before = counts(seeded)
    with pytest.raises(ValidationFailed) as caught, seeded.uow() as uow:
        seeded.orders.submit(uow, fh.actor(seeded, "clinician"), doc)
    assert caught.value.field == "Bundle.entry[2].resource.identifier"
    assert counts(seeded) == before


def test_two_submissions_at_the_same_moment_make_one_order(seeded: App) -> None:
    """Both pass the duplicate check before either commits: the database's unique key lets one
    win; the other is refused (409), and one order exists."""
    clinician = fh.actor(seeded, "clinician")
    doc = prescription(seeded, "RX-RACE")
    # the patient exists already (a second prescription of theirs), so both race on the key
    first_rx = copy.deepcopy(doc)
    _medication_request(first_rx)["identifier"] = [{"system": RX_SYSTEM, "value": "RX-EARLIER"}]
    with seeded.uow() as uow:
        seeded.orders.submit(uow, clinician, first_rx)
    barrier = threading.Barrier(2)
    outcomes: list[object] = []
    original = seeded.orders._check_duplicates

    waited = threading.local()

    def synchronised(*args: Any, **kwargs: Any) -> Any:
        plans = original(*args, **kwargs)
        if not getattr(waited, "done", False):  # not the re-check after a lost race
            waited.done = True
            barrier.wait(timeout=30)  # both have checked: neither saw the other
        return plans

    def one() -> None:
        try:
            with seeded.uow() as uow:
                outcomes.append(seeded.orders.submit(uow, clinician, copy.deepcopy(doc)))
        except DomainError as exc:
            outcomes.append(exc)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(seeded.orders, "_check_duplicates", synchronised)
        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert len(outcomes) == 2, outcomes
    errors = [o for o in outcomes if isinstance(o, DomainError)]
    assert len(errors) == 1, outcomes
    assert isinstance(errors[0], Conflict)
    with seeded.uow() as uow:
        stored = uow.session.scalar(
            select(func.count())
            .select_from(Prescription)
            .where(Prescription.identifier_value == "RX-RACE")
        )
    assert stored == 1


def test_the_unique_key_backs_the_rule_in_the_database(seeded: App) -> None:
    with seeded.uow() as uow:
        (order,) = seeded.orders.submit(
            uow, fh.actor(seeded, "clinician"), prescription(seeded, "RX-KEY")
        )
    with seeded.uow() as uow:
        rx = uow.session.get(Prescription, order.prescription_id)
        assert rx is not None and (rx.identifier_system, rx.identifier_value) == (
            RX_SYSTEM,
            "RX-KEY",
        )
        columns = {
            c.key: getattr(rx, c.key)
            for c in Prescription.__table__.columns  # type: ignore[attr-defined]
        }
    columns["id"] = "rx_COPY"
    with pytest.raises(IntegrityError), seeded.engine.begin() as conn:
        conn.execute(Prescription.__table__.insert().values(**columns))  # type: ignore[attr-defined]


# --- item 13: the prescription's audit trail and export -----------------------------------------
def test_prescription_audit_and_export_answer_without_server_error(
    seeded: App, client: TestClient
) -> None:
    r = client.post(
        "/api/v1/orders", json=prescription(seeded, "RX-AUDIT"), headers=login(client, "clinician")
    )
    order_id = r.json()["orders"][0]["id"]
    with seeded.uow() as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None
        rx_id = order.prescription_id
    auditor = login(client, "auditor")
    r = client.get(f"/api/v1/records/prescription/{rx_id}/audit", headers=auditor)
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["site_id"] == fh.site_id(seeded, "GSTT-PH")
    assert [e["action"] for e in view["audit_trail"]] == ["create"]
    # the received resource names the patient: encrypted, never exported
    shown = view["content"]["raw_ciphertext"]
    assert isinstance(shown, str) and "not exported" in shown
    assert "Testpatient" not in r.text
    r = client.get(f"/api/v1/records/prescription/{rx_id}/export?format=json", headers=auditor)
    assert r.status_code == 200 and r.json()["entity_id"] == rx_id
    r = client.get(f"/api/v1/records/prescription/{rx_id}/export?format=pdf", headers=auditor)
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    # a role without the permission is refused, never a server error
    r = client.get(f"/api/v1/records/prescription/{rx_id}/audit", headers=login(client, "operator"))
    assert r.status_code == 403, r.text

    web = web_login(seeded, "auditor")
    page = web.get(f"/audit/records/prescription/{rx_id}")
    assert page.status_code == 200, page.text
    assert rx_id in page.text
    export = web.get(f"/audit/records/prescription/{rx_id}/export?format=pdf")
    assert export.status_code == 200 and export.content.startswith(b"%PDF")


# --- item 15: the database file ---------------------------------------------------------------
def test_the_sqlite_file_is_created_owner_only(tmp_path: Path) -> None:
    from nearfab.config import Settings

    old = os.umask(0o022)  # the usual umask: files come out 0644 unless made otherwise
    try:
        from nearfab.bootstrap import build_app

        application = build_app(Settings(data_dir=tmp_path / "data"))
        try:
            with application.uow() as uow:
                uow.session.execute(text("SELECT 1"))
        finally:
            application.engine.dispose()
    finally:
        os.umask(old)
    db = tmp_path / "data" / "nearfab.db"
    found = [db, *(p for p in (Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())]
    for path in found:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # a file left readable by others by an older version is narrowed at the next start
    os.chmod(db, 0o644)
    application = build_app(Settings(data_dir=tmp_path / "data"))
    application.engine.dispose()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_refusals_are_forbidden_not_server_errors_for_other_roles(seeded: App) -> None:
    """Roles without ORDER_SUBMIT are refused before the site is asked for."""
    with pytest.raises(Forbidden), seeded.uow() as uow:
        seeded.orders.submit(uow, fh.actor(seeded, "operator"), prescription(seeded))


def test_a_practitioner_roles_organisation_is_the_ordering_site(seeded: App) -> None:
    doc = from_organisation(prescription(seeded), "MOB-1")
    doc["entry"].append(
        {
            "fullUrl": "urn:uuid:role-1",
            "resource": {
                "resourceType": "PractitionerRole",
                "id": "role-1",
                "organization": {"reference": "urn:uuid:org-1"},
            },
        }
    )
    _medication_request(doc)["requester"] = {"reference": "urn:uuid:role-1"}
    with seeded.uow() as uow:
        (order,) = seeded.orders.submit(uow, system_actor("feed"), doc)
    assert order.site_id == fh.site_id(seeded, "MOB-1")


def test_another_sites_pharmacist_cannot_read_the_prescription_or_patient_trail(
    seeded: App, client: TestClient
) -> None:
    """A prescription and a patient have no site column: their trails used to be open to
    every holder of audit.read (a pharmacist at any site)."""
    r = client.post(
        "/api/v1/orders?site=MAN-PH",
        json=prescription(seeded, "RX-MAN"),
        headers=login(client, "admin"),
    )
    assert r.status_code == 201, r.text
    with seeded.uow() as uow:
        order = uow.session.get(Order, r.json()["orders"][0]["id"])
        assert order is not None
        rx_id, patient_id = order.prescription_id, order.patient_id
    gstt_pharmacist = login(client, "pharmacist")
    for path in (
        f"/api/v1/records/prescription/{rx_id}/audit",
        f"/api/v1/records/prescription/{rx_id}/export?format=json",
        f"/api/v1/records/patient/{patient_id}/audit",
    ):
        r = client.get(path, headers=gstt_pharmacist)
        assert r.status_code in (403, 404), (path, r.text)
        assert "RX-MAN" not in r.text
    auditor = login(client, "auditor")  # reads the network
    assert client.get(f"/api/v1/records/patient/{patient_id}/audit", headers=auditor).is_success
    web = web_login(seeded, "pharmacist")
    page = web.get(f"/audit/records/prescription/{rx_id}")
    assert page.status_code in (403, 404) and "RX-MAN" not in page.text
