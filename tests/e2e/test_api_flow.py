"""One prescription through the REST API, FHIR JSON to dispensed, checking the batch record,
the audit trail, the signature and the label at every step (runs on SQLite and PostgreSQL)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nearfab.bootstrap import App
from nearfab.common.canonical import canonical_json, sha256_hex
from nearfab.custody import decode_datamatrix, parse_scan
from nearfab.demo import prescription_bundle
from nearfab.production import SignedTicket, verify_ticket
from nearfab.web.server import create_web_app

from .. import flow_helpers as fh
from ..conftest import TEST_PASSWORD


def _login(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _audit(client: TestClient, h: dict[str, str], kind: str, ident: str) -> list[dict[str, Any]]:
    """One record's trail, oldest first, read by the auditor: `h` (who acts at that step of the
    flow) may not hold Permission.AUDIT_READ."""
    r = client.get(f"/api/v1/records/{kind}/{ident}/audit", headers=_login(client, "auditor"))
    assert r.status_code == 200, r.text
    return list(r.json()["audit_trail"])


@pytest.fixture
def client(seeded: App) -> TestClient:
    return TestClient(create_web_app(seeded))


def test_prescription_to_dispense_through_the_api(client: TestClient, seeded: App) -> None:
    today = seeded.clock.now().date()
    bundle = prescription_bundle(random.Random(3), today=today, dose_mg=2.5, days=7)

    # no token, no entry
    assert client.post("/api/v1/orders", json=bundle).status_code == 401

    # 1. the clinician sends the FHIR Bundle: stored, designed, audited
    clin = _login(client, "clinician")
    r = client.post("/api/v1/orders", json=bundle, headers=clin)
    assert r.status_code == 201, r.text
    (order,) = r.json()["orders"]
    assert order["status"] == "designed"
    assert order["units"] == 21  # 3 a day for 7 days
    assert order["design"]["target_mass_mg"] == pytest.approx(100.0)  # 2.5 mg / 0.025
    order_id = order["id"]
    trail = _audit(client, clin, "order", order_id)
    assert [e["action"] for e in trail] == ["create", "transition"]
    assert trail[1]["old"] == {"status": "received"} and trail[1]["new"]["status"] == "designed"
    assert trail[0]["at"].endswith("+00:00")

    # 2. the planner runs the network: scheduled, ticket signed, the batch record opened; the
    # machine waits for the master file's steps before it (issue 13 item 3)
    plan = _login(client, "planner")
    r = client.post("/api/v1/network/run", json={"until_idle": True}, headers=plan)
    assert r.status_code == 200, r.text
    assert r.json()["batches_completed"] == []
    (batch_id, why) = next(iter(r.json()["blocked"].items()))
    assert batch_id.startswith("bat_")
    assert "line_clearance (" in why and "filament_loaded (" in why and "not signed" in why
    op = _login(client, "operator")
    signer = {"username": "operator", "password": TEST_PASSWORD}
    r = client.post(
        f"/api/v1/batches/{batch_id}/steps/line_clearance/sign", json=signer, headers=op
    )
    assert r.status_code == 200, r.text
    loaded = {**signer, "entry": {"filament_lot": "HC-FIL-2.5-GSTT-PH-001", "mass_loaded_g": 30}}
    r = client.post(
        f"/api/v1/batches/{batch_id}/steps/filament_loaded/sign", json=loaded, headers=op
    )
    assert r.status_code == 200, r.text
    # signed but not verified by a second person: the machine still waits
    r = client.post("/api/v1/network/run", json={"until_idle": True}, headers=plan)
    assert r.json()["batches_completed"] == []
    assert r.json()["blocked"][batch_id].endswith(
        "filament_loaded (Filament lot and mass loaded on the printer) not verified by a second "
        "person"
    )
    verifier = {"username": "pharmacist", "password": TEST_PASSWORD}
    r = client.post(
        f"/api/v1/batches/{batch_id}/steps/filament_loaded/verify",
        json=verifier,
        headers=_login(client, "pharmacist"),
    )
    assert r.status_code == 200, r.text
    # the runner asked, and waited: no refusal of the batch on record
    assert not [e for e in _audit(client, plan, "batch", batch_id) if e["action"] == "refuse"]
    # signed and verified: printed, evaluated (the inspection after the run does not hold it)
    r = client.post("/api/v1/network/run", json={"until_idle": True}, headers=plan)
    assert r.status_code == 200, r.text
    assert r.json()["batches_completed"] == [batch_id]
    view = client.get(f"/api/v1/orders/{order_id}", headers=clin).json()
    assert view.get("status") == "awaiting_release", view
    (job,) = view["jobs"]
    (batch_ref,) = view["batches"]
    assert batch_ref["id"] == batch_id

    # the job ticket the machine ran is the one the control site signed
    with seeded.uow() as uow:
        ticket = SignedTicket.from_dict(seeded.scheduling.get(uow, job["id"]).ticket or {})
    verify_ticket(ticket, seeded.signer.public_key_pem, now=seeded.clock.now())
    assert job["ticket_hash"] == sha256_hex(canonical_json(ticket.payload))

    # 3. the batch record holds the machine's evidence
    # batch records are for the making site's staff and the control site, not prescribers
    assert client.get(f"/api/v1/batches/{batch_id}", headers=clin).status_code == 403
    record = client.get(f"/api/v1/batches/{batch_id}", headers=_login(client, "qp")).json()
    assert record["status"] == "completed"
    assert record["ticket_hash"] == job["ticket_hash"]
    assert record["machine"]["firmware"] == "fw 2.4.1"
    assert record["material_lot"]["lot_number"].startswith("HC-FIL-2.5-")
    assert len(record["measurements"]["unit_masses_mg"]) == record["units_made"] == 21
    assert set(record["telemetry_summary"]) == {
        "chamber_humidity_pct",
        "extrusion_pressure_kpa",
        "nozzle_temperature_c",
        "print_speed_mm_s",
    }
    steps = [s["name"] for s in record["steps"]]
    assert steps[:7] == [
        "material_dispensed",
        "run_started",
        "line_clearance",
        "filament_loaded",
        "filament_loaded_verified",
        "handed_to_machine",
        "run_finished",
    ]
    assert {"serialised", "rtrt_evaluated"} <= set(steps)
    # the operator on duty answers for the batch; the steps say the site agent pressed start
    assert record["operator"]["name"] == "Olu Operator"
    assert record["steps"][1]["actor"] == "nearfab site-agent"
    assert record["review"]["proposed_decision"] == "release"
    assert len(record["packs"]) == 1 and record["packs"][0]["status"] == "quarantine"

    # 4. no label before release
    unit_id = record["packs"][0]["id"]
    r = client.get(f"/api/v1/packs/{unit_id}/label", headers=_login(client, "pharmacist"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_released"

    # 5. the QP's queue shows it; a wrong password signs nothing (the operator signed the
    # manual steps, a second person verified the critical entry, the QP reviewed the audit trail:
    # tests/production/test_step_sequence.py and tests/quality/test_certification_controls.py)
    fh.prepare_release(seeded, batch_id)
    qp = _login(client, "qp")
    pending = client.get("/api/v1/release/pending", headers=qp).json()
    assert [p["batch_id"] for p in pending] == [batch_id]
    shown = pending[0]["record_hash"]
    stale = {
        "decision": "release",
        "password": TEST_PASSWORD,
        "meaning": "QP release",
        "record_hash": "f" * 64,
    }
    r = client.post(f"/api/v1/batches/{batch_id}/decision", json=stale, headers=qp)
    assert r.status_code == 409 and r.json()["error"]["code"] == "record_changed"
    bad = {"decision": "release", "password": "wrong-password", "meaning": "QP release"}
    r = client.post(f"/api/v1/batches/{batch_id}/decision", json=bad, headers=qp)
    assert r.status_code == 401
    assert client.get(f"/api/v1/batches/{batch_id}", headers=qp).json()["status"] == "completed"
    # a pharmacist may not certify
    ph = _login(client, "pharmacist")
    ok = {
        "decision": "release",
        "password": TEST_PASSWORD,
        "meaning": "QP release",
        "record_hash": shown,
        "username": "qp",  # the first signing of this token's session: both components
    }
    assert (
        client.post(f"/api/v1/batches/{batch_id}/decision", json=ok, headers=ph).status_code == 403
    )

    # 6. the QP releases with an e-signature bound to the batch record
    r = client.post(f"/api/v1/batches/{batch_id}/decision", json=ok, headers=qp)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "released" and r.json()["signature_valid"] is True
    record = client.get(f"/api/v1/batches/{batch_id}", headers=qp).json()
    assert record["status"] == "released"
    (sig,) = record["signatures"]
    assert sig["meaning"] == "QP release" and sig["printed_name"] == "Quentin Parr (QP)"
    assert [e["new"]["status"] for e in record["audit"] if e["action"] == "transition"] == [
        "completed",
        "released",
    ]
    assert record["packs"][0]["status"] == "released"

    # 7. the label: PNG with a GS1 DataMatrix that decodes to the pack, and a PDF
    r = client.get(f"/api/v1/packs/{unit_id}/label", params={"format": "png"}, headers=ph)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    scanned = decode_datamatrix(r.content)
    ident = parse_scan(scanned)
    assert ident.serial == record["packs"][0]["serial"]
    assert ident.batch == record["batch_number"]
    r = client.get(f"/api/v1/packs/{unit_id}/label", params={"format": "pdf"}, headers=ph)
    assert r.content.startswith(b"%PDF")

    # 8. dispense: the wrong patient is refused (and audited), the right one accepted
    patient_ref = view["patient_ref"]
    r = client.post(
        "/api/v1/dispense", json={"scan": scanned, "patient_ref": "PT-OTHER"}, headers=ph
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "wrong_patient"
    r = client.post(
        "/api/v1/dispense", json={"scan": scanned, "patient_ref": patient_ref}, headers=ph
    )
    assert r.status_code == 200, r.text
    assert r.json()["order_complete"] is True
    final = client.get(f"/api/v1/orders/{order_id}", headers=ph).json()
    assert final["status"] == "dispensed"
    statuses = [
        e["new"]["status"]
        for e in final["timeline"]
        if e["entity_type"] == "order" and e["action"] == "transition"
    ]
    assert statuses == [
        "designed",
        "scheduled",
        "in_production",
        "awaiting_release",
        "released",
        "dispensed",
    ]
    # the QP's wrong password and the pharmacist's attempt to certify are on the batch's
    # record; the dispense refusal is kept under the scan
    refusals = [
        (e["entity_type"], e["actor"]) for e in final["timeline"] if e["action"] == "refuse"
    ]
    assert refusals == [
        ("batch", "Quentin Parr (QP)"),
        ("batch", "Quentin Parr (QP)"),
        ("batch", "Phil Harmon"),
    ]
    with seeded.uow() as uow:
        from nearfab.identity import AuditEntry

        refused = (
            uow.session.query(AuditEntry).filter_by(action="refuse", entity_type="dispense").all()
        )
    assert len(refused) == 1 and "another patient" in (refused[0].reason or "")


def test_api_errors_name_the_field(client: TestClient) -> None:
    clin = _login(client, "clinician")
    r = client.post("/api/v1/orders", json={"resourceType": "MedicationRequest"}, headers=clin)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "fhir_invalid" and error["field"]


def test_openapi_lists_the_api(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/api/v1/orders",
        "/api/v1/release/pending",
        "/api/v1/dispense",
        "/api/v1/batches/{batch_id}/decision",
    ):
        assert path in paths


def test_malformed_requests_answer_in_the_error_shape(client: TestClient) -> None:
    admin = _login(client, "admin")
    r = client.post(
        "/api/v1/orders",
        content=b"{not json",
        headers={**admin, "Content-Type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "$"
    r = client.get("/api/v1/network", headers=admin)
    site_id = next(s["id"] for s in r.json() if s["code"] == "MOB-1")
    r = client.post(
        f"/api/v1/sites/{site_id}/status",
        json={"status": "closed-ish", "reason": "x"},
        headers=admin,
    )
    assert r.status_code == 422
    assert r.json()["error"] == {
        "code": "validation_failed",
        "field": "status",
        "message": "unknown status 'closed-ish'; use one of: proposed, approved, active, paused, "
        "ceased, regulator_suspended",
    }
    r = client.post("/api/v1/auth/token", json={"username": "qp"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "password"
