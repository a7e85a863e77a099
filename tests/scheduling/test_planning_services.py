"""The network plan on a database (SQLite and PostgreSQL): every eligibility rule, plan
versions with audit rows, and each replanning trigger."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import Refused
from nearfab.identity import AuditEntry, system_actor
from nearfab.materials import MaterialLot
from nearfab.network import Qualification, SiteStatus, Training
from nearfab.scheduling import JobStatus, PlanVersion

seeded = fh.seeded
HC = "MF-HC-PRINTLET"
PLANNER = system_actor("planner")


def plan(app: App, **kw: object) -> PlanVersion:
    with app.uow() as uow:
        version = app.scheduling.plan(uow, fh.actor(app, "planner"), time_limit_s=1, **kw)  # type: ignore[arg-type]
        uow.session.expunge(version)
        return version


def refresh(app: App) -> PlanVersion | None:
    with app.uow() as uow:
        version = app.scheduling.refresh(uow, PLANNER)
        if version is not None:
            uow.session.expunge(version)
        return version


def entry(version: PlanVersion, order_id: str) -> dict[str, object]:
    return next(a for a in version.assignments if a["order_id"] == order_id)


def machine_name(app: App, job_id: str) -> str:
    with app.uow() as uow:
        return app.network.get_machine(uow, app.scheduling.get(uow, job_id).machine_id).name


def test_plan_is_stored_audited_and_drives_schedule(seeded: App) -> None:
    a, b = fh.submit(seeded), fh.submit(seeded)
    version = plan(seeded)
    assert version.number == 1 and version.trigger == "manual"
    assert (version.solver, version.status, version.explanations) == ("edd", "optimal", [])
    assert {x["machine"] for x in version.assignments} == {"GSTT printer A", "GSTT printer B"}
    assert [c["kind"] for c in version.changes] == ["added", "added"]
    with seeded.uow() as uow:
        rows = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.entity_type == "plan_version")
        ).all()
        assert [r.entity_id for r in rows] == [version.id]
    # scheduling takes the plan's place, and nothing changed: no new version
    job_a, job_b = fh.schedule(seeded, a), fh.schedule(seeded, b)
    assert machine_name(seeded, job_a) == entry(version, a)["machine"]
    assert machine_name(seeded, job_b) == entry(version, b)["machine"]
    assert refresh(seeded) is None
    with seeded.uow() as uow:
        assert [v.number for v in seeded.scheduling.plan_history(uow)] == [1]


def test_a_new_order_is_planned_by_schedule_itself(seeded: App) -> None:
    first = fh.submit(seeded)
    fh.schedule(seeded, first)
    second = fh.submit(seeded)
    fh.schedule(seeded, second)
    with seeded.uow() as uow:
        history = seeded.scheduling.plan_history(uow)
        assert [v.trigger for v in history] == ["new_order", "new_order"]
        # the first order's job kept its machine when the second order came
        assert [c["kind"] for c in history[0].changes] == ["added"]


# --- each eligibility rule ----------------------------------------------------------------------


def _revoke_qualifications(app: App) -> None:
    with app.uow() as uow:
        for q in uow.session.scalars(select(Qualification)):
            q.revoked = True
        uow.commit()


def _pause_sites(app: App) -> None:
    admin = fh.actor(app, "admin")
    for code in ("GSTT-PH", "MAN-PH", "MOB-1"):
        with app.uow() as uow:
            app.network.transition_site(
                uow, admin, fh.site_id(app, code), SiteStatus.PAUSED, reason="inspection"
            )


def _machines_in_maintenance(app: App) -> None:
    admin = fh.actor(app, "admin")
    for name in ("GSTT printer A", "GSTT printer B", "MAN printer A", "Mobile printer"):
        with app.uow() as uow:
            app.network.set_machine_status(
                uow, admin, fh.machine_id(app, name), "maintenance", reason="service"
            )


def _untrain(app: App) -> None:
    with app.uow() as uow:
        for t in uow.session.scalars(select(Training)):
            t.valid_until = app.clock.now() - timedelta(days=1)
        uow.commit()


def _no_material(app: App) -> None:
    with app.uow() as uow:
        for lot in uow.session.scalars(select(MaterialLot)):
            lot.quantity_g = 0.01
        uow.commit()


def _lots_expire_tonight_and_machines_down_till_then(app: App) -> None:
    tomorrow = app.clock.now().date() + timedelta(days=1)
    with app.uow() as uow:
        for lot in uow.session.scalars(select(MaterialLot)):
            lot.expiry = tomorrow
        uow.commit()
    _downtime_everywhere(app, hours=20)


def _downtime_everywhere(app: App, hours: float = 200) -> None:
    now = app.clock.now()
    for name in ("GSTT printer A", "GSTT printer B", "MAN printer A", "Mobile printer"):
        with app.uow() as uow:
            app.scheduling.planning.add_downtime(  # type: ignore[union-attr]
                uow,
                fh.actor(app, "planner"),
                fh.machine_id(app, name),
                now,
                now + timedelta(hours=hours),
                reason="calibration",
            )
            uow.commit()


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (_revoke_qualifications, "no_qualified_machine"),
        (_pause_sites, "site_unavailable"),
        (_machines_in_maintenance, "machine_unavailable"),
        (_untrain, "no_trained_operator"),
        (_no_material, "material_missing"),
        (_lots_expire_tonight_and_machines_down_till_then, "material_expiring"),
        (_downtime_everywhere, "calendar"),
    ],
)
def test_each_eligibility_rule_keeps_the_order_out_and_says_why(
    seeded: App, spoil: Callable[[App], None], reason: str
) -> None:
    order = fh.submit(seeded)
    spoil(seeded)
    version = plan(seeded)
    assert version.assignments == []
    (why,) = version.explanations
    assert (why["order_id"], why["status"], why["reason"]) == (order, "unplaced", reason)


def test_shifts_and_downtime_shape_the_plan(seeded: App) -> None:
    now = seeded.clock.now()
    with seeded.uow() as uow:
        planning = seeded.scheduling.planning
        assert planning is not None
        planning.add_downtime(
            uow,
            fh.actor(seeded, "planner"),
            fh.machine_id(seeded, "GSTT printer A"),
            now,
            now + timedelta(hours=3),
            reason="calibration",
        )
        operator = fh.actor(seeded, "operator")
        planning.add_shift(
            uow,
            fh.actor(seeded, "planner"),
            operator.user_id,
            fh.site_id(seeded, "GSTT-PH"),
            now + timedelta(hours=1),
            now + timedelta(hours=9),
        )
        uow.commit()
    order = fh.submit(seeded)
    version = plan(seeded)
    e = entry(version, order)
    assert (e["machine"], e["start"]) == ("MAN printer A", now.isoformat())  # free at once
    for name in ("MAN printer A", "Mobile printer"):
        with seeded.uow() as uow:
            seeded.network.set_machine_status(
                uow,
                fh.actor(seeded, "admin"),
                fh.machine_id(seeded, name),
                "maintenance",
                reason="service",
            )
    e = entry(plan(seeded), order)
    # GSTT printer A is down for 3 h; B waits for the operator's shift (1 h from now)
    assert (e["machine"], e["start"]) == ("GSTT printer B", (now + timedelta(hours=1)).isoformat())


def test_transport_time_sends_the_order_to_the_nearer_site(seeded: App) -> None:
    order = fh.submit(seeded)
    planner = fh.actor(seeded, "planner")
    with seeded.uow() as uow:
        planning = seeded.scheduling.planning
        assert planning is not None
        for code, minutes in (("GSTT-PH", 600), ("MAN-PH", 5), ("MOB-1", 600)):
            planning.set_transport(uow, planner, fh.site_id(seeded, code), "home:M1", minutes)
        planning.set_priority(uow, planner, order, "routine", deliver_to="home:M1")
        uow.commit()
    e = entry(plan(seeded), order)
    assert (e["machine"], e["transport_min"]) == ("MAN printer A", 5)


# --- replanning ---------------------------------------------------------------------------------


def _two_jobs(app: App) -> tuple[str, str]:
    a, b = fh.submit(app), fh.submit(app)
    ja, jb = fh.schedule(app, a), fh.schedule(app, b)
    assert {machine_name(app, ja), machine_name(app, jb)} == {"GSTT printer A", "GSTT printer B"}
    return ja, jb


def test_machine_failure_moves_only_its_jobs(seeded: App) -> None:
    ja, jb = _two_jobs(seeded)
    on_a = ja if machine_name(seeded, ja) == "GSTT printer A" else jb
    other = jb if on_a == ja else ja
    with seeded.uow() as uow:
        seeded.network.set_machine_status(
            uow,
            fh.actor(seeded, "admin"),
            fh.machine_id(seeded, "GSTT printer A"),
            "maintenance",
            reason="nozzle broke",
        )
    version = refresh(seeded)
    assert version is not None and version.trigger == "machine_failure"
    assert fh.job(seeded, on_a).status == "cancelled"
    assert fh.job(seeded, other).status == "planned"  # untouched
    moved = [c for c in version.changes if c["kind"] == "moved"]
    assert [c["order_id"] for c in moved] == [fh.job(seeded, on_a).order_id]
    with seeded.uow() as uow:
        jobs = seeded.scheduling.jobs(uow, order_id=fh.job(seeded, on_a).order_id)
        assert [j.status for j in jobs].count("planned") == 1
    assert refresh(seeded) is None  # nothing more changed


def test_material_recall_moves_jobs_to_another_lot_or_site(seeded: App) -> None:
    ja, _ = _two_jobs(seeded)
    lot = fh.job(seeded, ja).material_lot_id
    with seeded.uow() as uow:
        seeded.materials.set_status(
            uow, fh.actor(seeded, "qp"), lot, "recalled", reason="supplier recall"
        )
    version = refresh(seeded)
    assert version is not None and version.trigger == "material_recall"
    with seeded.uow() as uow:
        open_jobs = seeded.scheduling.jobs(uow, JobStatus.PLANNED)
        assert len(open_jobs) == 2
        assert lot not in {j.material_lot_id for j in open_jobs}
        assert {j.site_id for j in open_jobs} <= {
            fh.site_id(seeded, "MAN-PH"),
            fh.site_id(seeded, "MOB-1"),
        }


def test_site_pause_and_urgent_order_are_named_triggers(seeded: App) -> None:
    _two_jobs(seeded)
    with seeded.uow() as uow:
        seeded.network.transition_site(
            uow,
            fh.actor(seeded, "admin"),
            fh.site_id(seeded, "GSTT-PH"),
            SiteStatus.PAUSED,
            reason="power cut",
        )
    version = refresh(seeded)
    assert version is not None and version.trigger == "site_pause"
    assert {a["site"] for a in version.assignments} <= {"MAN-PH", "MOB-1"}
    urgent = fh.submit(seeded)
    with seeded.uow() as uow:
        seeded.scheduling.planning.set_priority(  # type: ignore[union-attr]
            uow, fh.actor(seeded, "clinician"), urgent, "urgent"
        )
        uow.commit()
    version = refresh(seeded)
    assert version is not None and version.trigger == "urgent_order"
    assert entry(version, urgent)["priority"] == "urgent"


def test_started_jobs_are_frozen(seeded: App) -> None:
    job_id = fh.ticketed_job(seeded)
    fh.start(seeded, job_id)
    fh.submit(seeded)
    version = plan(seeded)
    frozen = [a for a in version.assignments if a["frozen"]]
    assert [a["job_id"] for a in frozen] == [job_id]
    assert fh.job(seeded, job_id).status == "running"


def test_order_with_no_place_is_refused_with_the_plans_reason(seeded: App) -> None:
    order = fh.submit(seeded)
    _downtime_everywhere(seeded)
    with pytest.raises(Refused) as info:
        fh.schedule(seeded, order)
    assert info.value.code == "no_place_in_plan"
    assert "downtime" in info.value.message
    # the plan that found no place is kept, and asking again does not replan
    with pytest.raises(Refused):
        fh.schedule(seeded, order)
    with seeded.uow() as uow:
        assert len(seeded.scheduling.plan_history(uow)) == 1
