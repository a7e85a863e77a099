"""The network runner on a database (SQLite and PostgreSQL): it plans, tickets and runs what it
can, and stops where a person (the QP) must act or a rule says no."""

from __future__ import annotations

import copy
import random

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.families.cell_therapy.collect import DIN_A, record_collection

from nearfab.bootstrap import App
from nearfab.common.errors import Refused
from nearfab.demo import cell_therapy_bundle
from nearfab.network import Qualification
from nearfab.scheduling import Job

PROP = "MF-PROP-PRINTLET"


def _scheduled(app: App) -> str:
    return fh.schedule(app, fh.submit(app))


def _started(app: App) -> str:
    return fh.start(app, fh.ticketed_job(app))


# a test asking for `scheduled`, `ticketed` or `started` gets a copy of a world where that job
# (batch) is already made, built once per backend and worker (tests/flow_helpers.py); every
# other test a copy of the seeded demo network
seeded = fh.seeded_or_world(
    {"scheduled": _scheduled, "ticketed": fh.ticketed_job, "started": _started}
)


@pytest.fixture
def scheduled(request: pytest.FixtureRequest, seeded: App) -> str:
    """A prescription's job, planned (`fh.schedule`), in the test's copy of its world."""
    job_id: str = fh.built_data(request)
    return job_id


@pytest.fixture
def ticketed(request: pytest.FixtureRequest, seeded: App) -> str:
    """A prescription's job with its ticket issued (`fh.ticketed_job`), in the test's copy."""
    job_id: str = fh.built_data(request)
    return job_id


@pytest.fixture
def started(request: pytest.FixtureRequest, seeded: App) -> str:
    """A ticketed job's batch, started by the site's operator (`fh.start`), in the test's copy."""
    batch_id: str = fh.built_data(request)
    return batch_id


def test_run_until_idle_makes_two_orders_and_stops_for_the_qp(seeded: App) -> None:
    orders = [fh.submit(seeded, dose_mg=2.0), fh.submit(seeded, dose_mg=5.0)]

    summary = fh.run(seeded)

    assert len(summary.scheduled) == 2
    assert sorted(summary.tickets) == sorted(summary.scheduled)
    assert len(summary.batches_completed) == 2
    assert summary.batches_failed == []
    assert summary.blocked == {}
    # before the signing: a round of work (planned, ticketed, records opened), an idle one;
    # after it (fh.run signs the steps the machines wait for): the runs, an idle round
    assert summary.rounds == 4
    assert [fh.order_status(seeded, o) for o in orders] == ["awaiting_release"] * 2
    with seeded.uow() as uow:
        batches = [seeded.production.get(uow, b) for b in summary.batches_completed]
        assert {b.order_id for b in batches} == set(orders)
        assert {seeded.network.get_machine(uow, b.machine_id).name for b in batches} == {
            "GSTT printer A",
            "GSTT printer B",
        }
        assert {b.operator_id for b in batches} == {fh.actor(seeded, "operator").user_id}
        assert {m.status for m in seeded.network.list_machines(uow)} == {"available"}
        pending = seeded.quality.pending(uow)
        assert sorted(r.batch_id for r in pending) == sorted(summary.batches_completed)
        assert {r.proposed_decision for r in pending} == {"release"}
        for batch in batches:
            assert batch.status == "completed"  # made, waiting for the QP
            assert seeded.signatures.signatures_for(uow, "batch", batch.id) == []
            assert {u.status for u in seeded.custody.units_of_batch(uow, batch.id)} == {
                "quarantine"
            }

    again = fh.run(seeded)
    assert not again.progressed()
    assert again.rounds == 1


def test_order_without_a_qualified_machine_stays_designed_and_says_why(seeded: App) -> None:
    for name in ("GSTT printer A", "GSTT printer B", "MAN printer A"):
        with seeded.uow() as uow:
            row = uow.session.scalar(
                select(Qualification).where(
                    Qualification.machine_id == fh.machine_id(seeded, name),
                    Qualification.master_file_code == PROP,
                )
            )
            assert row is not None
            row.revoked = True
            uow.commit()
    stuck = fh.submit(seeded, medication="propranolol", dose_mg=5.0)
    other = fh.submit(seeded)  # hydrocortisone is unaffected

    summary = fh.run(seeded)

    assert fh.order_status(seeded, stuck) == "designed"
    assert fh.order_status(seeded, other) == "awaiting_release"
    why = summary.blocked[stuck]
    assert why.startswith(f"no eligible machine for order {stuck}")
    for name in ("GSTT printer A", "GSTT printer B", "MAN printer A"):
        assert f"{name}: not qualified for {PROP}" in why
    assert f"Mobile printer: site MOB-1 is not listed in master file {PROP}" in why
    with seeded.uow() as uow:
        assert seeded.scheduling.jobs(uow, order_id=stuck) == []

    # once a machine is qualified again the order flows
    with seeded.uow() as uow:
        seeded.network.qualify_machine(
            uow, fh.actor(seeded, "qp"), fh.machine_id(seeded, "MAN printer A"), PROP
        )
    summary = fh.run(seeded)
    assert summary.blocked == {}
    assert fh.order_status(seeded, stuck) == "awaiting_release"
    (batch_id,) = summary.batches_completed
    batch = fh.batch(seeded, batch_id)
    assert batch.machine_id == fh.machine_id(seeded, "MAN printer A")
    assert batch.operator_id == fh.actor(seeded, "operator-man").user_id


def test_runner_does_not_start_an_altered_ticket_and_carries_on(seeded: App, ticketed: str) -> None:
    tampered = ticketed
    ticket = copy.deepcopy(fh.job(seeded, tampered).ticket or {})
    ticket["payload"]["design"]["target_mass_mg"] *= 2  # a double dose
    fh.edit(seeded, Job, tampered, ticket=ticket)
    healthy = fh.submit(seeded)

    summary = fh.run(seeded)

    why = "ticket signature does not match: altered or not signed by the control site"
    assert summary.blocked == {tampered: why}
    assert summary.batches_failed == []
    assert fh.job(seeded, tampered).status == "ticket_issued"
    assert fh.order_status(seeded, fh.job(seeded, tampered).order_id) == "scheduled"
    # refused once, on record once: the runner does not retry it every round
    assert summary.rounds >= 2
    assert [r.reason for r in fh.refusals(seeded, "job", tampered)] == [why]
    (made,) = summary.batches_completed
    assert fh.batch(seeded, made).order_id == healthy
    assert fh.order_status(seeded, healthy) == "awaiting_release"
    with seeded.uow() as uow:
        assert [r.batch_id for r in seeded.quality.pending(uow)] == [made]


def test_runner_reports_a_refused_gate_as_blocked(seeded: App, scheduled: str) -> None:
    job_id = scheduled
    fh.new_version(seeded, "MF-HC-PRINTLET", shelf_life_days=60)

    summary = fh.run(seeded)

    assert not summary.progressed()
    assert "MF-HC-PRINTLET v1 is superseded" in summary.blocked[job_id]
    assert fh.job(seeded, job_id).status == "planned"
    (row,) = fh.refusals(seeded, "job", job_id)
    assert row.reason == summary.blocked[job_id]
    assert row.actor_id == "system:control-site"
    # running again reports it again but does not add the same refusal to the audit trail
    again = fh.run(seeded)
    assert again.blocked[job_id] == summary.blocked[job_id]
    assert len(fh.refusals(seeded, "job", job_id)) == 1


def test_the_runner_runs_a_batch_an_operator_started_by_hand(seeded: App, started: str) -> None:
    batch_id = started
    assert fh.batch(seeded, batch_id).status == "in_progress"

    summary = fh.run(seeded)

    assert summary.batches_completed == [batch_id]
    record = fh.batch(seeded, batch_id)
    assert record.status == "completed" and record.measurements and record.units_made
    assert record.operator_id == fh.actor(seeded, "operator").user_id


def test_the_sweep_finishes_what_a_failed_reaction_left_undone(
    seeded: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = fh.make_batch(seeded, days=10)
    calls = {"n": 0}
    real = type(seeded.custody).apply_disposition

    def flaky(self: object, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("label printer service down")
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(type(seeded.custody), "apply_disposition", flaky)
    fh.release(seeded, batch_id)  # the QP's decision stands though its reaction failed
    with seeded.uow() as uow:
        assert [u.status for u in seeded.custody.units_of_batch(uow, batch_id)] == ["quarantine"]
    fh.run(seeded)
    with seeded.uow() as uow:
        assert [u.status for u in seeded.custody.units_of_batch(uow, batch_id)] == ["released"]
    assert calls["n"] == 2


def test_a_stuck_scheduled_order_can_be_taken_off_and_cancelled(
    seeded: App, scheduled: str
) -> None:
    job_id = scheduled
    order_id = fh.job(seeded, job_id).order_id
    planner, clinician = fh.actor(seeded, "planner"), fh.actor(seeded, "clinician")
    with seeded.uow() as uow:
        seeded.scheduling.unschedule(uow, planner, order_id, reason="site closing early")
    assert fh.job(seeded, job_id).status == "cancelled"
    assert fh.order_status(seeded, order_id) == "designed"
    with seeded.uow() as uow, pytest.raises(Refused) as caught:
        seeded.scheduling.unschedule(uow, planner, order_id, reason="again")
    assert caught.value.code == "not_scheduled"
    with seeded.uow() as uow:
        seeded.orders.cancel(uow, clinician, order_id, reason="patient moved hospital")
    assert fh.order_status(seeded, order_id) == "cancelled"


def test_a_scheduled_order_is_cancelled_with_its_job_in_one_step(
    seeded: App, scheduled: str
) -> None:
    job_id = scheduled
    order_id = fh.job(seeded, job_id).order_id
    clinician = fh.actor(seeded, "clinician")
    with seeded.uow() as uow, pytest.raises(Refused) as caught:  # not behind the job's back
        seeded.orders.cancel(uow, clinician, order_id, reason="x")
    assert caught.value.code == "scheduled"
    with seeded.uow() as uow:
        seeded.scheduling.cancel_order(uow, clinician, order_id, reason="patient discharged")
    assert fh.order_status(seeded, order_id) == "cancelled"
    assert fh.job(seeded, job_id).status == "cancelled"
    assert fh.run(seeded).scheduled == []  # nothing left for the runner to plan


def test_a_result_that_could_not_be_recorded_is_recorded_later_not_rerun(
    seeded: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    fh.submit(seeded, days=10)
    production = type(seeded.production)
    real_record, real_execute = production.record_run, production.execute
    calls = {"record": 0, "execute": 0}

    def flaky_record(self: object, *args: object, **kwargs: object) -> object:
        calls["record"] += 1
        if calls["record"] == 1:
            raise RuntimeError("database went away for a moment")
        return real_record(self, *args, **kwargs)  # type: ignore[arg-type]

    def counted_execute(self: object, *args: object, **kwargs: object) -> object:
        calls["execute"] += 1
        return real_execute(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(production, "record_run", flaky_record)
    monkeypatch.setattr(production, "execute", counted_execute)
    summary = fh.run(seeded)
    # the pass that ran the machine could not record it: a later pass records it
    completed = summary.batches_completed or fh.run(seeded).batches_completed
    (batch_id,) = completed
    assert calls == {"record": 2, "execute": 1}  # the machine printed once
    assert fh.batch(seeded, batch_id).status == "completed"


def test_a_batch_is_handed_to_its_machine_once(seeded: App, started: str) -> None:
    batch_id = started
    agent = fh.actor(seeded, "operator")
    fh.sign_before_start(seeded, batch_id)
    with seeded.uow() as uow:
        seeded.production.hand_over(uow, agent, batch_id)
    with seeded.uow() as uow, pytest.raises(Refused) as caught:  # a second worker
        seeded.production.hand_over(uow, agent, batch_id)
    assert caught.value.code == "already_handed_over"
    # a runner that did not hand it over waits for the machine's report
    summary = fh.run(seeded)
    assert "waiting for the machine's report" in summary.blocked[batch_id]
    assert fh.batch(seeded, batch_id).status == "in_progress"
    # its machine will never report: a QP closes it, and its order can be planned again
    with seeded.uow() as uow:
        seeded.production.abandon(
            uow, fh.actor(seeded, "qp"), batch_id, reason="site agent crashed mid-run"
        )
    record = fh.batch(seeded, batch_id)
    assert record.status == "failed" and record.failure_reason == (
        "abandoned: site agent crashed mid-run"
    )
    assert fh.order_status(seeded, record.order_id) == "failed"


def test_a_run_made_from_a_collection_waits_unticketed_for_the_collection(seeded: App) -> None:
    bundle = cell_therapy_bundle(random.Random(3), today=seeded.clock.now().date(), din=DIN_A)
    with seeded.uow() as uow:
        [order] = seeded.orders.submit(uow, fh.actor(seeded, "clinician"), bundle)
        order_id = order.id

    waiting = fh.run(seeded)
    (job_id,) = waiting.scheduled
    # planned, no ticket (it would expire while the patient waits), no refused start recorded
    assert waiting.tickets == [] and waiting.batches_completed == []
    assert "collection has not been recorded" in waiting.blocked[job_id]
    with seeded.uow() as uow:
        (job,) = [j for j in seeded.scheduling.jobs(uow) if j.order_id == order_id]
        assert job.status == "planned"
    again = fh.run(seeded)
    assert again.tickets == [] and job_id in again.blocked

    record_collection(seeded, order_id)
    made = fh.run(seeded)
    assert made.tickets == [job_id]
    assert len(made.batches_completed) == 1
