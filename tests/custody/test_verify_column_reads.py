"""Verification reads the scanned pack, its review, its batch record and the QP's signature as
plain columns in one statement (not as ORM entities) and hands them to the checks as values
(docs/performance.md, "Ninth pass"). Nothing read that way is remembered from one scan to the
next: a change made with SQL behind the application's back (`row_version` kept) to the pack's
row, the review's decision or the signature row is caught by the next scan of the process that
already verified the batch, and by a fresh process (a new App on the same database, empty
caches, as after a restart). A change to the batch record itself is caught by a fresh process
(the running one remembers a signature check by the record's and review's versions, as
before: docs/custody.md). Both databases."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import text
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch
from tests.custody.test_verify_stored_telemetry import (
    _fresh,
    _sql,
    flushed_verification_log,
    released,
    restarted,
    seeded,
    world,
)

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import Refused
from nearfab.custody import SerialUnit, Verification, VerifyStatus, make_identifier

# the same built world as the stored-telemetry tests: one released batch, copied per test
__all__ = ["flushed_verification_log", "released", "restarted", "seeded", "world"]


def _sql_past_triggers(app: App, statement: str, **params: object) -> None:
    """`_sql` with the table's append-only triggers lifted first (signatures refuse an UPDATE:
    someone who can write to the database can also lift them); put back after on PostgreSQL
    (SQLite's are dropped, in this test's own copy of the database)."""
    with app.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE signatures DISABLE TRIGGER USER")
        else:
            names = conn.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
                {"t": "signatures"},
            ).scalars()
            for name in list(names):
                conn.exec_driver_sql(f'DROP TRIGGER "{name}"')
        result = conn.execute(text(statement), params)
        assert result.rowcount == 1, statement  # type: ignore[attr-defined]
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE signatures ENABLE TRIGGER USER")


def _verify(app: App, unit: SerialUnit) -> Verification:
    with app.uow() as uow:
        return app.custody.verify(uow, fh.actor(app, "pharmacist"), scan=ch.scan(unit))


def test_a_good_pack_verifies_and_its_answer_carries_the_row_as_read(
    seeded: App, released: tuple[str, list[SerialUnit]]
) -> None:
    """The answer's pack fields are the pack's row (read as columns), twice in one process:
    the first scan checks the signatures, the second finds them remembered."""
    _, packs = released
    for _ in range(2):
        answer = _verify(seeded, packs[0])
        assert answer.status == VerifyStatus.OK, answer.message
        assert (answer.unit_id, answer.serial, answer.unit_status) == (
            packs[0].id,
            packs[0].serial,
            "released",
        )


# (what is changed, the SQL, the answer of the next scan): each one of the things a scan reads
# as columns and hands on as values, changed behind the application's back
_EDITS = [
    (
        "the pack's status",
        "UPDATE serial_units SET status = 'recalled' WHERE id = :unit",
        VerifyStatus.RECALLED,
    ),
    (
        "the review's decision",
        "UPDATE release_reviews SET decision = 'reject' WHERE batch_id = :batch",
        VerifyStatus.INTEGRITY_FAILURE,
    ),
    (
        "the signer's name on the signature row",
        "UPDATE signatures SET signer_name = 'Mallory' WHERE id = "
        "(SELECT signature_id FROM release_reviews WHERE batch_id = :batch)",
        VerifyStatus.INTEGRITY_FAILURE,
    ),
    (
        "the record hash on the signature row",
        "UPDATE signatures SET record_hash = :forged WHERE id = "
        "(SELECT signature_id FROM release_reviews WHERE batch_id = :batch)",
        VerifyStatus.INTEGRITY_FAILURE,
    ),
]


@pytest.mark.parametrize(("what", "sql", "expected"), _EDITS, ids=[e[0] for e in _EDITS])
def test_a_row_changed_with_sql_is_caught_by_the_running_and_a_fresh_process(
    seeded: App,
    released: tuple[str, list[SerialUnit]],
    clock: ManualClock,
    restarted: list[App],
    what: str,
    sql: str,
    expected: VerifyStatus,
) -> None:
    batch_id, packs = released
    pack = packs[0]
    assert _verify(seeded, pack).status == VerifyStatus.OK  # checked and remembered here
    edit = _sql_past_triggers if "signatures" in sql else _sql
    edit(seeded, sql, unit=pack.id, batch=batch_id, forged="0" * 64)
    running = _verify(seeded, pack)
    assert running.status == expected, (what, running.message)
    fresh = _verify(_fresh(seeded, clock, restarted), pack)
    assert fresh.status == expected, (what, fresh.message)


def test_a_pack_relabelled_with_a_later_expiry_is_caught_by_the_running_and_a_fresh_process(
    seeded: App,
    released: tuple[str, list[SerialUnit]],
    clock: ManualClock,
    restarted: list[App],
) -> None:
    """The pack's row given a later expiry with SQL and a label printed to match it: the label
    and the row agree, the signed release does not (an integrity failure)."""
    _, packs = released
    pack = packs[0]
    assert _verify(seeded, pack).status == VerifyStatus.OK
    later = pack.expiry + timedelta(days=365)
    _sql(seeded, "UPDATE serial_units SET expiry = :e WHERE id = :u", e=later, u=pack.id)
    label = (
        "]d2" + make_identifier(pack.gtin, pack.serial, pack.batch_number, later).datamatrix_data()
    )
    actor = fh.actor(seeded, "pharmacist")
    for app in (seeded, _fresh(seeded, clock, restarted)):
        with app.uow() as uow:
            answer = app.custody.verify(uow, actor, scan=label)
        assert answer.status == VerifyStatus.INTEGRITY_FAILURE, answer.message
        assert "expiry" in answer.message


def test_a_record_document_changed_with_sql_is_caught_by_a_fresh_process(
    seeded: App,
    released: tuple[str, list[SerialUnit]],
    clock: ManualClock,
    restarted: list[App],
) -> None:
    """The record's documents come as text with the pack and are decoded into the values the
    QP signature check hashes: the design changed with SQL (its telemetry untouched, so the
    stored telemetry's hash still matches) no longer matches the signature; dispense refuses."""
    batch_id, packs = released
    with seeded.engine.connect() as conn:
        design = json.loads(
            conn.execute(
                text("SELECT CAST(design AS TEXT) FROM batch_records WHERE id = :b"),
                {"b": batch_id},
            ).scalar_one()
        )
    assert isinstance(design, dict) and design
    design["changed"] = True
    _sql(
        seeded,
        "UPDATE batch_records SET design = :d WHERE id = :b",
        d=json.dumps(design),
        b=batch_id,
    )
    app = _fresh(seeded, clock, restarted)
    answer = _verify(app, packs[0])
    assert answer.status == VerifyStatus.NOT_RELEASED, answer.message
    with pytest.raises(Refused) as refused:
        ch.dispense(app, packs[0])
    assert refused.value.code == "record_changed"


def test_the_values_handed_on_are_in_no_session(
    seeded: App, released: tuple[str, list[SerialUnit]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the QP signature check is handed (the review, the record, the signature) is read
    from the database in the scan's own transaction and attached to no session: nothing of
    it can be written back, and a full check reads the record afresh."""
    from sqlalchemy import inspect

    _, packs = released
    seen: list[object] = []
    real = seeded.quality.signature_valid

    def spy(uow: object, review: object, **kw: object) -> bool | None:
        seen.extend([review, kw["batch"], kw["sig"]])
        return real(uow, review, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(seeded.quality, "signature_valid", spy)
    assert _verify(seeded, packs[0]).status == VerifyStatus.OK
    assert len(seen) == 3
    for value in seen:
        state = inspect(value)
        assert state.transient and state.session is None, value
