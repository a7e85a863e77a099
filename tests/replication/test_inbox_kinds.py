"""Issue 17, two weaknesses of the replication inbox.

1. What waits at a site node is tried again at each pass of its link, not only when the next
   batch of control records arrives: a new version of an order waiting while the order it
   replaces is scheduled is taken at the link's next pass once that order is made, with
   nothing new received; records acted on or refused are left alone; a waiting row is not
   written again while its reason stays the same.
2. An inbox record says what it is about in an indexed column (`about`: an audit row's
   `entity_type`, a ledger entry's `kind`), filled as it is stored and, by migration 0033,
   for the rows stored before; `decisions.waiting_at` and `outcomes.site_outcomes` select by
   it instead of scanning the payloads' text, which took for a hand-over a record carrying
   the text `"entity_type":"order_handover"` in another field, and missed one whose JSON was
   written with spaces.

Two real nodes (test_replication_mqtt.nodes), a real Mosquitto for the link. Expected values
come from the site's own audit rows read directly, and the column's from the records'
payloads parsed here by the documented rule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, func, insert, inspect, select, text
from tests import flow_helpers as fh
from tests.orders.test_order_migration import two_databases
from tests.replication.test_chaos import network
from tests.replication.test_order_handover import (
    adjust_at_control,
    cancel_at_control,
    cancellation_outcomes,
    dose_ruled,
    handover_outcomes,
    order_columns,
    waiting_rows,
)
from tests.replication.test_release_across import deliver
from tests.replication.test_replication_mqtt import broker, nodes, repl, wait_for
from tests.replication.test_site_node_work import order_for
from tests.telemetry.test_mqtt import Broker

from nearfab.bootstrap import App
from nearfab.bus import EventBus
from nearfab.common.clock import ManualClock
from nearfab.db import make_engine, make_session_factory
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import AuditAction, AuditEntry, audit, system_actor
from nearfab.migrations import alembic_config
from nearfab.replication import ReplicationService
from nearfab.replication.capture import CaptureConfig
from nearfab.replication.decisions import (
    APPLIED_ENTITY,
    WAITING_ENTITY,
    ControlDecisions,
    _Waits,
    waiting_at,
)
from nearfab.replication.link import NodeLink
from nearfab.replication.logic import Record, record_hash, record_id
from nearfab.replication.models import InboxRecord
from nearfab.replication.outcomes import site_outcomes
from nearfab.telemetry import BrokerAddress
from nearfab.uow import UnitOfWork

__all__ = ["broker", "dose_ruled", "network", "nodes", "two_databases"]


def decisions_of(site: App) -> ControlDecisions:
    decisions = repl(site).decisions
    assert isinstance(decisions, ControlDecisions)
    return decisions


def audit_head(app: App) -> int:
    with app.uow() as uow:
        return int(uow.session.scalar(select(func.max(AuditEntry.seq))) or 0)


def rows_about(app: App, record_id_: str) -> list[tuple[str, str]]:
    """The site's rows about one control record: (entity type, action), in order."""
    with app.uow() as uow:
        return [
            (r.entity_type, r.action)
            for r in uow.session.scalars(
                select(AuditEntry)
                .where(AuditEntry.entity_id == record_id_)
                .order_by(AuditEntry.seq)
            )
        ]


def record_of(app: App, entity: str, entity_id: str) -> str:
    """The id of the control's audit record about (entity, id) held in `app`'s inbox."""
    with app.uow() as uow:
        for rec in uow.session.scalars(
            select(InboxRecord).where(InboxRecord.kind == "audit").order_by(InboxRecord.seq)
        ):
            row = json.loads(rec.payload)
            if row.get("entity_type") == entity and row.get("entity_id") == entity_id:
                return rec.id
    raise AssertionError(f"no record about {entity} {entity_id}")


def something_written_here(site: App) -> None:
    """A row of the site's own work, unrelated to any control record (moves its trail)."""
    with site.uow() as uow:
        audit(
            uow,
            system_actor("operator"),
            AuditAction.CREATE,
            "work",
            "w-1",
            new={"note": "unrelated"},
            site_id=repl(site).site_id,
        )
        uow.commit()


def waiting_new_version(site: App, control: App) -> tuple[str, str]:
    """On `dose_ruled`'s nodes (`with_dose_rule` done): an order handed over and scheduled at
    the site, then its dose adjusted at the control: the new version waits at the site
    (`scheduled`). (first order, new version)."""
    first = order_for(control, "GSTT-PH")
    deliver(control, site)
    fh.schedule(site, first)
    second = adjust_at_control(control, first)
    deliver(control, site)
    assert order_columns(site, second) is None
    (waits,) = waiting_rows(site, second)
    assert waits.new is not None and waits.new["code"] == "scheduled"
    return first, second


# --- 1. what waits, tried again with nothing new received ---------------------------------------


def test_a_version_waiting_for_a_scheduled_order_is_taken_by_the_link_once_the_order_is_made(
    dose_ruled: tuple[App, App, None], broker: Broker
) -> None:
    """The site's link runs its passes with nothing arriving from the control (the control
    publishes nothing here). While the order is scheduled, the passes leave the new version
    waiting and write nothing (the waiting row is not written again). Once the site's runner
    has made the order, the link's next pass takes the new version: before, it waited for
    the control's next record, which may never come."""
    site, control, _ = dose_ruled
    first, second = waiting_new_version(site, control)
    link = NodeLink(
        repl(site),
        site.uow,
        BrokerAddress("127.0.0.1", broker.port),
        site.clock,
        control_site_id=repl(control).site_id,
        every_s=0.05,
    )
    try:
        link.pass_once()  # subscribed; the version still waits (the order is scheduled)
        head = audit_head(site)
        for _ in range(3):
            link.pass_once()
        assert audit_head(site) == head  # nothing written: the same reason is not repeated
        assert len(waiting_rows(site, second)) == 1
        assert handover_outcomes(site, second) == []

        fh.run(site)  # the runner makes the first version: it leaves the plan
        assert fh.order_status(site, first) not in ("scheduled", "designed", "received")
        link.start()  # the link's own loop, nothing received
        assert wait_for(lambda: handover_outcomes(site, second) == [("create", "taken here")])
    finally:
        link.stop()
    assert order_columns(site, second) == order_columns(control, second)
    assert len(waiting_rows(site, second)) == 1  # the wait stays as history, once
    with site.uow() as uow:
        assert waiting_at(uow, repl(site).site_id, repl(control).site_id) == []


def test_a_retry_leaves_records_applied_or_refused_alone_and_runs_only_when_needed(
    dose_ruled: tuple[App, App, None],
) -> None:
    """Three control records at the site: a cancellation refused (its order made here), a
    hand-over taken, and a new version waiting while that order is scheduled. A retry with
    nothing written here since the last pass does nothing; after an unrelated row it passes
    again: the waiting version still waits (no new row), the other two are not touched. Once
    the order is made the retry takes the version, and from then on nothing waits: a retry
    does nothing, whatever is written here."""
    site, control, _ = dose_ruled
    made = order_for(control, "GSTT-PH")
    deliver(control, site)
    fh.run(site)
    cancel_at_control(control, made)
    deliver(control, site)
    ((action, _outcome),) = cancellation_outcomes(site, made)
    assert action == "refuse"
    refused = record_of(site, "order_cancellation", made)
    first = order_for(control, "GSTT-PH")
    deliver(control, site)
    taken = record_of(site, "order_handover", first)
    fh.schedule(site, first)
    second = adjust_at_control(control, first)
    deliver(control, site)
    waiting = record_of(site, "order_handover", second)
    before = {r: rows_about(site, r) for r in (refused, taken, waiting)}
    assert before == {
        refused: [(APPLIED_ENTITY, "refuse")],
        taken: [(APPLIED_ENTITY, "create")],
        waiting: [(WAITING_ENTITY, "create")],
    }
    decisions = decisions_of(site)

    assert decisions.retry_waiting(site.uow) is not None  # the pass above wrote its wait
    assert decisions.retry_waiting(site.uow) is None  # nothing written here since
    something_written_here(site)
    again = decisions.retry_waiting(site.uow)
    assert again is not None and again.applied == [] and list(again.waiting) == [waiting]
    assert {r: rows_about(site, r) for r in before} == before  # nothing acted on again

    fh.run(site)  # the first version made: off the plan
    took = decisions.retry_waiting(site.uow)
    assert took is not None and took.applied == [waiting] and took.waiting == {}
    assert rows_about(site, waiting) == [(WAITING_ENTITY, "create"), (APPLIED_ENTITY, "create")]
    assert {r: rows_about(site, r) for r in (refused, taken)} == {
        r: before[r] for r in (refused, taken)
    }
    something_written_here(site)
    assert decisions.retry_waiting(site.uow) is None  # nothing waits: not a statement
    assert handover_outcomes(site, second) == [("create", "taken here")]


# --- 2. the column `about` ----------------------------------------------------------------------


def expected_about(kind: str, payload: str) -> str | None:
    """The documented rule (docs/replication.md), written out here: an audit row's
    `entity_type`, a ledger entry's `kind`, nothing for the other kinds."""
    if kind not in ("audit", "ledger"):
        return None
    row = json.loads(payload)
    return row["entity_type"] if kind == "audit" else row["kind"]


def test_each_record_stored_says_what_it_is_about(nodes: tuple[App, App]) -> None:
    """Both ways: the control's decisions at the site (audit rows and its ledger entries),
    and a site's batch at the control (audit rows, ledger entries, the batch summary and the
    telemetry summary, which are about nothing the column names)."""
    site, control = nodes
    order_for(control, "GSTT-PH")
    deliver(control, site)
    fh.make_batch(site)
    deliver(site, control)
    seen: set[str] = set()
    for app in (site, control):
        with app.uow() as uow:
            held = list(uow.session.scalars(select(InboxRecord)))
        assert held
        for rec in held:
            assert rec.about == expected_about(rec.kind, rec.payload), rec.id
            seen.add(rec.kind)
    assert {"audit", "ledger", "batch"} <= seen


def _record(origin: str, seq: int, kind: str, payload: str) -> Record:
    ref = f"{kind}:{seq}"
    values: dict[str, Any] = {
        "id": record_id(origin, ref),
        "origin_site": origin,
        "seq": seq,
        "kind": kind,
        "source_ref": ref,
        "chain_hash": "c" * 64,
        "prev_hash": "0" * 64,
        "payload": payload,
    }
    return Record(**values, record_hash=record_hash(**values), created_at="2026-12-08T00:00:00")


@pytest.fixture
def service_uow(database_url: str) -> Iterator[tuple[ReplicationService, UnitOfWork]]:
    """A node's replication service on a migrated, empty database (SQLite and PostgreSQL)."""
    engine = make_engine(database_url)
    clock = ManualClock()
    factory = make_session_factory(engine)
    service = ReplicationService(CaptureConfig(site_id="SITE-A", clock=clock))
    yield service, UnitOfWork(factory, clock, EventBus())
    engine.dispose()


def test_the_column_is_filled_as_the_inbox_stores_a_record(
    service_uow: tuple[ReplicationService, UnitOfWork],
) -> None:
    service, uow = service_uow
    payloads = [
        ("audit", '{"entity_type":"order_handover","entity_id":"O-1"}', "order_handover"),
        ("ledger", '{"kind":"decision","ref":"order_handover:O-1"}', "decision"),
        ("batch", '{"entity_type":"order_handover","status":"made"}', None),
        ("audit", "not JSON at all", None),
        ("audit", '["entity_type", "order_handover"]', None),
        # the marker's text inside another field: the row is about a master file
        (
            "audit",
            '{"entity_type":"master_file","new":{"note":{"entity_type":"order_handover"}}}',
            "master_file",
        ),
    ]
    records = [_record("CTRL", i, k, p) for i, (k, p, _) in enumerate(payloads, start=1)]
    with uow:
        done = service.apply(uow, [r.to_message() for r in records])
    assert done.applied == len(payloads)
    with uow:
        found = dict(uow.session.execute(select(InboxRecord.seq, InboxRecord.about)).all())
    assert found == {i: about for i, (_k, _p, about) in enumerate(payloads, start=1)}


def _inbox_row(i: int, kind: str, payload: str) -> dict[str, Any]:
    at = datetime(2026, 12, 8, tzinfo=UTC)
    return {
        "id": f"CTRL/{kind}:{i}",
        "origin_site": "CTRL",
        "seq": i,
        "kind": kind,
        "source_ref": f"{kind}:{i}",
        "chain_hash": "c" * 64,
        "prev_hash": "0" * 64,
        "record_hash": "h" * 64,
        "payload": payload,
        "created_at": at,
        "received_at": at,
    }


def test_0033_fills_the_rows_stored_before_it_and_goes_down_and_up(
    two_databases: tuple[str, str],
) -> None:
    """2,500 records held at 0032 (more than the migration's 1,000 a step): each audit row
    about its `entity_type`, each ledger entry its `kind`, the rest nothing, a payload that
    is not a JSON object nothing; the index made; down to 0032 and up again."""
    url = two_databases[0]
    cfg = alembic_config(url)
    command.upgrade(cfg, "0032")
    shapes = [
        ("audit", '{"entity_type":"replication_waiting","entity_id":"x"}', "replication_waiting"),
        ("ledger", '{"kind":"decision","ref":"r"}', "decision"),
        ("batch", '{"entity_type":"batch","status":"made"}', None),
        ("audit", "{not json", None),
        ("audit", '"just a string"', None),
        (
            "audit",
            '{"entity_type":"recall","new":{"x":{"entity_type":"order_handover"}}}',
            "recall",
        ),
        ("audit", '{"entity_type": "order_handover", "entity_id": "O-9"}', "order_handover"),
    ]
    rows = [_inbox_row(i, *shapes[i % len(shapes)][:2]) for i in range(1, 2501)]
    expected = {r["id"]: shapes[r["seq"] % len(shapes)][2] for r in rows}
    engine = create_engine(url)
    try:
        table = _inbox_table(engine)
        with engine.begin() as conn:
            conn.execute(insert(table), rows)
        engine.dispose()
        command.upgrade(cfg, "0033")
        with engine.connect() as conn:
            found = dict(conn.execute(text("SELECT id, about FROM replication_inbox")).all())
        assert found == expected
        indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes(table.name)}
        assert indexes["ix_replication_inbox_about"] == ["about", "origin_site", "seq"]
        engine.dispose()
        command.downgrade(cfg, "0032")
        columns = {c["name"] for c in inspect(engine).get_columns(table.name)}
        assert "about" not in columns
        engine.dispose()
        command.upgrade(cfg, "0033")
        with engine.connect() as conn:
            again = dict(conn.execute(text("SELECT id, about FROM replication_inbox")).all())
        assert again == expected
    finally:
        engine.dispose()


def _inbox_table(engine: Any) -> Any:
    from sqlalchemy import MetaData, Table

    return Table("replication_inbox", MetaData(), autoload_with=engine)


# --- 2b. what the text scan got wrong -------------------------------------------------------------


def _held_control_record(site: App, control_id: str, payload: str) -> Record:
    """A control audit record stored in the site's inbox after what it holds (hash and link
    made as a node makes them)."""
    with site.uow() as uow:
        last = uow.session.scalars(
            select(InboxRecord)
            .where(InboxRecord.origin_site == control_id)
            .order_by(InboxRecord.seq.desc())
            .limit(1)
        ).first()
        seq = last.seq + 1 if last is not None else 1
        prev = last.record_hash if last is not None else "0" * 64
    ref = f"audit:test-{seq}"
    values: dict[str, Any] = {
        "id": record_id(control_id, ref),
        "origin_site": control_id,
        "seq": seq,
        "kind": "audit",
        "source_ref": ref,
        "chain_hash": "c" * 64,
        "prev_hash": prev,
        "payload": payload,
    }
    record = Record(**values, record_hash=record_hash(**values), created_at="2026-12-08T00:00:00")
    with site.uow() as uow:
        assert repl(site).apply(uow, [record.to_message()]).applied == 1
    return record


def test_waiting_at_goes_by_what_a_record_is_about_not_by_its_text(
    nodes: tuple[App, App],
) -> None:
    """Two control records with a `replication_waiting` row of the site each, as the site
    writes it (`ControlDecisions._wait`): a master-file record whose payload carries
    `"entity_type":"order_handover"` inside another field, which is no hand-over and is not
    listed (the text scan listed it, as an order handed over); and a hand-over whose JSON was
    written with a space after each colon (its hash covers that text, so it is held as sent),
    which is listed (the text scan missed it)."""
    site, control = nodes
    control_id, site_id = repl(control).site_id, repl(site).site_id
    decoy_row = {
        "entity_type": "master_file",
        "entity_id": "MF-DECOY",
        "action": "update",
        "new": {"label": {"entity_type": "order_handover"}},
    }
    decoy_text = json.dumps(decoy_row, separators=(",", ":"))
    assert '"entity_type":"order_handover"' in decoy_text
    decoy = _held_control_record(site, control_id, decoy_text)
    spaced_row = {
        "entity_type": "order_handover",
        "entity_id": "ORD-SPACED",
        "action": "create",
        "new": {"order": {"master_file_code": "HC", "master_file_version": 2}},
    }
    spaced_text = json.dumps(spaced_row)  # ", " and ": "
    assert '"entity_type":"order_handover"' not in spaced_text
    spaced = _held_control_record(site, control_id, spaced_text)
    decisions = decisions_of(site)
    for record, row in ((decoy, decoy_row), (spaced, spaced_row)):
        decisions._wait(site.uow, record, row, _Waits("waits for a test", "scheduled"))

    with site.uow() as uow:
        listed = {w.record_id: w.what for w in waiting_at(uow, site_id, control_id)}
    assert listed == {spaced.id: "order ORD-SPACED handed over (made to HC v2)"}


def test_site_outcomes_reads_the_rows_by_the_column(nodes: tuple[App, App]) -> None:
    """At the control: a site's refusal (a cancellation of an order made there) is listed, read
    by the column; a site record that is no row about a control record but carries the text
    `"entity_type":"replication_waiting"` in another field is not."""
    site, control = nodes
    order_id = order_for(control, "GSTT-PH")
    deliver(control, site)
    fh.run(site)
    cancel_at_control(control, order_id)
    deliver(control, site)
    with site.uow() as uow:
        audit(
            uow,
            system_actor("operator"),
            AuditAction.CREATE,
            "work",
            "w-2",
            new={"copied": {"entity_type": "replication_waiting", "entity_id": "nothing"}},
            site_id=repl(site).site_id,
        )
        uow.commit()
    deliver(site, control)
    origin = repl(site).site_id
    with control.uow() as uow:
        about = dict(
            uow.session.execute(
                select(InboxRecord.id, InboxRecord.about).where(
                    InboxRecord.origin_site == origin, InboxRecord.kind == "audit"
                )
            ).all()
        )
        found = site_outcomes(uow, [origin])
    (outcome,) = found
    assert outcome.state == "refused" and outcome.entity_type == "order_cancellation"
    assert about[outcome.site_row] == APPLIED_ENTITY
    assert WAITING_ENTITY not in about.values()  # the copied text is about "work"
    assert "work" in about.values()


def test_a_transfer_waiting_for_its_orders_handover_is_listed_and_retried_with_it(
    network: dict[str, App],
) -> None:
    """St Thomas' node fails to install the control's new master-file version (a database
    error, twice): the order handed over on it waits there, and so does the control's transfer
    of that order to Manchester (`order_not_held`). "Waiting here" lists both, the transfer in
    words. The fault gone, one retry with nothing received installs the version (the record
    that failed), takes the order and gives it up for the transfer, in seq order."""
    control, giver = network["CTRL"], network["GSTT-PH"]
    control_id, giver_id = repl(control).site_id, repl(giver).site_id
    to_site = fh.site_id(control, "MAN-PH")
    decisions = decisions_of(giver)
    real = decisions._master_files

    class Broken:
        def install_published(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("disk I/O error")

    decisions._master_files = Broken()  # type: ignore[assignment]
    try:
        fh.new_version(control, HYDROCORTISONE)
        order_id = order_for(control, "GSTT-PH")
        deliver(control, giver)
        assert control.transfers is not None
        with control.uow() as uow:
            control.transfers.request(
                uow, fh.actor(control, "planner"), order_id, to_site="MAN-PH", reason="printers"
            )
        deliver(control, giver)
    finally:
        decisions._master_files = real
    with giver.uow() as uow:
        listed = {w.what: w.code for w in waiting_at(uow, giver_id, control_id)}
    assert listed[f"order {order_id} moved to site {to_site} at the control site"] == (
        "order_not_held"
    )
    assert sum(what.startswith(f"order {order_id} handed over") for what in listed) == 1
    transfer = record_of(giver, "order_transfer", order_id)

    done = decisions.retry_waiting(giver.uow)
    assert done is not None and done.waiting == {} and done.failed == {}
    assert transfer in done.applied and len(done.applied) == 3
    assert fh.order_status(giver, order_id) == "cancelled"  # given up here
    with giver.uow() as uow:
        assert waiting_at(uow, giver_id, control_id) == []
