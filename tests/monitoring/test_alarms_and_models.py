"""Models trained from released runs, approved by a QP, scoring live telemetry; alarms that
block an automatic release until someone documents a disposition (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import Forbidden, Refused, ValidationFailed
from nearfab.identity import AuditEntry
from nearfab.monitoring import AlarmStatus, ModelStatus
from nearfab.production import Fault

seeded = fh.seeded
HYDRO = "MF-HC-PRINTLET"
PRINTER = "GSTT printer A"


def released_runs(app: App, n: int) -> list[str]:
    """n released batches, all on the same printer (qualified runs)."""
    runs = []
    for _ in range(n):
        batch_id = fh.make_batch(app)
        fh.release(app, batch_id)
        runs.append(fh.batch(app, batch_id).job_id)
    return runs


def train_and_approve(app: App, kind: str) -> str:
    admin, qp = fh.actor(app, "admin"), fh.actor(app, "qp")
    with app.uow() as uow:
        model = app.monitoring.train(
            uow, admin, kind=kind, master_file_code=HYDRO, machine_type="tablet_printer"
        )
    with app.uow() as uow:
        app.monitoring.approve(
            uow, qp, model.id, password=fh.TEST_PASSWORD, meaning="QP approval of model"
        )
    return model.id


def _monitored(app: App) -> None:
    released_runs(app, 3)
    train_and_approve(app, "spc")
    train_and_approve(app, "mspc")


monitored_world = fh.world_fixture(_monitored)  # built once per backend and worker, copied


@pytest.fixture
def monitored(monitored_world: fh.Built) -> App:
    return monitored_world.app


def test_mf_code_and_machine_type_key_the_models(monitored: App) -> None:
    with monitored.uow() as uow:
        models = monitored.monitoring.active_models(uow)
        valid = [monitored.monitoring.approval_valid(uow, m) for m in models]
    assert sorted(m.kind for m in models) == ["mspc", "spc"]
    assert all(m.master_file_code == HYDRO for m in models)
    assert valid == [True, True]
    spc = next(m for m in models if m.kind == "spc")
    assert len(spc.training["runs"]) == 3
    assert spc.params["charts"]["extrusion_pressure_kpa"]["L_individuals"] > 3


def test_a_healthy_batch_raises_no_alarm_and_is_proposed_for_release(monitored: App) -> None:
    batch_id = fh.make_batch(monitored)
    with monitored.uow() as uow:
        alarms = monitored.monitoring.alarms(uow, batch_id=batch_id)
        review = monitored.quality.review_for(uow, batch_id)
    assert alarms == []
    assert review is not None and review.proposed_decision == "release"


def test_a_fault_raises_alarms_that_block_release_until_dispositioned(monitored: App) -> None:
    printer = fh.machine(monitored, fh.machine_id(monitored, PRINTER))
    monitored.fleet.inject_fault(printer, Fault("nozzle_clog", severity=0.2, from_unit=5))
    batch_id = fh.make_batch(monitored)

    with monitored.uow() as uow:
        alarms = monitored.monitoring.alarms(uow, batch_id=batch_id)
        review = monitored.quality.review_for(uow, batch_id)
    rules = {(a.source, a.rule, a.metric) for a in alarms}
    assert ("spc", "we1", "extrusion_pressure_kpa") in rules
    assert {"t2", "spe"} & {a.rule for a in alarms if a.source == "mspc"}
    mspc = next(a for a in alarms if a.source == "mspc")
    top = max(mspc.details["contributions"], key=mspc.details["contributions"].get)
    assert top == "extrusion_pressure_kpa"  # the contribution plot points at the cause
    assert all(a.run == fh.batch(monitored, batch_id).job_id for a in alarms)
    assert review is not None and review.proposed_decision != "release"
    assert any("open alarm" in r for r in review.proposal["reasons"])

    with pytest.raises(Refused) as err:
        fh.release(monitored, batch_id, reason="QP judgement")
    assert err.value.code == "open_alarms"

    qp, operator = fh.actor(monitored, "qp"), fh.actor(monitored, "operator")
    for alarm in alarms:
        with monitored.uow() as uow, pytest.raises(ValidationFailed):
            monitored.monitoring.close(uow, qp, alarm.id, disposition="no_impact", note=" ")
        with monitored.uow() as uow, pytest.raises(Forbidden):
            monitored.monitoring.close(
                uow, operator, alarm.id, disposition="no_impact", note="looked fine"
            )
        with monitored.uow() as uow:
            monitored.monitoring.close(
                uow,
                qp,
                alarm.id,
                disposition="assignable_cause_fixed",
                note="nozzle cleaned; units checked by weight",
            )

    fh.release(monitored, batch_id, reason="alarms investigated, units within specification")
    with monitored.uow() as uow:
        closed = monitored.monitoring.alarms(uow, batch_id=batch_id)
        trail = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.entity_type == "alarm")
        ).all()
    assert {a.status for a in closed} == {AlarmStatus.CLOSED.value}
    assert all(a.disposition == "assignable_cause_fixed" for a in closed)
    raised = [e for e in trail if e.action == "create"]
    dispositioned = [e for e in trail if e.action == "transition"]
    assert len(raised) == len(alarms) == len(dispositioned)


def test_training_needs_released_runs_and_approval_needs_a_second_person(seeded: App) -> None:
    admin, qp = fh.actor(seeded, "admin"), fh.actor(seeded, "qp")
    runs = released_runs(seeded, 2)
    unreleased = fh.batch(seeded, fh.make_batch(seeded)).job_id
    with seeded.uow() as uow, pytest.raises(Refused) as err:
        seeded.monitoring.train(
            uow, admin, kind="spc", master_file_code=HYDRO, machine_type="tablet_printer"
        )
    assert err.value.code == "too_few_runs"
    with seeded.uow() as uow, pytest.raises(Refused) as err:
        seeded.monitoring.train(
            uow,
            admin,
            kind="spc",
            master_file_code=HYDRO,
            machine_type="tablet_printer",
            runs=[*runs, unreleased],
        )
    assert err.value.code == "run_not_qualified"

    runs.append(released_runs(seeded, 1)[0])
    with seeded.uow() as uow:
        model = seeded.monitoring.train(
            uow, qp, kind="spc", master_file_code=HYDRO, machine_type="tablet_printer", runs=runs
        )
    with seeded.uow() as uow, pytest.raises(Refused) as err:
        seeded.monitoring.approve(uow, qp, model.id, password=fh.TEST_PASSWORD, meaning="ok")
    assert err.value.code == "same_person"
    with seeded.uow() as uow:
        assert seeded.monitoring.get_model(uow, model.id).status == ModelStatus.DRAFT.value


def test_approving_a_new_version_retires_the_old_one(monitored: App) -> None:
    new_id = train_and_approve(monitored, "spc")
    with monitored.uow() as uow:
        spc = [m for m in monitored.monitoring.models(uow) if m.kind == "spc"]
    assert [(m.version, m.status) for m in spc] == [(1, "retired"), (2, "approved")]
    assert spc[1].id == new_id


def test_capability_of_each_parameter_against_the_master_file_limits(seeded: App) -> None:
    runs = released_runs(seeded, 3)
    with seeded.uow() as uow:
        rows = seeded.monitoring.capability(
            uow, master_file_code=HYDRO, machine_type="tablet_printer", runs=runs
        )
        mf = seeded.master_files.effective_for_code(uow, HYDRO)
    by_metric = {r["metric"]: r for r in rows}
    pressure = by_metric["extrusion_pressure_kpa"]
    limits = mf.process_parameters["extrusion_pressure_kpa"]
    assert (pressure["lsl"], pressure["usl"]) == (limits["low"], limits["high"])
    # the twin's noise sd is a sixth of the half-band, so Pp = 2·half / (6·half/6) = 2
    assert pressure["pp"] == pytest.approx(2.0, rel=0.2)
    assert pressure["ppk"] <= pressure["pp"]
    low, high = pressure["ppk_interval"]["lower"], pressure["ppk_interval"]["upper"]
    assert low < pressure["ppk"] < high
    assert pressure["runs"] == 3 and pressure["n"] == 3 * 126
