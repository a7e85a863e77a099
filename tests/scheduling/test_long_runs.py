"""Long runs and collections (issue 15 part 2, "Scheduling"): a product made in a run of days
from starting material collected from the patient.

The cell_therapy family is registered in the test's app (as tests/families/test_family_kit.py
registers its family) with two closed-system machines, one at GSTT-PH and one at MAN-PH, each
qualified for the product, an operator trained at each site and culture medium at each site.
The design used is the family's worked example: 2e6 cells/kg for 70 kg -> 7 days of expansion,
900 mL (= 900 g) of medium (docs/cell-therapy.md, tests/families/cell_therapy/test_design.py).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.families.cell_therapy.collect import record_collection
from tests.families.cell_therapy.test_design import ENVELOPE, cell_bundle
from typer.testing import CliRunner

from nearfab.bootstrap import App
from nearfab.cli.main import app as cli
from nearfab.common.errors import DomainError, Refused, ValidationFailed
from nearfab.families.cell_therapy.family import CellTherapyFamily
from nearfab.families.cell_therapy.machines import CELL_MICRO_FACTORY, DEFAULT_PROCESS_PARAMETERS
from nearfab.identity import AuditEntry
from nearfab.web.server import create_web_app

seeded = fh.seeded
PRODUCT = "MF-CT-SCHED"
CODE = {"system": "http://snomed.info/sct", "code": "999000222", "display": "Autologous T cells"}
DAY = timedelta(days=1)


def _network(app: App, machines: tuple[tuple[str, str, str], ...]) -> None:
    if "cell_therapy" not in app.families.names():
        app.families.register(CellTherapyFamily())
    qp, admin = fh.actor(app, "qp"), fh.actor(app, "admin")
    sites = sorted({fh.site_id(app, code) for code, _, _ in machines})
    data: dict[str, Any] = {
        "code": PRODUCT,
        "title": "Autologous T cells, expanded in a closed system",
        "product_family": "cell_therapy",
        "accepted_codes": [CODE],
        "design_envelope": ENVELOPE,
        "process_parameters": DEFAULT_PROCESS_PARAMETERS,
        "cqa_specs": {},
        "release_rule": {"mode": "manual", "tests": ["viable_cell_dose", "viability"]},
        "material_code": "CT-MEDIUM-1",
        "shelf_life_days": 365,
        "storage": "Store at or below -150 °C",
        "gtin": "09506000134352",
        "units_per_pack": 1,
        "allowed_site_ids": sites,
    }
    with app.uow() as uow:
        mf = app.master_files.draft(uow, qp, data)
    with app.uow() as uow:
        app.master_files.approve(uow, qp, mf.id, password=fh.TEST_PASSWORD, meaning="QP approval")
    with app.uow() as uow:
        app.master_files.make_effective(uow, qp, mf.id)
    receivers = {"GSTT-PH": ("pharmacist", "operator"), "MAN-PH": ("operator-man",) * 2}
    for code, name, serial in machines:
        site = fh.site_id(app, code)
        with app.uow() as uow:
            machine = app.network.register_machine(
                uow, admin, site_id=site, name=name, machine_type=CELL_MICRO_FACTORY,
                firmware="cmf 1.0", serial_number=serial,
            )  # fmt: skip
        with app.uow() as uow:
            app.network.qualify_machine(uow, qp, machine.id, PRODUCT)
    for code in sorted({code for code, _, _ in machines}):
        receiver, operator = receivers[code]
        with app.uow() as uow:
            app.network.record_training(uow, qp, fh.actor(app, operator).user_id, PRODUCT)
        with app.uow() as uow:
            lot = app.materials.receive_lot(
                uow, fh.actor(app, receiver), lot_number=f"CT-MEDIUM-1-{code}",
                material_code="CT-MEDIUM-1", description="Serum-free T-cell medium",
                site_id=fh.site_id(app, code), supplier="Test Ltd",
                expiry=app.clock.now().date() + timedelta(days=365), quantity_g=10_000.0,
                attributes={"kind": "medium", "grade": "gmp", "sterility_certificate": "CoA-1"},
                assay_pct=100.0, product_family="cell_therapy",
            )  # fmt: skip
        with app.uow() as uow:
            app.materials.set_status(uow, qp, lot.id, "approved", reason="certificate reviewed")


def _submit(app: App) -> str:
    with app.uow() as uow:
        [order] = app.orders.submit(uow, fh.actor(app, "clinician"), cell_bundle(2.0e6, 70.0))
        assert (order.status, order.design["expansion_days"]) == ("designed", 7)
        return order.id


TWO_SITES = (("GSTT-PH", "CMF GSTT", "CMF-0001"), ("MAN-PH", "CMF MAN", "CMF-0002"))


def test_a_run_of_seven_days_is_scheduled(seeded: App) -> None:
    _network(seeded, TWO_SITES)
    order = _submit(seeded)
    job = fh.job(seeded, fh.schedule(seeded, order))
    assert job.planned_finish - job.planned_start == 7 * DAY


# -- hand-worked timeline of one order (the family's collection: 24 h from collection to the
# run's start, 48 h from the run's end to administration; PlanningSettings.collection_notice_h
# 24 h before a new collection can be booked):
#   collection      = now + 24 h (notice)
#   run start       = collection + 24 h          = now + 48 h
#   run end         = start + 7 d                = now + 9 d
#   administration  = end + 48 h                 = now + 11 d
#   collection to administration = 24 + 168 + 48 = 240 h
LEAD, NOTICE, TO_ADMIN, RUN = timedelta(hours=24), timedelta(hours=24), timedelta(hours=48), 7 * DAY
CLEANING = timedelta(minutes=5)


def _collection(app: App, order_id: str) -> dict[str, Any]:
    with app.uow() as uow:
        view = app.scheduling.collection_view(uow, fh.actor(app, "planner"), order_id)
    assert view["current"] is not None
    return dict(view["current"])


def _at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def test_a_long_run_books_its_machine_a_collection_and_an_administration_date(
    seeded: App,
) -> None:
    _network(seeded, TWO_SITES)
    now = seeded.clock.now()
    order = _submit(seeded)
    job = fh.job(seeded, fh.schedule(seeded, order))
    assert (job.planned_start, job.planned_finish) == (
        now + NOTICE + LEAD,
        now + NOTICE + LEAD + RUN,
    )
    booked = _collection(seeded, order)
    assert booked["status"] == "booked" and booked["job_id"] == job.id
    assert booked["machine"] == "CMF GSTT"  # a tie on cost and finish: the machine's name
    assert _at(booked["collection_at"]) == now + NOTICE
    assert (_at(booked["run_start"]), _at(booked["run_end"])) == (
        job.planned_start,
        job.planned_finish,
    )
    assert _at(booked["administration_at"]) == now + 11 * DAY
    assert booked["collection_to_administration_h"] == 240.0
    # the plan shows the same dates for the order; a solid-dose assignment has none of them
    with seeded.uow() as uow:
        plan = seeded.scheduling.current_plan(uow)
        assert plan is not None
        [entry] = [a for a in plan.assignments if a["order_id"] == order]
    assert (entry["collection_at"], entry["administration_at"]) == (
        booked["collection_at"],
        booked["administration_at"],
    )
    assert entry["collection_to_administration_h"] == 240.0
    with seeded.uow() as uow:
        rows = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.entity_type == "collection_appointment")
        ).all()
    assert [r.action for r in rows] == ["create", "update"]  # made, then bound to the slot


def test_capacity_is_reserved_across_sites_for_the_whole_run(seeded: App) -> None:
    _network(seeded, TWO_SITES)
    now = seeded.clock.now()
    orders = [_submit(seeded) for _ in range(3)]
    jobs = [fh.job(seeded, fh.schedule(seeded, o)) for o in orders]
    first = now + NOTICE + LEAD
    starts = sorted((j.planned_start, j.machine_id) for j in jobs)
    # two machines (one per site) take two runs at once; the third waits a whole run (7 days)
    # and the cleaning after it on whichever machine frees first: no machine is offered twice
    assert [s for s, _ in starts] == [first, first, first + RUN + CLEANING]
    assert len({m for _, m in starts[:2]}) == 2
    third = next(j for j in jobs if j.planned_start == first + RUN + CLEANING)
    late = _collection(seeded, third.order_id)
    # its collection is booked against that slot: the day before the run starts
    assert _at(late["collection_at"]) == first + RUN + CLEANING - LEAD
    assert late["collection_to_administration_h"] == 240.0


def test_a_slipped_collection_moves_the_run_and_the_administration(seeded: App) -> None:
    _network(seeded, TWO_SITES)
    now = seeded.clock.now()
    order = _submit(seeded)
    job_id = fh.schedule(seeded, order)
    slipped = now + 3 * DAY
    with seeded.uow() as uow:  # the clinician records it: the plan is made at the next refresh
        seeded.scheduling.record_collection(
            uow, fh.actor(seeded, "clinician"), order, slipped, reason="patient unwell on day 1"
        )
    with seeded.uow() as uow:
        version = seeded.scheduling.refresh(uow, fh.actor(seeded, "planner"))
        assert version is not None and version.trigger == "collection_changed"
    job = fh.job(seeded, job_id)  # same machine, retimed: start = slipped + 24 h
    assert (job.status, job.planned_start) == ("planned", slipped + LEAD)
    booked = _collection(seeded, order)
    assert _at(booked["collection_at"]) == slipped
    assert _at(booked["administration_at"]) == slipped + LEAD + RUN + TO_ADMIN
    assert booked["collection_to_administration_h"] == 240.0
    assert booked["recorded_at"] is not None
    # nothing else changed: no new plan on the next refresh
    with seeded.uow() as uow:
        assert seeded.scheduling.refresh(uow, fh.actor(seeded, "planner")) is None
    # a date in the past, or an order whose product needs no collection: refused, naming why
    with pytest.raises(ValidationFailed) as past, seeded.uow() as uow:
        seeded.scheduling.record_collection(
            uow, fh.actor(seeded, "planner"), order, now - DAY, reason="typo"
        )
    assert past.value.field == "collection_at"
    tablets = fh.submit(seeded)
    with pytest.raises(Refused) as none, seeded.uow() as uow:
        seeded.scheduling.record_collection(
            uow, fh.actor(seeded, "planner"), tablets, slipped, reason="not a cell order"
        )
    assert (none.value.field, none.value.code) == ("order_id", "no_collection")


def test_a_failed_run_books_a_new_slot_for_a_new_collection(seeded: App) -> None:
    _network(seeded, TWO_SITES)
    now = seeded.clock.now()
    order = _submit(seeded)
    job_id = fh.schedule(seeded, order)
    seeded.clock.advance(NOTICE.total_seconds())  # the collection, recorded
    record_collection(seeded, order)
    seeded.clock.advance(LEAD.total_seconds())  # the material reached the machine: run starts
    fh.issue_ticket(seeded, job_id)
    batch_id = fh.start(seeded, job_id)
    fh.record(seeded, batch_id, DomainError("equipment fault on day 2", code="machine_fault"))
    assert fh.order_status(seeded, order) == "failed"
    again = now + 4 * DAY
    with seeded.uow() as uow:
        seeded.scheduling.rebook_after_failure(
            uow, fh.actor(seeded, "planner"), order, reason="run failed", collection_at=again
        )
    with seeded.uow() as uow:
        view = seeded.scheduling.collection_view(uow, fh.actor(seeded, "planner"), order)
        latest = seeded.scheduling.current_plan(uow)
        assert latest is not None and latest.trigger == "run_failed"
    [new, failed] = view["appointments"]
    assert failed["status"] == "run_failed" and failed["job_id"] == job_id
    assert new["status"] == "booked" and new["job_id"] != job_id
    assert _at(new["collection_at"]) == again
    assert _at(new["run_start"]) == again + LEAD
    assert _at(new["administration_at"]) == again + LEAD + RUN + TO_ADMIN
    assert fh.order_status(seeded, order) == "scheduled"
    # only a failed order is re-booked
    with pytest.raises(Refused) as exc, seeded.uow() as uow:
        seeded.scheduling.rebook_after_failure(
            uow, fh.actor(seeded, "planner"), order, reason="again"
        )
    assert exc.value.code == "not_failed"


def test_the_api_and_the_cli_show_and_record_the_collection(
    seeded: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    _network(seeded, TWO_SITES)
    now = seeded.clock.now()
    order = _submit(seeded)
    fh.schedule(seeded, order)
    with TestClient(create_web_app(seeded)) as client:

        def headers(username: str) -> dict[str, str]:
            r = client.post(
                "/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD}
            )
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        planner = headers("planner")
        shown = client.get(f"/api/v1/plan/collections/{order}", headers=planner)
        assert shown.status_code == 200, shown.text
        assert shown.json()["current"]["collection_to_administration_h"] == 240.0
        slipped = now + 2 * DAY
        r = client.post(
            f"/api/v1/plan/collections/{order}",
            json={"collection_at": slipped.isoformat(), "reason": "apheresis unit closed"},
            headers=planner,
        )
        assert r.status_code == 200, r.text
        # a planner's record replans at once: the run starts 24 h after the new collection
        assert _at(r.json()["run_start"]) == slipped + LEAD
        assert _at(r.json()["administration_at"]) == slipped + LEAD + RUN + TO_ADMIN
        naive = client.post(
            f"/api/v1/plan/collections/{order}",
            json={"collection_at": "2026-01-09T08:00:00", "reason": "no zone"},
            headers=planner,
        )
        assert naive.status_code == 422 and "collection_at" in naive.text
        # an operator may not record it (order.priority: planner, pharmacist, clinician, admin)
        denied = client.post(
            f"/api/v1/plan/collections/{order}",
            json={"collection_at": slipped.isoformat(), "reason": "x"},
            headers=headers("operator"),
        )
        assert denied.status_code == 403
    monkeypatch.setenv(
        "NEARFAB_DATABASE_URL", str(seeded.engine.url.render_as_string(hide_password=False))
    )
    res = CliRunner().invoke(
        cli, ["collection", order, "--json", "--data-dir", str(seeded.settings.data_dir)]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert _at(data["current"]["collection_at"]) == slipped
    assert data["current"]["collection_to_administration_h"] == 240.0
