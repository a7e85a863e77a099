"""The cell therapy flow end to end (issue 15 part 2), on SQLite and PostgreSQL, with the demo's
cell product (nearfab.demo: MF-CART-CMF, a cell_micro_factory at GSTT-PH).

A FHIR MedicationRequest with a dose per kg of body weight and the patient's weight as an
Observation goes through the REST API: designed, scheduled with a collection, made by the
micro-factory's twin (a run of days), released by the QP with sterility pending, labelled with the
patient's DIN, passed along the chain of identity (hand-overs scanned on both sides, the
cryostore's log, thawed), handed over for infusion; sterility then reads positive: a deviation
and a notice to the prescriber's site. Before the run: the clinician signs the patient's
eligibility and consent, and the collection is recorded with the patient's identifier and the
DIN scanned off the bag; the run is refused until then. Every hand-over scans the DIN on both
sides (either form: data structure 001 or the label text with its check character K) and the
bedside hand-over the patient too; a wrong DIN, a wrong K or another patient holds the bag
until a QP judges it. The CLI (in process) submits, shows and releases. Each
refusal is tested: a dose outside the envelope, a dose in mg, an out-of-specification batch
released without the physician's request and the QP's signature, and a run whose culture
failed.

Hand-worked design of the demo product (docs/cell-therapy.md, the envelope's worked example):
2e6 viable cells/kg × 70 kg = 1.4e8 cells (the dose); ÷ process yield 0.8 = 1.75e8 to harvest;
logistic growth from 1e7 seeded cells, K = 1e7 cells/mL × 200 mL = 2e9, r = ln 2 × 24 / 36 per
day: t = ln[N (K - N0) / (N0 (K - N))] / r = ln[1.75e8 × 1.99e9 / (1e7 × 1.825e9)] / 0.4621
= 6.38 days -> 7 days of expansion; medium 200 mL + 100 mL/day × 7 = 900 mL; one bag
(1.4e8 / 2e6 per mL = 70 mL <= 100 mL).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nearfab.bootstrap import App
from nearfab.common.errors import Refused
from nearfab.custody import decode_datamatrix, make_identifier
from nearfab.demo import CELL_MACHINE, cell_therapy_bundle
from nearfab.production.machines import Fault
from nearfab.web.server import create_web_app

from .. import cli_helpers
from .. import flow_helpers as fh
from ..conftest import TEST_PASSWORD
from ..families.cell_therapy.collect import record_collection

CELLS = "{cells}"
# ISBT 128 ST-001 Appendix A: the DIN G1234 17 654321 (flags 00) has keyboard entry check
# character A; as scanned, data structure 001 is "=" + DIN + flags
DIN = "=G12341765432100"
DIN_ON_LABEL = "DIN G1234 17 654321 [A]"
DIN_TYPED = "G1234 17 654321 [A]"  # the label's text, typed with its check character
# ST-001 §7.5.1.1: A9998 18 123456 has K = N: another patient's collection
OTHER_DIN = "A9998 18 123456 N"
WRONG_K = "G1234 17 654321 [B]"  # a keyboard entry error: K of G1234 17 654321 is A


def _login(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _signed(username: str) -> dict[str, str]:
    """The signature components of a session's first signing: user ID and password."""
    return {"username": username, "password": TEST_PASSWORD}


@pytest.fixture
def client(seeded: App) -> TestClient:
    return TestClient(create_web_app(seeded))


def _bundle(app: App, seed: int, **kwargs: Any) -> dict[str, Any]:
    return cell_therapy_bundle(random.Random(seed), today=app.clock.now().date(), **kwargs)


def _submit(client: TestClient, bundle: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/api/v1/orders", json=bundle, headers=_login(client, "clinician"))
    assert r.status_code == 201, r.text
    (order,) = r.json()["orders"]
    return dict(order)


def _made(
    app: App,
    order_id: str,
    fault: Fault | None = None,
    collect: Callable[[str], Any] | None = None,
) -> str:
    """Schedule the order, record its collection on the booked day (by `collect`, else through
    the service), ticket it, and run the micro-factory (with `fault` injected)."""
    job_id = fh.schedule(app, order_id)
    with app.uow() as uow:  # on the booked day: the collection, then the run
        booked = app.scheduling.collections.open_for(uow, order_id)
        assert booked is not None
        wait = (booked.collection_at - app.clock.now()).total_seconds()
    app.clock.advance(max(wait, 0.0))  # type: ignore[attr-defined]
    (collect or (lambda order: record_collection(app, order)))(order_id)
    fh.issue_ticket(app, job_id)
    machine = fh.machine(app, fh.machine_id(app, CELL_MACHINE))
    app.fleet.clear_faults(machine)
    if fault is not None:
        app.fleet.inject_fault(machine, fault)
    batch_id = fh.start(app, job_id)
    fh.finish(app, batch_id)
    app.fleet.clear_faults(machine)
    return batch_id


def test_a_cell_product_from_prescription_to_infusion_and_a_late_sterility_failure(
    client: TestClient, seeded: App
) -> None:
    # 1. the clinician sends the prescription: a dose per kg and the patient's weight
    bundle = _bundle(seeded, 1, dose_per_kg=2.0e6, weight_kg=70.0, din=DIN)
    order = _submit(client, bundle)
    assert order["status"] == "designed", order
    assert (order["dose_value"], order["dose_unit"], order["units"]) == (1.4e8, CELLS, 1)
    design = order["design"]
    assert design["target_cells"] == pytest.approx(1.4e8)
    assert design["harvest_cells"] == pytest.approx(1.75e8)
    assert design["expansion_days"] == 7
    assert design["bags"] == 1 and design["infusion_volume_ml"] == pytest.approx(70.0)
    assert design["medium_ml"] == pytest.approx(900.0)
    order_id = order["id"]

    # 2. scheduled with a collection: 24 h from collection to seeding, 7 days of expansion,
    # 48 h from harvest to infusion = 240 h from collection to administration
    planner = _login(client, "planner")
    job_id = fh.schedule(seeded, order_id)
    r = client.get(f"/api/v1/plan/collections/{order_id}", headers=planner)
    assert r.status_code == 200, r.text
    booked = r.json()["current"]
    assert booked["status"] == "booked" and booked["machine"] == CELL_MACHINE
    assert booked["collection_to_administration_h"] == pytest.approx(240.0)
    assert booked["job_id"] == job_id

    # 3. no run before the collection; no collection before eligibility and consent
    fh.issue_ticket(seeded, job_id)
    with pytest.raises(Refused) as caught:
        fh.start(seeded, job_id)
    assert caught.value.code == "collection_not_recorded"
    clinician = _login(client, "clinician")
    view = client.get(f"/api/v1/orders/{order_id}", headers=clinician).json()
    collected = {"patient": view["patient_ref"], "identifier": DIN_TYPED}
    r = client.post(
        f"/api/v1/plan/collections/{order_id}/collected", json=collected, headers=clinician
    )
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "pre_collection_missing"
    assert r.json()["error"]["field"] == "eligibility"
    for kind, reference in (
        ("eligibility", "apheresis eligibility assessment EA-2026-117"),
        ("consent", "CAR-T consent form v3.1 (2026-09)"),
    ):
        r = client.post(
            f"/api/v1/plan/collections/{order_id}/pre-collection",
            json={
                "kind": kind,
                "reference": reference,
                "statement": f"{kind} confirmed with the patient",
                **_signed("clinician"),
            },
            headers=clinician,
        )
        assert r.status_code == 201, r.text
        assert r.json()["signature_id"] and r.json()["recorded_by_name"] == "Dr Clare Nice"
    r = client.get(f"/api/v1/plan/collections/{order_id}/pre-collection", headers=clinician)
    assert r.json()["missing"] == [] and r.json()["required"] == ["eligibility", "consent"]
    # another patient's pseudonym, another collection's DIN: refused, nothing recorded
    for body, code, field in (
        ({**collected, "patient": "PT-NOT-THIS-ONE"}, "wrong_patient", "patient"),
        ({**collected, "identifier": OTHER_DIN}, "identity_mismatch", "identifier"),
        ({**collected, "identifier": WRONG_K}, "isbt128_invalid", "identifier.check_character"),
    ):
        r = client.post(
            f"/api/v1/plan/collections/{order_id}/collected", json=body, headers=clinician
        )
        assert r.status_code in (409, 422), r.text
        assert (r.json()["error"]["code"], r.json()["error"]["field"]) == (code, field)
    r = client.post(
        f"/api/v1/plan/collections/{order_id}/collected", json=collected, headers=clinician
    )
    assert r.status_code == 200, r.text
    # the bag's DIN typed from its label binds as data structure 001, the prescription's DIN
    assert r.json()["chain_identifier"] == DIN and r.json()["collected_at"]

    # the micro-factory runs the ticket: 7 culture days, one bag
    batch_id = fh.start(seeded, job_id)
    fh.finish(seeded, batch_id)
    qp = _login(client, "qp")
    record = client.get(f"/api/v1/batches/{batch_id}", headers=qp).json()
    assert record["status"] == "completed" and record["units_made"] == 1
    made = record["measurements"]
    assert made["harvested"] is True and made["culture_days"] == 7 and made["bags"] == 1
    # the product holds at most the dose: min(harvest × 0.8, 1.4e8) viable cells
    assert 0 < made["viable_cells"] <= 1.4e8
    per_kg_pct = made["viable_cells"] / 70.0 / 2.0e6 * 100
    review = record["review"]
    checks = {c["name"]: c["passed"] for c in review["checks"]}
    # dose and viability from the micro-factory's counts; sterility still reading
    assert checks["viable_cell_dose"] is (80.0 <= per_kg_pct <= 120.0) is True
    assert checks["viability"] is (made["viability"] >= 0.7) is True
    assert checks["sterility"] is None
    assert review["proposed_decision"] == "release"
    assert review["pending_results"] == ["sterility"]

    # 4. the QP releases with sterility pending: the signature's meaning says so
    fh.prepare_release(seeded, batch_id)
    r = client.post(
        f"/api/v1/batches/{batch_id}/decision",
        json={"decision": "release", "meaning": "QP release", **_signed("qp")},
        headers=qp,
    )
    assert r.status_code == 200, r.text
    released = r.json()
    assert released["status"] == "released" and released["pending_results"] == ["sterility"]
    record = client.get(f"/api/v1/batches/{batch_id}", headers=qp).json()
    (signature,) = record["signatures"]
    assert "released with results pending: sterility" in signature["meaning"].lower()
    (pack,) = record["packs"]
    assert pack["status"] == "released"
    r = client.get(f"/api/v1/batches/{batch_id}/followups", headers=qp)
    assert [(f["test"], f["status"]) for f in r.json()] == [("sterility", "pending")]

    # 5. the label: the dose in viable cells, the dose per kg and the patient's DIN
    with seeded.uow() as uow:
        (label,) = seeded.custody.labels(uow, pack["id"])
    assert label.product_name.endswith("viable cells, autologous")
    assert "1 infusion bag; bag set 1; FOR AUTOLOGOUS USE ONLY" in label.dose_text
    assert label.details[:2] == ("2.00 x 10^6 viable cells/kg for 70 kg", DIN_ON_LABEL)
    pharmacist = _login(client, "pharmacist")
    r = client.get(
        f"/api/v1/packs/{pack['id']}/label", params={"format": "png"}, headers=pharmacist
    )
    assert r.status_code == 200, r.text
    scanned = decode_datamatrix(r.content)

    # 6. the chain of identity: each hand-over scans the bag and its DIN on both sides, the
    # cryostore's log stays below -150 °C, the bag is thawed (prepared: 180 min to infuse),
    # then handed over for infusion to the right patient. At each step a wrong reading first:
    # refused, the bag held, and a QP judges the hold before the chain goes on
    view = client.get(f"/api/v1/orders/{order_id}", headers=pharmacist).json()
    patient = view["patient_ref"]
    wrong = {
        "micro_factory": ({"received_identifier": OTHER_DIN}, "received_identifier"),
        "cryostore": ({"identifier": WRONG_K}, "identifier"),
        "infusion": ({"patient": "PT-NOT-THIS-ONE"}, "patient"),
    }
    for src, dst in (
        ("collection", "micro_factory"),
        ("micro_factory", "cryostore"),
        ("cryostore", "infusion"),
    ):
        body = {
            "scan": scanned,
            "from_step": src,
            "to_step": dst,
            "received_scan": scanned,
            "identifier": DIN,
            "received_identifier": DIN_TYPED,
        }
        if dst == "infusion":
            body["patient"] = patient
        change, field = wrong[dst]
        seeded.clock.advance(30 * 60)  # type: ignore[attr-defined]  # the bag moves on
        r = client.post("/api/v1/hand-overs", json={**body, **change}, headers=pharmacist)
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        code = "wrong_patient" if field == "patient" else "identity_mismatch"
        assert (error["code"], error["field"]) == (code, field), error
        chain = client.get(f"/api/v1/packs/{pack['id']}/chain", headers=pharmacist).json()
        hold = chain["holds"][-1]
        assert hold["decision"] is None and dst in hold["reason"]
        r = client.post("/api/v1/hand-overs", json=body, headers=pharmacist)
        assert r.status_code == 409 and r.json()["error"]["code"] == "held", r.text
        r = client.post(
            f"/api/v1/holds/{hold['id']}/judge",
            json={"decision": "resume", "reason": "the right bag, misread; checked again"},
            headers=qp,
        )
        assert r.status_code == 200, r.text
        seeded.clock.advance(10 * 60)  # type: ignore[attr-defined]
        r = client.post("/api/v1/hand-overs", json=body, headers=pharmacist)
        assert r.status_code == 201, r.text
        accepted = r.json()
        assert accepted["outcome"] == "accepted"
        assert accepted["patient_checked"] is (dst == "infusion")
    # every hand-over is an EPCIS ObjectEvent of the bag: receiving, storing, picking (CBV),
    # and each refused one a holding event
    r = client.get(
        "/api/v1/epcis/events",
        params={"epc": f"https://id.gs1.org/01/{pack['gtin']}/21/{pack['serial']}"},
        headers=qp,
    )
    assert r.status_code == 200, r.text
    steps = [e["bizStep"].rsplit("/", 1)[-1] for e in r.json()["epcisBody"]["queryResults"]
             ["resultsBody"]["eventList"]]  # fmt: skip
    handed = [s for s in steps if s in ("receiving", "storing", "picking", "holding")]
    assert handed == ["holding", "receiving", "holding", "storing", "holding", "picking"]
    # and the pack's trace shows them
    r = client.get(f"/api/v1/trace/units/{pack['id']}", headers=qp)
    assert r.status_code == 200, r.text
    traced = [str(e["bizStep"]).rsplit("/", 1)[-1] for e in r.json()["events"]]
    assert [s for s in traced if s in ("receiving", "storing", "picking")] == [
        "receiving",
        "storing",
        "picking",
    ]
    reading = {"read_at": seeded.clock.now().isoformat(), "value": -180.0}
    r = client.post(
        f"/api/v1/packs/{pack['id']}/storage-log", json={"readings": [reading]}, headers=pharmacist
    )
    assert r.status_code == 201, r.text
    assert r.json()["readings"][0]["excursion"] is False and r.json()["holds"] == []
    r = client.post(
        f"/api/v1/packs/{pack['id']}/prepare", json={"scan": scanned}, headers=pharmacist
    )
    assert r.status_code == 201, r.text
    prepared = r.json()  # infuse within 180 min of thaw (the label's line, the family's default)
    in_use = datetime.fromisoformat(prepared["use_by"]) - datetime.fromisoformat(
        prepared["prepared_at"]
    )
    assert in_use == timedelta(minutes=180)
    r = client.post(
        "/api/v1/dispense",
        json={"scan": scanned, "patient_ref": patient},
        headers=pharmacist,
    )
    assert r.status_code == 200, r.text
    assert r.json()["order_complete"] is True
    assert client.get(f"/api/v1/orders/{order_id}", headers=pharmacist).json()["status"] == (
        "dispensed"
    )

    # 7. days later the sterility culture reads positive: a deviation, and a notice to the
    # clinicians of the prescribing site
    r = client.post(
        f"/api/v1/batches/{batch_id}/followups/sterility/result",
        json={
            "outcome": "fail",
            "detail": "Ph. Eur. 2.6.27: growth in the aerobic bottle on day 4",
            **_signed("qp"),
        },
        headers=qp,
    )
    assert r.status_code == 200, r.text
    failed = r.json()
    assert failed["status"] == "failed" and failed["deviation_id"]
    clinician = _login(client, "clinician")
    r = client.get("/api/v1/notices", headers=clinician)
    assert r.status_code == 200, r.text
    (notice,) = [n for n in r.json() if n["order_id"] == order_id]
    assert notice["batch_id"] == batch_id and notice["deviation_id"] == failed["deviation_id"]
    assert "terility" in notice["message"]


def test_a_dose_outside_the_envelope_or_in_mg_is_refused(client: TestClient, seeded: App) -> None:
    # 8e6 cells/kg is above the envelope's 1e6-5e6: the order stops, naming the dose and range
    order = _submit(client, _bundle(seeded, 2, dose_per_kg=8.0e6, weight_kg=70.0))
    assert order["status"] == "stopped"
    reason = order["stop_reason"]
    assert "8 × 10^6 viable cells/kg" in reason and "outside the validated range" in reason
    assert "5 × 10^6" in reason
    # a mass dose is not a cell dose: refused before any order is made, naming the field
    bundle = _bundle(seeded, 3, dose_per_kg=150.0, dose_unit="mg")
    r = client.post("/api/v1/orders", json=bundle, headers=_login(client, "clinician"))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"].endswith("doseQuantity.unit")
    assert "mass" in error["message"]
    with seeded.uow() as uow:
        assert [o.status for o in seeded.orders.list_orders(uow)] == ["stopped"]


def _decide(client: TestClient, batch_id: str, decision: str, **body: Any) -> Any:
    return client.post(
        f"/api/v1/batches/{batch_id}/decision",
        json={"decision": decision, "meaning": f"QP {decision}", **_signed("qp"), **body},
        headers=_login(client, "qp"),
    )


def test_an_out_of_specification_batch_is_released_only_exceptionally(
    client: TestClient, seeded: App
) -> None:
    order = _submit(client, _bundle(seeded, 4, dose_per_kg=2.0e6, weight_kg=70.0))
    # the culture grows at 40 % of its rate: at the longest validated culture (12 days) it is
    # harvested short of its target, all of it in the bag
    batch_id = _made(seeded, order["id"], Fault("slow_growth", 0.6))
    qp = _login(client, "qp")
    record = client.get(f"/api/v1/batches/{batch_id}", headers=qp).json()
    made = record["measurements"]
    assert made["harvested"] is True and made["culture_days"] == 12
    assert made["viable_cells"] / 70.0 / 2.0e6 < 0.8  # below the 80 % band
    review = record["review"]
    assert {c["name"]: c["passed"] for c in review["checks"]}["viable_cell_dose"] is False
    assert review["proposed_decision"] == "reject"
    fh.prepare_release(seeded, batch_id)

    # the QP alone may not release it
    r = _decide(client, batch_id, "release", reason="the patient needs the cells")
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "out_of_specification"
    # nor certify it exceptionally without the treating physician's signed request
    certify = {"meaning": "QP exceptional release", "reason": "no alternative", **_signed("qp")}
    r = client.post(
        f"/api/v1/batches/{batch_id}/exceptional-release/certify", json=certify, headers=qp
    )
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "physician_request_missing"
    assert client.get(f"/api/v1/batches/{batch_id}", headers=qp).json()["status"] == "completed"

    # the treating physician asks, e-signed; that alone releases nothing
    r = client.post(
        f"/api/v1/batches/{batch_id}/exceptional-release",
        json={
            "circumstances": "no other treatment option; the patient cannot wait for a new run",
            **_signed("clinician"),
        },
        headers=_login(client, "clinician"),
    )
    assert r.status_code == 200, r.text
    asked = r.json()
    assert asked["out_of_specification"] == ["viable_cell_dose"]
    assert asked["physician_signature_valid"] is True and asked["qp_signature_id"] is None
    assert client.get(f"/api/v1/batches/{batch_id}", headers=qp).json()["status"] == "completed"

    # with both signatures: released as an exceptional release
    r = client.post(
        f"/api/v1/batches/{batch_id}/exceptional-release/certify",
        json=certify,
        headers=_login(client, "qp"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "released"
    record = client.get(f"/api/v1/batches/{batch_id}", headers=qp).json()
    assert record["status"] == "released"
    exceptional = record["review"]["exceptional_release"]
    assert exceptional["physician_signature_id"] and exceptional["qp_signature_id"]
    assert record["packs"][0]["status"] == "released"


def test_a_contaminated_culture_is_not_released(client: TestClient, seeded: App) -> None:
    order = _submit(client, _bundle(seeded, 5, dose_per_kg=2.0e6, weight_kg=70.0))
    batch_id = _made(seeded, order["id"], Fault("contamination", 1.0, from_unit=2))
    qp = _login(client, "qp")
    record = client.get(f"/api/v1/batches/{batch_id}", headers=qp).json()
    made = record["measurements"]
    # the micro-factory stopped the culture: nothing harvested, no bag
    assert made["harvested"] is False and made["bags"] == 0 and record["units_made"] == 0
    assert "contamination" in made["stop_reason"]
    review = record["review"]
    assert {c["name"]: c["passed"] for c in review["checks"]}["viable_cell_dose"] is False
    assert review["proposed_decision"] == "reject"
    fh.prepare_release(seeded, batch_id)
    # the QP cannot release it; the QP rejects it, and the order with it
    r = _decide(client, batch_id, "release", reason="release anyway")
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "out_of_specification"
    r = _decide(client, batch_id, "reject", reason="culture contaminated, not harvested")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "rejected"
    assert client.get(f"/api/v1/batches/{batch_id}", headers=qp).json()["status"] == "rejected"
    assert client.get(f"/api/v1/orders/{order['id']}", headers=qp).json()["status"] == "rejected"


def test_the_cli_submits_shows_and_releases_a_cell_product(seeded: App, tmp_path: Path) -> None:
    env = {
        "NEARFAB_DATABASE_URL": seeded.engine.url.render_as_string(hide_password=False),
        # the CLI runs on the real clock; the seeded world set its passwords on the test's clock
        "NEARFAB_PASSWORD_MAX_AGE_DAYS": "3650",
    }

    def cli(*args: str) -> Any:
        done = cli_helpers.run([*args, "--json"], env=env, data_dir=seeded.settings.data_dir)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    rx = tmp_path / "rx.json"
    rx.write_text(json.dumps(_bundle(seeded, 6, dose_per_kg=3.0e6, weight_kg=50.0, din=DIN)))
    (order,) = cli("order", "submit", str(rx), "--site", "GSTT-PH")["orders"]
    # 3e6 cells/kg × 50 kg = 1.5e8 viable cells, one infusion
    assert (order["status"], order["dose_value"], order["dose_unit"]) == ("designed", 1.5e8, CELLS)
    assert order["units"] == 1

    def collect(order_id: str) -> None:
        # the clinician signs eligibility and consent; the collection with the patient's
        # pseudonym and the bag's DIN as typed from its label (the order's DIN: bound)
        for kind in ("eligibility", "consent"):
            signed = cli(
                "pre-collection", order_id, "--kind", kind, "--reference", "form v3.1",
                "--statement", f"{kind} confirmed", "--user", "clinician",
                "--password", TEST_PASSWORD,
            )  # fmt: skip
            assert signed["kind"] == kind and signed["signature_id"]
        shown = cli("order", "show", order_id)
        common = [
            "collected", order_id, "--patient", shown["patient_ref"], "--user", "clinician",
            "--password", TEST_PASSWORD, "--at", seeded.clock.now().isoformat(),
        ]  # fmt: skip
        refused = cli_helpers.run(
            [*common, "--identifier", OTHER_DIN, "--json"],
            env=env,
            data_dir=seeded.settings.data_dir,
        )
        assert refused.returncode == 2, refused.stdout
        assert json.loads(refused.stdout)["error"]["code"] == "identity_mismatch"
        done = cli(*common, "--identifier", DIN_TYPED)
        assert done["chain_identifier"] == DIN

    batch_id = _made(seeded, order["id"], collect=collect)
    booked = cli("collection", order["id"])["current"]
    assert booked["collection_to_administration_h"] == pytest.approx(240.0)  # 24 + 7 × 24 + 48
    assert booked["chain_identifier"] == DIN and booked["collected_by"]
    text = cli_helpers.run(
        ["collection", order["id"]], env=env, data_dir=seeded.settings.data_dir
    ).stdout
    assert "collected" in text and f"chain identifier {DIN}" in text
    fh.prepare_release(seeded, batch_id)
    (pending,) = cli("release", "pending")
    assert pending["batch_id"] == batch_id and pending["pending_results"] == ["sterility"]
    released = cli(
        "release", "sign", batch_id, "--decision", "release", "--user", "qp",
        "--password", TEST_PASSWORD, "--meaning", "QP release",
    )  # fmt: skip
    assert released["status"] == "released" and released["pending_results"] == ["sterility"]
    shown = cli("order", "show", order["id"])
    assert shown["status"] == "released"
    assert shown["design"]["din"] == DIN and shown["design"]["target_cells"] == 1.5e8
    assert [b["status"] for b in shown["batches"]] == ["released"]
    # the first hand-over from the shell: the bag and its DIN scanned on both sides
    with seeded.uow() as uow:
        (bag,) = seeded.custody.units_of_batch(uow, batch_id)
        scan = (
            "]d2"
            + make_identifier(bag.gtin, bag.serial, bag.batch_number, bag.expiry).datamatrix_data()
        )
    handed = cli(
        "custody", "hand-over", "--scan", scan, "--received-scan", scan, "--from", "collection",
        "--to", "micro_factory", "--identifier", DIN, "--received-identifier", DIN_TYPED,
        "--user", "pharmacist", "--password", TEST_PASSWORD,
    )  # fmt: skip
    assert handed["outcome"] == "accepted" and handed["to_step"] == "micro_factory"


def test_the_web_pages_show_a_cell_batch_with_its_pending_result(seeded: App) -> None:
    client = TestClient(create_web_app(seeded))
    order = _submit(client, _bundle(seeded, 7, dose_per_kg=2.0e6, weight_kg=70.0, din=DIN))
    batch_id = _made(seeded, order["id"])
    number = fh.batch(seeded, batch_id).batch_number
    qp = fh.web_login(seeded, "qp")
    for path in ("/", "/release", f"/batches/{batch_id}", f"/orders/{order['id']}"):
        page = qp.get(path)
        assert page.status_code == 200, (path, page.text[:500])
    queue = qp.get("/release").text
    assert number in queue and "sterility" in queue.lower()
    batch_page = qp.get(f"/batches/{batch_id}").text
    assert "sterility" in batch_page.lower() and "viable cell dose" in batch_page.lower()
    # the demo's first page, as the administrator sees it, with the cell product in the network
    assert fh.web_login(seeded, "admin").get("/").status_code == 200
