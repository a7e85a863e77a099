"""SQL statements per call on custody's hot paths (issue 18), so a refactor that moves a read
behind another domain's `reads.py` (issue 15 part 3) cannot add round trips unnoticed.

The expected counts follow from the code's design (docs/custody.md), counted by hand:
- a verification is one statement for the scan (the pack joined with its patient, batch
  record, order, QP review, QP signature and signed release entries, and whether the pack has
  an open hold or an in-use period: without one, the dispense check it answers as has nothing
  to read); the first scan of a batch in a process adds one for the QP signature check's
  signed rows (the review, record and signature it needs were loaded with the scan);
- the release check of a pack: one statement for the QP decision with its signature and one
  for the signed release entries; the record check: the review and the record's version;
- a forward trace by lot: the lot's EPCIS outputs, then their packs with patient, making site
  and dispense in one statement;
- a backward trace of one pack reads each thing it names once (13 statements today): a
  ceiling, not a target;
- the dispense page's pack card: one statement, the pack joined with its order, batch and
  master file through their owners' read views (it was four service reads).
Only statements from the calling thread are counted (the verification log's group-commit
writer runs on its own thread)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.custody import CustodyChain, SerialUnit, VerifyStatus
from nearfab.web.dispense import pack_card


def _one_released_batch(app: App) -> str:
    batch_id, _ = ch.released_batch(app)
    return batch_id


world = fh.world_fixture(_one_released_batch)


@pytest.fixture
def seeded(world: fh.Built) -> App:
    app: App = world.app
    return app


@pytest.fixture
def chain(seeded: App) -> CustodyChain:
    return ch.chain(seeded)


flushed_verification_log = ch.flushed_verification_log
_TRANSACTION = ("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT")


@contextmanager
def _counted(app: App) -> Iterator[list[str]]:
    statements: list[str] = []
    caller = threading.get_ident()

    def count(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if threading.get_ident() == caller and not sql.lstrip().upper().startswith(_TRANSACTION):
            statements.append(" ".join(sql.split())[:200])

    event.listen(app.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(app.engine, "before_cursor_execute", count)


def _statements(app: App, call: Callable[[Any], Any]) -> list[str]:
    with app.uow() as uow, _counted(app) as statements:
        call(uow)
    return statements


def _pack(world: fh.Built) -> SerialUnit:
    return ch.units(world.app, world.data)[0]


def test_verification_statements(seeded: App, world: fh.Built) -> None:
    unit = _pack(world)
    actor = fh.actor(seeded, "pharmacist")

    def verify(uow: Any) -> None:
        answer = seeded.custody.verify(uow, actor, scan=ch.scan(unit))
        assert answer.status == VerifyStatus.OK, answer

    cold = _statements(seeded, verify)  # the batch's first scan in this process
    warm = _statements(seeded, verify)
    assert len(cold) == 2, cold
    assert len(warm) == 1, warm
    assert "serial_units" in warm[0], warm


def test_release_check_statements(seeded: App, world: fh.Built) -> None:
    unit = _pack(world)
    integrity = _statements(seeded, lambda uow: seeded.custody.integrity_problem(uow, unit))
    with seeded.uow() as uow:  # the QP signature is checked once, then remembered
        assert seeded.custody.release_signature_ok(uow, unit.batch_id) is True
    signature = _statements(
        seeded, lambda uow: seeded.custody.release_signature_ok(uow, unit.batch_id)
    )
    assert len(integrity) == 2, integrity
    assert len(signature) == 2, signature


def test_trace_statements(seeded: App, world: fh.Built, chain: CustodyChain) -> None:
    unit = _pack(world)
    qp = fh.actor(seeded, "qp")
    backward = _statements(seeded, lambda uow: chain.trace.unit(uow, qp, unit.id))
    with seeded.uow() as uow:
        lot = chain.trace.unit(uow, qp, unit.id)["material_lots"][0]["lot_number"]
    forward = _statements(seeded, lambda uow: chain.trace.lot(uow, qp, lot))
    assert len(backward) <= 13, backward
    assert len(forward) == 2, forward
    with seeded.uow() as uow:  # the count is of a real answer: the pack found by its lot
        assert [u["unit_id"] for u in chain.trace.lot(uow, qp, lot)["units"]] == [unit.id]


def test_pack_card_statements(seeded: App, world: fh.Built) -> None:
    unit = _pack(world)
    card: dict[str, Any] = {}
    statements = _statements(seeded, lambda uow: card.update(pack_card(seeded, uow, unit.id)))
    assert len(statements) == 1, statements
    assert "serial_units" in statements[0], statements
    # the words a pharmacist checks against the label (flow_helpers' default order:
    # hydrocortisone, dose_mg=2.0, written "2 mg"; the solid-dose kit names a printlet and
    # counts a pack in tablets)
    assert card == {
        "product": "Hydrocortisone 2 mg printlet",
        "strength": "2 mg",
        "quantity": f"{unit.quantity} tablets",
        "lot": unit.batch_number,
        "expiry": unit.expiry.isoformat(),
        "serial": unit.serial,
    }
