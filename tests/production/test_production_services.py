"""Production use cases on a database (SQLite and PostgreSQL): the production gate, signed job
tickets, machine runs and the electronic batch record.

Spec point 5: production is refused, each with its own clear error and an audit entry, when there
is no approved effective master file, the site is not listed or not active, the machine is not
qualified or the operator not trained; a batch keeps the master-file version it started with.
Spec point 9: machines act only on signed, unaltered job tickets; the batch record holds the
evidence.
"""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import Forbidden, Refused
from nearfab.custody import SerialUnit
from nearfab.identity import Actor
from nearfab.masterfiles import MasterFile
from nearfab.network import Machine, Qualification
from nearfab.production import (
    BatchRecord,
    Fault,
    SignedTicket,
    TicketRejected,
    TicketSigner,
    verify_ticket,
)
from nearfab.quality import ReleaseReview
from nearfab.scheduling import Job

HC = "MF-HC-PRINTLET"
PROP = "MF-PROP-PRINTLET"


def _issue(app: App, job_id: str) -> None:
    with app.uow() as uow:
        app.production.issue_ticket(uow, fh.actor(app, "planner"), job_id)


def _refused_ticket(app: App, job_id: str) -> Refused:
    with pytest.raises(Refused) as caught:
        _issue(app, job_id)
    return caught.value


def _refused_start(app: App, job_id: str, operator: Actor | None = None) -> Refused:
    with pytest.raises(Refused) as caught:
        fh.start(app, job_id, operator)
    return caught.value


def _assert_nothing_made(app: App, job_id: str, job_status: str, order_status: str) -> None:
    job = fh.job(app, job_id)
    assert job.status == job_status
    assert fh.order_status(app, job.order_id) == order_status
    with app.uow() as uow:
        assert uow.session.scalar(select(BatchRecord).where(BatchRecord.job_id == job_id)) is None


def _two_jobs(app: App) -> tuple[str, str]:
    """A ticketed job (GSTT printer A) and a planned one (GSTT printer B), both at GSTT-PH."""
    ticketed = fh.ticketed_job(app)
    planned = fh.schedule(app, fh.submit(app))
    assert fh.job(app, planned).ticket is None
    return ticketed, planned


# a test asking for `ticketed` (`two_jobs`) gets a copy of a world where `fh.ticketed_job`
# (`_two_jobs`) has already run, built once per backend and worker (tests/flow_helpers.py);
# every other test a copy of the seeded demo network
seeded = fh.seeded_or_world({"ticketed": fh.ticketed_job, "two_jobs": _two_jobs})


@pytest.fixture
def ticketed(request: pytest.FixtureRequest, seeded: App) -> str:
    """The id of `fh.ticketed_job`'s job (at GSTT-PH) in the test's copy of its world."""
    job_id: str = fh.built_data(request)
    return job_id


@pytest.fixture
def two_jobs(request: pytest.FixtureRequest, seeded: App) -> tuple[str, str]:
    """`_two_jobs`' (ticketed, planned) jobs in the test's copy of its world."""
    ticketed, planned = fh.built_data(request)
    return ticketed, planned


def _qualification(app: App, machine_name: str, code: str) -> int:
    with app.uow() as uow:
        row = uow.session.scalar(
            select(Qualification).where(
                Qualification.machine_id == fh.machine_id(app, machine_name),
                Qualification.master_file_code == code,
            )
        )
        assert row is not None
        return row.id


# --- point 5: the production gate --------------------------------------------------------------


def test_superseded_master_file_refuses_ticket_and_start(
    seeded: App, two_jobs: tuple[str, str]
) -> None:
    ticketed, planned = two_jobs
    fh.new_version(seeded, HC, shelf_life_days=60)

    exc = _refused_ticket(seeded, planned)
    assert exc.code == "no_effective_master_file"
    assert exc.field == "master_file"
    assert f"master file {HC} v1 is superseded" in exc.message
    assert "approved, effective master file" in exc.message
    fh.assert_refusal_audited(seeded, exc, "job", planned)
    _assert_nothing_made(seeded, planned, "planned", "scheduled")
    assert fh.job(seeded, planned).ticket is None

    exc = _refused_start(seeded, ticketed)
    assert exc.code == "no_effective_master_file"
    assert f"{HC} v1 is superseded" in exc.message
    fh.assert_refusal_audited(seeded, exc, "job", ticketed)
    _assert_nothing_made(seeded, ticketed, "ticket_issued", "scheduled")


def test_withdrawn_master_file_refuses_ticket(seeded: App) -> None:
    job_id = fh.schedule(seeded, fh.submit(seeded))
    with seeded.uow() as uow:
        seeded.master_files.withdraw(
            uow,
            fh.actor(seeded, "qp"),
            fh.master_file_id(seeded, HC),
            reason="stability data withdrawn",
        )
    exc = _refused_ticket(seeded, job_id)
    assert exc.code == "no_effective_master_file"
    assert f"master file {HC} v1 is withdrawn" in exc.message
    row = fh.assert_refusal_audited(seeded, exc, "job", job_id)
    assert row.actor_name == "Priya Planner"
    _assert_nothing_made(seeded, job_id, "planned", "scheduled")


def test_master_file_changed_after_qp_approval_refuses_ticket(seeded: App) -> None:
    job_id = fh.schedule(seeded, fh.submit(seeded))
    # the approved content is altered in the database: the QP's signature no longer matches
    fh.edit(seeded, MasterFile, fh.master_file_id(seeded, HC), shelf_life_days=365)
    with seeded.uow() as uow:
        mf = seeded.master_files.get(uow, fh.master_file_id(seeded, HC))
        assert mf.status == "effective"
        assert seeded.master_files.approval_is_valid(uow, mf) is False

    exc = _refused_ticket(seeded, job_id)
    assert exc.code == "no_effective_master_file"
    assert "no longer matches its QP approval signature" in exc.message
    fh.assert_refusal_audited(seeded, exc, "job", job_id)
    _assert_nothing_made(seeded, job_id, "planned", "scheduled")


def test_site_not_listed_in_master_file_refuses_ticket(seeded: App) -> None:
    # propranolol may be made at GSTT-PH and MAN-PH, not at the mobile unit MOB-1
    job_id = fh.schedule(seeded, fh.submit(seeded, medication="propranolol", dose_mg=5.0))
    assert fh.job(seeded, job_id).site_id != fh.site_id(seeded, "MOB-1")
    fh.edit(
        seeded,
        Job,
        job_id,
        machine_id=fh.machine_id(seeded, "Mobile printer"),
        site_id=fh.site_id(seeded, "MOB-1"),
    )

    exc = _refused_ticket(seeded, job_id)
    assert exc.code == "site_not_listed"
    assert exc.field == "site"
    assert exc.message == f"site MOB-1 is not listed in master file {PROP}"
    row = fh.assert_refusal_audited(seeded, exc, "job", job_id)
    assert row.site_id == fh.site_id(seeded, "MOB-1")
    _assert_nothing_made(seeded, job_id, "planned", "scheduled")


def test_paused_site_refuses_ticket_and_start(seeded: App, two_jobs: tuple[str, str]) -> None:
    ticketed, planned = two_jobs
    with seeded.uow() as uow:
        seeded.network.transition_site(
            uow,
            fh.actor(seeded, "admin"),
            fh.site_id(seeded, "GSTT-PH"),
            "paused",
            reason="air handling failure in the clean room",
        )

    exc = _refused_ticket(seeded, planned)
    assert exc.code == "site_not_active"
    assert exc.field == "site"
    assert exc.message == "site GSTT-PH is paused, not active"
    fh.assert_refusal_audited(seeded, exc, "job", planned)
    _assert_nothing_made(seeded, planned, "planned", "scheduled")

    exc = _refused_start(seeded, ticketed)
    assert exc.code == "site_not_active"
    fh.assert_refusal_audited(seeded, exc, "job", ticketed)
    _assert_nothing_made(seeded, ticketed, "ticket_issued", "scheduled")

    with seeded.uow() as uow:
        seeded.network.transition_site(
            uow,
            fh.actor(seeded, "admin"),
            fh.site_id(seeded, "GSTT-PH"),
            "active",
            reason="air handling repaired and requalified",
        )
    fh.start(seeded, ticketed)  # the gate opens again once the site is active
    assert fh.job(seeded, ticketed).status == "running"


def test_unqualified_machine_refuses_ticket_and_start(
    seeded: App, two_jobs: tuple[str, str], clock: ManualClock
) -> None:
    ticketed, planned = two_jobs
    assert fh.job(seeded, planned).machine_id == fh.machine_id(seeded, "GSTT printer B")
    # B's qualification is revoked; A's is renewed only for the next hour, which then passes
    fh.edit(seeded, Qualification, _qualification(seeded, "GSTT printer B", HC), revoked=True)
    with seeded.uow() as uow:
        seeded.network.qualify_machine(
            uow,
            fh.actor(seeded, "qp"),
            fh.machine_id(seeded, "GSTT printer A"),
            HC,
            valid_until=clock.now() + timedelta(hours=1),
        )

    exc = _refused_ticket(seeded, planned)
    assert exc.code == "machine_not_qualified"
    assert exc.field == "machine"
    assert exc.message == f"machine GSTT printer B is not qualified for {HC}"
    fh.assert_refusal_audited(seeded, exc, "job", planned)
    _assert_nothing_made(seeded, planned, "planned", "scheduled")

    printer_a = fh.machine_id(seeded, "GSTT printer A")
    with seeded.uow() as uow:
        assert seeded.network.is_qualified(uow, printer_a, HC)  # for one more hour
    clock.advance(2 * 3600)
    with seeded.uow() as uow:
        assert not seeded.network.is_qualified(uow, printer_a, HC)
    exc = _refused_start(seeded, ticketed)
    assert exc.code == "machine_not_qualified"
    assert exc.message == f"machine GSTT printer A is not qualified for {HC}"
    fh.assert_refusal_audited(seeded, exc, "job", ticketed)
    _assert_nothing_made(seeded, ticketed, "ticket_issued", "scheduled")


def test_untrained_operator_refused_and_trained_one_may_start(
    seeded: App, ticketed: str, clock: ManualClock
) -> None:
    job_id = ticketed
    newcomer = fh.create_user(seeded, "operator-new", ["operator"], "GSTT-PH")

    exc = _refused_start(seeded, job_id, newcomer)
    assert exc.code == "operator_not_trained"
    assert exc.field == "operator"
    assert newcomer.user_id in exc.message
    assert exc.message.endswith(f"is not trained on {HC}")
    row = fh.assert_refusal_audited(seeded, exc, "job", job_id)
    assert row.actor_id == newcomer.user_id
    _assert_nothing_made(seeded, job_id, "ticket_issued", "scheduled")

    with pytest.raises(Forbidden):
        fh.start(seeded, job_id, fh.actor(seeded, "planner"))  # not an operator at all

    # training that has lapsed counts as none
    with seeded.uow() as uow:
        seeded.network.record_training(
            uow,
            fh.actor(seeded, "qp"),
            newcomer.user_id,
            HC,
            valid_until=clock.now() + timedelta(hours=1),
        )
    clock.advance(2 * 3600)
    exc = _refused_start(seeded, job_id, newcomer)
    assert exc.code == "operator_not_trained"
    _assert_nothing_made(seeded, job_id, "ticket_issued", "scheduled")

    batch_id = fh.start(seeded, job_id)  # the trained operator
    assert fh.batch(seeded, batch_id).operator_id == fh.actor(seeded, "operator").user_id


def test_lot_put_on_hold_refuses_start_and_leaves_no_half_written_batch(
    seeded: App, ticketed: str
) -> None:
    job_id = ticketed
    lot_id = fh.job(seeded, job_id).material_lot_id
    with seeded.uow() as uow:
        seeded.materials.set_status(
            uow, fh.actor(seeded, "qp"), lot_id, "on_hold", reason="supplier complaint"
        )
        grams = seeded.materials.get(uow, lot_id).quantity_g

    exc = _refused_start(seeded, job_id)
    assert exc.code == "lot_not_usable"
    assert exc.message == "lot HC-FIL-2.5-GSTT-PH-001 is on_hold, not approved"
    fh.assert_refusal_audited(seeded, exc, "job", job_id)
    # the batch record opened before the material was drawn is rolled back with the rest
    _assert_nothing_made(seeded, job_id, "ticket_issued", "scheduled")
    assert fh.count(seeded, BatchRecord) == 0
    with seeded.uow() as uow:
        assert seeded.materials.get(uow, lot_id).quantity_g == grams
        assert seeded.production.steps(uow, f"bat_{job_id.removeprefix('job_')}") == []
        machine = seeded.network.get_machine(uow, fh.job(seeded, job_id).machine_id)
        assert machine.status == "available"


def test_batch_keeps_the_master_file_version_it_started_with(seeded: App, ticketed: str) -> None:
    v1 = fh.master_file_id(seeded, HC)
    batch_id = fh.start(seeded, ticketed)
    v2 = fh.new_version(
        seeded, HC, shelf_life_days=30, storage="Store below 8 °C in the original container."
    )
    fh.finish(seeded, batch_id)

    batch = fh.batch(seeded, batch_id)
    assert batch.status == "completed"
    assert (batch.master_file_id, batch.master_file_code, batch.master_file_version) == (v1, HC, 1)
    assert batch.content()["master_file"] == f"{HC} v1"
    with seeded.uow() as uow:
        assert seeded.master_files.get(uow, v2).version == 2
        assert seeded.quality.get_review(uow, batch_id).proposed_decision == "release"
    fh.release(seeded, batch_id)
    assert fh.batch(seeded, batch_id).status == "released"
    assert fh.order_status(seeded, batch.order_id) == "released"
    with seeded.uow() as uow:
        units = seeded.custody.units_of_batch(uow, batch_id)
        labels = seeded.custody.labels(uow, batch_id)
    assert batch.finished_at is not None
    # v1's 90-day shelf life and storage text, not v2's
    assert {u.expiry for u in units} == {(batch.finished_at + timedelta(days=90)).date()}
    assert {label.storage for label in labels} == {
        "Store below 25 °C in the original container. Keep dry."
    }


# --- point 9: signed tickets and the batch record ------------------------------------------------


def test_ticket_is_signed_by_the_control_site(seeded: App, clock: ManualClock) -> None:
    order_id = fh.submit(seeded)
    job_id = fh.ticketed_job(seeded, order_id)
    job = fh.job(seeded, job_id)
    assert job.status == "ticket_issued"
    ticket = SignedTicket.from_dict(job.ticket or {})
    verify_ticket(ticket, seeded.signer.public_key_pem, machine_id=job.machine_id, now=clock.now())
    assert ticket.key_id == seeded.signer.key_id
    assert ticket.ticket_hash == job.ticket_hash
    with seeded.uow() as uow:
        order = seeded.orders.get(uow, order_id)
        mf = seeded.master_files.get(uow, order.master_file_id)
        assert ticket.payload["design"] == order.design
        assert ticket.payload["process_parameters"] == mf.process_parameters
    assert ticket.payload["master_file"] == {"id": mf.id, "code": HC, "version": 1}
    assert ticket.payload["machine_id"] == job.machine_id
    assert ticket.payload["material_lot_id"] == job.material_lot_id

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    foreign = TicketSigner(Ed25519PrivateKey.generate())
    with pytest.raises(TicketRejected):  # not the control site's key
        verify_ticket(ticket, foreign.public_key_pem, now=clock.now())
    with pytest.raises(TicketRejected, match="for machine"):
        verify_ticket(ticket, seeded.signer.public_key_pem, machine_id="mch_other", now=clock.now())


@pytest.mark.parametrize("tamper", ["altered", "unsigned"])
def test_machine_refuses_a_ticket_not_as_signed(seeded: App, ticketed: str, tamper: str) -> None:
    job_id = ticketed
    batch_id = fh.start(seeded, job_id)
    job = fh.job(seeded, job_id)
    ticket = copy.deepcopy(job.ticket or {})
    if tamper == "altered":
        ticket["payload"]["design"]["units"] = 60  # more tablets than prescribed
        expected = "ticket signature does not match: altered or not signed by the control site"
    else:
        ticket["signature"] = ""
        expected = "unsigned ticket: it carries no signature"
    fh.edit(seeded, Job, job_id, ticket=ticket)

    outcome = fh.execute(seeded, batch_id)
    assert isinstance(outcome, TicketRejected)
    fh.record(seeded, batch_id, outcome)

    batch = fh.batch(seeded, batch_id)
    assert batch.status == "failed"
    assert batch.failure_reason == expected
    assert batch.measurements is None and batch.units_made is None
    with seeded.uow() as uow:
        steps = seeded.production.steps(uow, batch_id)
        refused = [s for s in steps if s.name == "machine_refused"]
        assert len(refused) == 1
        assert refused[0].detail == {"code": "ticket_rejected", "reason": expected}
        assert refused[0].actor_name == "Olu Operator"
        assert seeded.network.get_machine(uow, batch.machine_id).status == "available"
        assert seeded.quality.review_for(uow, batch_id) is None
        assert seeded.custody.units_of_batch(uow, batch_id) == []
    assert fh.job(seeded, job_id).status == "failed"
    assert fh.order_status(seeded, batch.order_id) == "failed"
    assert fh.count(seeded, ReleaseReview) == 0


def test_altered_ticket_is_refused_at_start_and_keeps_the_material(
    seeded: App, ticketed: str
) -> None:
    job_id = ticketed
    job = fh.job(seeded, job_id)
    ticket = copy.deepcopy(job.ticket or {})
    ticket["payload"]["design"]["target_mass_mg"] *= 2  # a double dose
    fh.edit(seeded, Job, job_id, ticket=ticket)
    with seeded.uow() as uow:
        grams = seeded.materials.get(uow, job.material_lot_id).quantity_g

    exc = _refused_start(seeded, job_id)
    assert isinstance(exc, TicketRejected)
    assert exc.code == "ticket_rejected"
    assert exc.message == (
        "ticket signature does not match: altered or not signed by the control site"
    )
    fh.assert_refusal_audited(seeded, exc, "job", job_id)
    _assert_nothing_made(seeded, job_id, "ticket_issued", "scheduled")
    with seeded.uow() as uow:
        assert seeded.materials.get(uow, job.material_lot_id).quantity_g == grams


def test_batch_record_holds_the_evidence_of_the_run(
    seeded: App, ticketed: str, clock: ManualClock
) -> None:
    job_id = ticketed
    job = fh.job(seeded, job_id)
    with seeded.uow() as uow:
        lot = seeded.materials.get(uow, job.material_lot_id)
        grams_before = lot.quantity_g
    started = clock.now()
    batch_id = fh.start(seeded, job_id)
    fh.finish(seeded, batch_id)

    batch = fh.batch(seeded, batch_id)
    operator = fh.actor(seeded, "operator")
    assert batch.status == "completed"
    assert batch.operator_id == operator.user_id
    assert batch.material_lot_number == "HC-FIL-2.5-GSTT-PH-001"
    assert batch.material_used_g > 0
    assert batch.machine_firmware == "fw 2.4.1"
    assert batch.ticket_hash == job.ticket_hash
    assert len(batch.ticket_hash) == 64
    assert batch.started_at == started
    assert batch.finished_at == started + timedelta(minutes=21)  # 21 units at 60 s each
    masses = (batch.measurements or {}).get("unit_masses_mg") or []
    assert len(masses) == batch.units_made == batch.design["units"] == 21
    target = batch.design["target_mass_mg"]
    assert all(abs(m - target) / target < 0.075 for m in masses)
    summary = batch.telemetry_summary or {}
    assert set(summary) == {
        "nozzle_temperature_c",
        "extrusion_pressure_kpa",
        "print_speed_mm_s",
        "chamber_humidity_pct",
    }
    for metric in summary.values():
        assert {"n", "mean", "sd", "min", "max", "low", "high", "outside"} <= set(metric)
        assert metric["n"] == 21 * 6 and metric["outside"] == 0
        assert metric["low"] <= metric["min"] <= metric["mean"] <= metric["max"] <= metric["high"]
    assert batch.cpp_excursions == []
    assert "ticket verified" in (batch.machine_events or [])
    with seeded.uow() as uow:
        assert seeded.materials.get(uow, lot.id).quantity_g == pytest.approx(
            grams_before - batch.material_used_g
        )
        steps = seeded.production.steps(uow, batch_id)
    assert [s.name for s in steps] == [
        "material_dispensed",
        "run_started",
        "run_finished",
        "serialised",
        "rtrt_evaluated",
    ]
    assert [s.seq for s in steps] == [1, 2, 3, 4, 5]
    by_name = {s.name: s for s in steps}
    for name in ("material_dispensed", "run_started", "run_finished"):
        assert by_name[name].actor_id == operator.user_id
        assert by_name[name].actor_name == "Olu Operator"
    assert by_name["material_dispensed"].at == started
    dispensed = by_name["material_dispensed"].detail or {}
    assert (dispensed["lot"], dispensed["grams"]) == (
        "HC-FIL-2.5-GSTT-PH-001",
        batch.material_used_g,
    )
    assert by_name["run_started"].detail == {
        "machine": "GSTT printer A",
        "firmware": "fw 2.4.1",
        "ticket_hash": job.ticket_hash,
    }
    assert by_name["run_finished"].at == batch.finished_at
    assert by_name["serialised"].actor_name == "nearfab serialiser"
    assert by_name["rtrt_evaluated"].actor_name == "nearfab rtrt"
    assert fh.job(seeded, job_id).status == "completed"
    assert fh.order_status(seeded, batch.order_id) == "awaiting_release"


def test_nozzle_clog_underfills_units_and_rtrt_proposes_reject(seeded: App, ticketed: str) -> None:
    job_id = ticketed
    printer = fh.machine(seeded, fh.job(seeded, job_id).machine_id)
    seeded.fleet.inject_fault(printer, Fault("nozzle_clog", 0.3, from_unit=4))
    batch_id = fh.start(seeded, job_id)
    fh.finish(seeded, batch_id)

    batch = fh.batch(seeded, batch_id)
    masses = (batch.measurements or {}).get("unit_masses_mg") or []
    target = batch.design["target_mass_mg"]
    assert all(abs(m - target) / target < 0.075 for m in masses[:4])
    assert all(m < target * 0.85 for m in masses[4:])  # about 30 % of the flow is lost
    assert any("nozzle_clog" in e for e in batch.machine_events or [])
    assert any(e.startswith("extrusion_pressure_kpa") for e in batch.cpp_excursions or [])
    with seeded.uow() as uow:
        review = seeded.quality.get_review(uow, batch_id)
    assert review.proposed_decision == "reject"
    assert review.status == "pending"
    checks = {c["name"]: c for c in review.proposal["checks"]}
    assert checks["unit_mass"]["passed"] is False
    assert any("17 of 21 units outside ±7.5 %" in r for r in review.proposal["reasons"])
    assert any("CPP excursion" in r for r in review.proposal["reasons"])
    with seeded.uow() as uow:
        assert {u.status for u in uow.session.scalars(select(SerialUnit))} == {"quarantine"}


def test_machine_put_into_maintenance_during_a_run_stays_in_maintenance(
    seeded: App, ticketed: str
) -> None:
    job_id = ticketed
    batch_id = fh.start(seeded, job_id)
    printer = fh.job(seeded, job_id).machine_id
    with seeded.uow() as uow:
        seeded.network.set_machine_status(
            uow, fh.actor(seeded, "admin"), printer, "maintenance", reason="nozzle replacement"
        )
    fh.finish(seeded, batch_id)
    assert fh.batch(seeded, batch_id).status == "completed"
    assert fh.machine(seeded, printer).status == "maintenance"


def test_production_refuses_an_operator_from_another_site(seeded: App, ticketed: str) -> None:
    job_id = ticketed  # at GSTT-PH
    other = fh.actor(seeded, "operator-man")  # trained, but works at MAN-PH
    with seeded.uow() as uow, pytest.raises(Forbidden) as caught:
        seeded.production.start_batch(uow, other, job_id)
    assert caught.value.code == "other_site"  # the permission matrix's site scoping
    fh.assert_refusal_audited(seeded, caught.value, "job", job_id)
    assert fh.job(seeded, job_id).status == "ticket_issued"


def test_production_refuses_a_machine_moved_to_another_site(seeded: App, ticketed: str) -> None:
    job_id = ticketed
    machine_id = fh.job(seeded, job_id).machine_id
    fh.edit(seeded, Machine, machine_id, site_id=fh.site_id(seeded, "MAN-PH"))
    with seeded.uow() as uow, pytest.raises(Refused) as caught:
        seeded.production.start_batch(uow, fh.actor(seeded, "operator"), job_id)
    assert caught.value.code == "machine_not_at_site"
    fh.assert_refusal_audited(seeded, caught.value, "job", job_id)
