"""The demo's cell therapy story (nearfab.demo_cell, issue 15): what a person opening the demo
finds for the cell product, read back through the API, the web pages and the services.

The story is built once on the seeded demo network (tests/flow_helpers.world_fixture) and each
test reads its own copy. Expected values, worked by hand from the demo's master file
(nearfab.demo.CELL_ENVELOPE, CELL_CQA_SPECS) and docs/cell-therapy.md:

- patient A: 2e6 viable cells/kg x 70 kg = 1.4e8 cells, one 70 mL bag, 7 days of expansion
  (the worked example of docs/cell-therapy.md);
- patient B: 3e6 cells/kg x 55 kg = 1.65e8 cells. With the culture growing at 40 % of its rate
  (slow_growth 0.6) it never reaches the harvest target (1.65e8 / 0.8 = 2.06e8) and is harvested
  at the longest validated culture, 12 days (CELL_ENVELOPE expansion_days max), short of the
  80 % lower limit of the dose (CELL_CQA_SPECS dose min_pct).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from nearfab.bootstrap import App
from nearfab.config import Settings
from nearfab.demo import AUTOPILOT, is_seeded
from nearfab.demo_cell import (
    AUTOMATED_USERS,
    DIN_B_AGAIN,
    play_cell_story,
    seed_with_cell_story,
)
from nearfab.demo_loop import DemoLoop
from nearfab.identity import AuditEntry, Signature
from nearfab.web.server import create_web_app

from . import flow_helpers as fh
from .conftest import TEST_PASSWORD

AUTOMATED_NAMES = {name for _, name, _ in AUTOMATED_USERS} | {
    "QP autopilot (demo only, not a person)"
}


def _build_story(app: App) -> dict[str, Any]:
    return {**play_cell_story(app, TEST_PASSWORD).to_dict(), "ended_at": app.clock.now()}


world = fh.world_fixture(_build_story)


def _token(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_patient_a_is_infused_and_the_late_sterility_failure_reaches_the_prescriber(
    world: fh.Built,
) -> None:
    app, story = world.app, world.data
    client = TestClient(create_web_app(app))
    pharmacist = _token(client, "pharmacist")
    order = client.get(f"/api/v1/orders/{story['order_a']}", headers=pharmacist).json()
    assert order["status"] == "dispensed"
    assert (order["dose_value"], order["design"]["expansion_days"]) == (1.4e8, 7)

    qp = _token(client, "qp")
    record = client.get(f"/api/v1/batches/{story['batch_a']}", headers=qp).json()
    assert record["status"] == "released"
    assert record["measurements"]["culture_days"] == 7
    (pack,) = record["packs"]
    assert pack["status"] == "dispensed"
    # released with sterility pending: the meaning of the QP autopilot's signature says so
    release = [s for s in record["signatures"] if "release" in s["meaning"].lower()]
    assert [s["printed_name"] for s in release] == ["QP autopilot (demo only, not a person)"]
    assert "results pending: sterility" in release[0]["meaning"].lower()

    # the bag's chain of identity: three hand-overs scanned with the DIN, the last at the
    # bedside with the patient checked; the cryostore's log; thawed
    r = client.get(f"/api/v1/packs/{story['unit_a']}/chain", headers=pharmacist)
    assert r.status_code == 200, r.text
    chain = r.json()
    steps = [(h["from_step"], h["to_step"], h["outcome"]) for h in chain["hand_overs"]]
    assert steps == [
        ("collection", "micro_factory", "accepted"),
        ("micro_factory", "cryostore", "accepted"),
        ("cryostore", "infusion", "accepted"),
    ]
    assert [h["patient_checked"] for h in chain["hand_overs"]] == [False, False, True]
    assert {h["giver_identifier"] for h in chain["hand_overs"]} == {order["design"]["din"]}
    assert chain["holds"] == [] and chain["in_use"] is not None
    assert chain["storage_log"] and {r["value"] for r in chain["storage_log"]} == {-180.0}
    dispensed_at = datetime.fromisoformat(chain["in_use"]["prepared_at"])

    # days later the sterility culture reads positive: failed, with a deviation
    (followup,) = client.get(f"/api/v1/batches/{story['batch_a']}/followups", headers=qp).json()
    assert (followup["test"], followup["status"]) == ("sterility", "failed")
    deviation = followup["deviation_id"]
    record = client.get(f"/api/v1/batches/{story['batch_a']}", headers=qp).json()
    assert deviation in [d["id"] for d in record["deviations"]]
    with app.uow() as uow:
        [fu] = app.quality.followups.for_batch(uow, story["batch_a"])
        result = app.quality.followups.result(uow, fu.result_id)
        assert _aware(result.entered_at) > dispensed_at  # after the infusion

    # and the prescribing site's clinicians have the notice, on the API and the web page
    clinician = _token(client, "clinician")
    (notice,) = [
        n
        for n in client.get("/api/v1/notices", headers=clinician).json()
        if n["order_id"] == story["order_a"]
    ]
    assert notice["batch_id"] == story["batch_a"] and notice["deviation_id"] == deviation
    page = fh.web_login(app, "clinician").get("/notices")
    assert page.status_code == 200
    assert record["batch_number"] in page.text and "terility" in page.text


def test_patient_b_run_fails_its_growth_and_a_new_collection_is_booked(world: fh.Built) -> None:
    app, story = world.app, world.data
    client = TestClient(create_web_app(app))
    qp = _token(client, "qp")
    record = client.get(f"/api/v1/batches/{story['batch_b']}", headers=qp).json()
    made = record["measurements"]
    assert made["culture_days"] == 12 and made["harvested"] is True
    assert made["viable_cells"] / 1.65e8 < 0.80  # below the dose's lower limit
    checks = {c["name"]: c["passed"] for c in record["review"]["checks"]}
    assert checks["viable_cell_dose"] is False
    assert record["review"]["proposed_decision"] == "reject"
    assert record["status"] == "rejected"
    planner = _token(client, "planner")
    first = client.get(f"/api/v1/orders/{story['order_b']}", headers=planner).json()
    assert first["status"] == "rejected"

    # the new prescription, for the same patient, with the new collection's DIN: booked
    again = client.get(f"/api/v1/orders/{story['order_b_again']}", headers=planner).json()
    assert again["status"] == "scheduled"
    assert again["patient_ref"] == first["patient_ref"]
    assert again["design"]["din"] == DIN_B_AGAIN
    booked = client.get(f"/api/v1/plan/collections/{story['order_b_again']}", headers=planner)
    assert booked.status_code == 200, booked.text
    current = booked.json()["current"]
    assert current["status"] == "booked"
    # in the future of the story's end: for a person to record (eligibility, consent, collection)
    assert datetime.fromisoformat(current["collection_at"]) > story["ended_at"]

    page = fh.web_login(app, "clinician").get(f"/orders/{story['order_b_again']}/collection")
    assert page.status_code == 200 and "booked" in page.text

    # the live demo's loop does not make it before its collection is recorded
    DemoLoop(app, qp_password=TEST_PASSWORD, seed=3).tick(submit=False)
    with app.uow() as uow:
        assert app.orders.get(uow, story["order_b_again"]).status == "scheduled"
        assert app.custody.units_of_order(uow, story["order_b_again"]) == []


def test_patient_b_is_then_left_to_the_people_of_the_demo(world: fh.Built) -> None:
    """What the README asks of a person: the clinician records eligibility, consent and the
    collection (its DIN); the demo loop opens the batch record, its machine waits for the site's
    people to sign the steps before it (software does not sign them for a cell product); then
    the loop makes the batch and leaves its release to the QP."""
    app, story = world.app, world.data
    order_id = story["order_b_again"]
    clinician = fh.actor(app, "clinician")
    for kind in ("eligibility", "consent"):
        with app.uow() as uow:
            app.scheduling.record_pre_collection(
                uow,
                clinician,
                order_id,
                kind=kind,
                reference="form v1",
                statement="confirmed with the patient",
                password=TEST_PASSWORD,
            )
    with app.uow() as uow:
        patient = app.orders.patient(uow, app.orders.get(uow, order_id).patient_id).ref
    with app.uow() as uow:
        app.scheduling.record_collected(
            uow, clinician, order_id, identifier=DIN_B_AGAIN, patient=patient
        )
    loop = DemoLoop(app, qp_password=TEST_PASSWORD, seed=3)
    loop.tick(submit=False)
    with app.uow() as uow:
        [batch] = app.production.batches(uow, order_id=order_id)
        assert batch.status == "in_progress" and batch.handed_over_at is None
        waits = [s.code for s in app.production.steps_before_start(uow, batch)]
        assert waits == ["line_clearance", "collection_received"]
        batch_id = batch.id
    # the site's operator and a second person (its pharmacist), not the demo's software
    assert fh.sign_before_start(app) == [batch_id]
    loop.tick(submit=False)
    with app.uow() as uow:
        [review] = [
            r
            for r in app.quality.pending(uow)
            if app.production.get(uow, r.batch_id).order_id == order_id
        ]
        assert review.status == "pending"  # for the QP: the autopilot signed nothing of it
        assert app.signatures.signatures_for(uow, "batch", review.batch_id) == []


def test_the_story_signs_only_under_accounts_that_say_they_are_automated(
    world: fh.Built,
) -> None:
    app = world.app
    with app.uow() as uow:
        seeded_at = uow.session.scalar(
            select(AuditEntry.at).where(AuditEntry.entity_id == "demo-seed")
        )
        story = list(uow.session.scalars(select(Signature).where(Signature.signed_at > seeded_at)))
        autopilot = app.users.by_username(uow, AUTOPILOT)
        assert autopilot is not None
    kinds = {s.record_type for s in story}
    # consent, the batch steps, the audit-trail review, the QP's decisions, the lab and the
    # sterility result: all signed, none by a person's account
    assert {"pre_collection", "batch_step", "release_followup_result"} <= kinds, kinds
    assert {s.signer_name for s in story} <= AUTOMATED_NAMES


def test_nearfab_demo_seeds_the_story_before_the_real_time(tmp_path: Path) -> None:
    """`nearfab demo` on a new database: seeded and played on a clock days before now; no
    record of it lies in the future of the live demo's clock."""
    settings = Settings(data_dir=tmp_path / "demo", database_url=None)
    result = seed_with_cell_story(settings, TEST_PASSWORD)
    assert result is not None and set(result.usernames) >= {u for u, _, _ in AUTOMATED_USERS}
    assert seed_with_cell_story(settings, TEST_PASSWORD) is None  # already there: nothing
    from nearfab.bootstrap import build_app

    app = build_app(settings, migrate=False)
    try:
        assert is_seeded(app)
        with app.uow() as uow:
            latest = uow.session.scalar(select(AuditEntry.at).order_by(AuditEntry.at.desc()))
            first = uow.session.scalar(select(AuditEntry.at).order_by(AuditEntry.at))
            orders = app.orders.count_by_status(uow)
        now = datetime.now(UTC)
        assert latest is not None and first is not None
        assert _aware(latest) < now and (now - _aware(first)).days >= 20
        assert orders == {"dispensed": 1, "rejected": 1, "scheduled": 1}
    finally:
        app.engine.dispose()


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)
