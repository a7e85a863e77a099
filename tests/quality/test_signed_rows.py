"""What a QP's release signature binds besides the batch record (sign-offs, deviations, the
exceptional-release request, laboratory results) is read in one statement
(quality/signedrows.py) that gives the rows the four queries it replaced gave, in their
order, so signatures made before still verify and a change to any of those rows still breaks
the signature. Both databases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select, update
from tests import flow_helpers as fh
from tests.quality import lab_helpers as lab
from tests.quality.release_helpers import user
from tests.quality.test_exceptional_release import _ask, _certify, _oos_batch

from nearfab.bootstrap import App
from nearfab.production import StepSignoff
from nearfab.quality.followup import FAILED_KIND
from nearfab.quality.models import Deviation, ExceptionalRelease, LabResult
from nearfab.quality.records import add_deviation
from nearfab.quality.signedrows import signed_rows

seeded = fh.seeded
GOOD = {"markers": {"CD3+": 0.92}, "endotoxin_eu_per_ml": 0.5, "mycoplasma": "negative"}


def _valid(app: App, batch_id: str) -> bool | None:
    with app.uow() as uow:
        return app.quality.signature_valid(uow, app.quality.get_review(uow, batch_id))


def test_one_statement_gives_the_rows_of_the_three_reads_in_their_order(seeded: App) -> None:
    batch_id, site = _oos_batch(seeded)
    user(seeded, "doc-here", ["clinician"], site)
    fh.prepare_release(seeded, batch_id)
    _ask(seeded, "doc-here", batch_id)
    _certify(seeded, batch_id)
    # three investigations opened in one transaction: the same instant, so their order is
    # the id's (as `ORDER BY opened_at, id` gave it); investigations are not signed content
    with seeded.uow() as uow:
        batch = seeded.production.get(uow, batch_id)
        for text in ("zeta", "alpha", "mid"):
            add_deviation(uow, fh.actor(seeded, "qp"), batch, kind=FAILED_KIND, description=text)
        uow.commit()
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, sql: str, *_rest: Any) -> None:
        statements.append(sql)

    with seeded.uow() as uow:
        event.listen(seeded.engine, "before_cursor_execute", count)
        try:
            rows = signed_rows(uow.session, batch_id)
        finally:
            event.remove(seeded.engine, "before_cursor_execute", count)
        # the three reads it replaces
        steps = seeded.production.signoffs(uow, batch_id)
        deviations = seeded.quality.deviations(uow, batch_id)
        request = seeded.quality.exceptional.for_batch(uow, batch_id)
    assert len(statements) == 1
    assert [s.code for s in rows.steps] == [
        "line_clearance",
        "filament_loaded",
        "visual_inspection",
    ]
    assert [s.id for s in rows.steps] == [s.id for s in steps]
    assert len(rows.deviations) == 3 and len({d.opened_at for d in rows.deviations}) == 1
    assert [d.id for d in rows.deviations] == [d.id for d in deviations]
    assert [d.id for d in rows.deviations] == sorted(d.id for d in deviations)
    assert request is not None and rows.exceptional is not None
    assert rows.exceptional.id == request.id
    assert _valid(seeded, batch_id) is True  # signed before, checked through the new read

    # each part is still bound: a change to any of them breaks the QP's signature
    for table, key, column, value in (
        (StepSignoff, rows.steps[1].id, "signature_id", "sig_FORGED000000"),
        # an investigation passed off as a deviation raised before the release
        (Deviation, rows.deviations[0].id, "kind", "observation"),
        (ExceptionalRelease, request.id, "circumstances", "no reason at all"),
    ):
        with seeded.engine.begin() as conn:
            old = conn.execute(select(getattr(table, column)).where(table.id == key)).scalar_one()
            conn.execute(update(table).where(table.id == key).values({column: value}))
        assert _valid(seeded, batch_id) is False, table
        with seeded.engine.begin() as conn:
            conn.execute(update(table).where(table.id == key).values({column: old}))
        assert _valid(seeded, batch_id) is True, table


def test_the_laboratory_results_come_in_the_same_statement_in_their_order(seeded: App) -> None:
    lab.with_lab_tests(seeded)
    batch_id = lab.cell_batch(seeded)
    lab.enter(seeded, "pharmacist", batch_id, GOOD)
    corrected = {"endotoxin_eu_per_ml": 0.4}
    lab.enter(seeded, "pharmacist", batch_id, corrected, reason="sample diluted 1:10 twice")
    fh.release(seeded, batch_id)
    with seeded.uow() as uow:
        rows = signed_rows(uow.session, batch_id)
        results = seeded.quality.lab_results.rows(uow, batch_id)  # the read it replaces
        in_force = seeded.quality.lab_results.in_force_rows(uow, batch_id)
        from_rows = seeded.quality.lab_results.in_force_rows(uow, batch_id, rows.results)
    assert [r.id for r in rows.results] == [r.id for r in results]
    # the correction is a new version of its key; the one in force is the corrected value
    versions = [(r.key, r.version) for r in rows.results if r.key == "endotoxin_eu_per_ml"]
    assert versions == [("endotoxin_eu_per_ml", 1), ("endotoxin_eu_per_ml", 2)]
    assert {k: r.id for k, r in from_rows.items()} == {k: r.id for k, r in in_force.items()}
    assert from_rows["endotoxin_eu_per_ml"].value == 0.4
    assert _valid(seeded, batch_id) is True
    # the superseded version is not bound, the one in force is
    first = next(r for r in rows.results if r.version == 1 and r.key == "endotoxin_eu_per_ml")
    fh.edit(seeded, LabResult, first.id, value=99)
    assert _valid(seeded, batch_id) is True
    fh.edit(seeded, LabResult, from_rows["endotoxin_eu_per_ml"].id, value=0.04)
    assert _valid(seeded, batch_id) is False
