"""Issue 17, first slice: a site node and a control node, each a nearfab App on its own SQLite
database, replicating through a real Mosquitto (QoS 1, persistent sessions).

The site's outbox is filled in the transactions that write its audit rows and ledger entries;
the replicator publishes it and marks what the broker acknowledged; the control node's inbox
applies each record once and names a gap, a duplicate and a fork. The expected counts come
from the site's own database (its audit chain and ledger, read directly), never from the
replication code's answers."""

from __future__ import annotations

import copy
import itertools
import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.conftest import CLOCK_JUMPS
from tests.telemetry.test_mqtt import Broker

from nearfab.bootstrap import App, build_app
from nearfab.common.clock import ManualClock
from nearfab.config import Settings
from nearfab.custody import LedgerEntry, export_site_keys, import_site_keys, parse_site_keys
from nearfab.custody.enums import LedgerKind
from nearfab.identity import AuditAction, AuditEntry, audit, system_actor
from nearfab.materials import MaterialLot
from nearfab.replication import (
    OutboxPublisher,
    ReplicationService,
    SendResult,
    parse_message,
    replicate_once,
    start_inbox,
    topic,
    verify_chain,
)
from nearfab.replication.logic import GENESIS, Record, record_hash
from nearfab.replication.models import InboxRecord, OutboxRecord
from nearfab.telemetry import BrokerAddress


@pytest.fixture
def broker() -> Iterator[Broker]:
    folder = Path(tempfile.mkdtemp(prefix="nearfab-repl-"))
    folder.chmod(0o777)  # mosquitto started as root drops to its own user
    b = Broker(folder)
    b.start()
    yield b
    b.stop()
    shutil.rmtree(folder, ignore_errors=True)


NODES = (("site", "GSTT-PH"), ("control", "CTRL"))  # (data folder, node site) of `nodes`


def _node_apps(folder: Path, clock: ManualClock) -> list[App]:
    """The site node and the control node on the data folders `folder/site`, `folder/control`."""
    apps = []
    for name, code in NODES:
        settings = Settings(data_dir=folder / name, node_site=code, **CLOCK_JUMPS)
        apps.append(build_app(settings, clock=clock, migrate=False))
    return apps


def _seeded_node_folders(request: pytest.FixtureRequest, folder: Path) -> None:
    """`folder/site` and `folder/control`: each a copy of the seeded demo network (its database
    and its keys)."""
    fh._seeded_sqlite(request, folder)  # the seeded template, copied to folder
    template = fh._TEMPLATES[("sqlite", str(request.getfixturevalue("sqlite_template")))]
    for name, _code in NODES:
        data = folder / name  # the node's data folder: its database and its keys
        data.mkdir()
        shutil.copyfile(folder / "nearfab.db", data / "nearfab.db")
        shutil.copytree(fh._KEYS[template], data / "keys")


@pytest.fixture
def nodes(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[tuple[App, App]]:
    """(site node GSTT-PH, control node CTRL): two copies of the seeded demo network, each
    its own database and data folder, each a node of its own site."""
    _seeded_node_folders(request, tmp_path)
    apps = _node_apps(tmp_path, clock)
    yield apps[0], apps[1]
    for app in apps:
        app.engine.dispose()


# --- the two nodes after a costly start, built once -----------------------------------------
#
# `nodes_world(builder)`: `builder(site, control)` runs once per xdist worker on a `nodes` pair
# (a ManualClock at the default start), through the product, and returns plain data (ids). Both
# nodes' data folders (databases and keys) are then its template; each test gets its own copy
# of both, its `clock` moved to where the builder stopped, and a deep copy of the data: what
# the test would have had by running the builder itself first (ids are random, so every copy
# holds the same ids; in-memory state of the builder's Apps, such as the simulated machines',
# is not carried over, as with `flow_helpers.world_fixture`).

_NODE_WORLDS: dict[tuple[str, str], tuple[Path, datetime, Any]] = {}


def _node_world(
    request: pytest.FixtureRequest, builder: Callable[[App, App], Any]
) -> tuple[Path, datetime, Any]:
    key = (
        f"{builder.__module__}.{builder.__qualname__}",
        str(request.getfixturevalue("sqlite_template")),
    )
    if key not in _NODE_WORLDS:
        folder: Path = request.getfixturevalue("tmp_path_factory").mktemp("nodes-world")
        _seeded_node_folders(request, folder)
        clock = ManualClock()
        apps = _node_apps(folder, clock)
        try:
            data = builder(apps[0], apps[1])
            for app in apps:
                app.shutdown()  # nothing buffered is left behind
        finally:
            for app in apps:
                app.engine.dispose()
        for name, _code in NODES:  # fold each WAL into its file before copying
            with sqlite3.connect(folder / name / "nearfab.db") as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _NODE_WORLDS[key] = (folder, clock.now(), data)
    return _NODE_WORLDS[key]


def nodes_world(builder: Callable[[App, App], Any]) -> Any:
    """A function-scoped fixture: (site node, control node, the builder's data), each test its
    own copy of the two nodes as `builder` left them (built once per worker). A module opts in
    with `made_at_site = nodes_world(_made)`."""

    @pytest.fixture
    def fixture(
        request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
    ) -> Iterator[tuple[App, App, Any]]:
        folder, at, data = _node_world(request, builder)
        for name, _code in NODES:
            shutil.copytree(folder / name, tmp_path / name)
        clock.advance((at - clock.now()).total_seconds())  # where the builder stopped
        apps = _node_apps(tmp_path, clock)
        yield apps[0], apps[1], copy.deepcopy(data)
        for app in apps:
            app.engine.dispose()

    return fixture


def _made(site: App, control: App) -> str:
    """A batch made at the site node (`fh.make_batch`: made, its steps signed, its audit
    trail reviewed); its id."""
    return fh.make_batch(site)


#: (site, control, batch id): `nodes` after `fh.make_batch(site)`, the first step of the tests
#: that ask for it (here, test_decisions.py, test_comparability_across.py)
made_at_site = nodes_world(_made)


def repl(app: App) -> ReplicationService:
    assert app.replication is not None
    return app.replication


def register_site_keys(site: App, control: App) -> list[str]:
    """The site node's ledger public keys registered at the control, as a deployment does after
    the fact (`nearfab node keys export` at the site, `nearfab node keys import` at the control):
    a key the site made after its copy is then checked there, and its origin may be anchored.
    The key ids registered now."""
    with site.uow() as uow:
        document = export_site_keys(uow.session, repl(site).site_id)
    with control.uow() as uow:
        done = import_site_keys(
            uow,
            system_actor("provisioning"),
            parse_site_keys(document),
            own_site_id=repl(control).site_id,
            reason="the site node's keys, exported there",
        )
    return done.registered


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def owned_rows(site: App) -> set[str]:
    """What the site node owns, read from its own tables: every audit row and every entry of
    its ledger chain, as `audit:<seq>` / `ledger:<site>:<seq>`."""
    site_id = repl(site).site_id
    with site.uow() as uow:
        audit = uow.session.scalars(select(AuditEntry.seq)).all()
        ledger = uow.session.scalars(
            select(LedgerEntry.seq).where(LedgerEntry.site_id == site_id)
        ).all()
    return {f"audit:{s}" for s in audit} | {f"ledger:{site_id}:{s}" for s in ledger}


def inbox_refs(control: App, origin: str) -> list[str]:
    with control.uow() as uow:
        return list(
            uow.session.scalars(
                select(InboxRecord.source_ref)
                .where(InboxRecord.origin_site == origin)
                .order_by(InboxRecord.seq)
            )
        )


def inbox_count(control: App) -> int:
    with control.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(InboxRecord)) or 0)


def some_work(site: App, n: int) -> None:
    """Site-local work while cut off, `n` transactions: each adds one custody fact to the
    site's ledger chain and one audit row (one minute of the site's time apart)."""
    site_id = repl(site).site_id
    for i in range(n):
        with site.uow() as uow:
            site.custody_chain.ledger.append(
                uow, site_id, LedgerKind.EPCIS, f"offline-{i}", {"step": i}
            )
            audit(
                uow,
                system_actor("operator"),
                AuditAction.CREATE,
                "offline_note",
                f"note-{i}",
                new={"i": i},
                site_id=site_id,
            )
            uow.commit()
        site.clock.sleep(60)  # type: ignore[attr-defined]


def send(site: App, broker: Broker, timeout_s: float = 10.0) -> SendResult:
    address = BrokerAddress("127.0.0.1", broker.port)
    return replicate_once(repl(site), site.uow, address, timeout_s=timeout_s)


def test_the_outbox_is_written_with_the_records_and_rolled_back_with_them(
    nodes: tuple[App, App],
) -> None:
    site, _control = nodes
    before = owned_rows(site)
    some_work(site, 3)
    # a transaction that fails writes neither its audit row nor its outbox record
    with pytest.raises(RuntimeError), site.uow() as uow:
        audit(uow, system_actor("x"), AuditAction.CREATE, "note", "n1", new={})
        uow.flush()
        raise RuntimeError("the use case fails after writing")
    with site.uow() as uow:
        rows = list(uow.session.scalars(select(OutboxRecord).order_by(OutboxRecord.seq)))
    owned = owned_rows(site)
    assert len(owned - before) == 6  # 3 audit rows + 3 ledger entries, by hand
    assert {r.source_ref for r in rows} == owned  # every owned row once, nothing else
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))  # gapless per site
    assert rows[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.record_hash for a, b in itertools.pairwise(rows))
    assert {r.origin_site for r in rows} == {repl(site).site_id}


def test_records_written_while_the_broker_is_down_arrive_once_after_it_is_back(
    nodes: tuple[App, App], broker: Broker
) -> None:
    site, control = nodes
    address = BrokerAddress("127.0.0.1", broker.port)
    inbox = start_inbox(repl(control), control.uow, address, control_site_id=repl(control).site_id)
    try:
        first = send(site, broker)
        assert first.error is None and first.pending == 0
        broker.stop()  # the link is down
        some_work(site, 40)
        down = send(site, broker, timeout_s=1)
        assert down.error and down.acknowledged == 0
        with site.uow() as uow:
            assert repl(site).outbox(uow).pending == 80  # 40 audit rows + 40 ledger entries
        broker.start()
        # the control node's persistent session reconnects by itself
        assert wait_for(lambda: inbox.connected.is_set(), 10)
        back = send(site, broker)
        assert back.error is None and back.pending == 0
        expected = owned_rows(site)
        origin = repl(site).site_id
        assert wait_for(lambda: len(inbox_refs(control, origin)) >= len(expected))
        time.sleep(0.3)  # any late redelivery arrives and is judged
    finally:
        inbox.stop()
    refs = inbox_refs(control, origin)
    assert sorted(refs) == sorted(expected) and len(refs) == len(set(refs))  # none lost, none twice
    with control.uow() as uow:
        (status,) = [s for s in repl(control).inbox_status(uow) if s.origin_site == origin]
    assert status.ok, status.to_dict()
    assert status.gaps == [] and status.forks == [] and status.chain_problems == []
    assert status.head_seq == len(expected)

    # the control site anchors what it verified in its own audit trail: the site's chain heads
    # as the site itself holds them (read from the site's database)
    with site.uow() as uow:
        ledger_head = uow.session.scalars(
            select(LedgerEntry.entry_hash)
            .where(LedgerEntry.site_id == origin)
            .order_by(LedgerEntry.seq.desc())
            .limit(1)
        ).one()
        audit_head = uow.session.scalars(
            select(AuditEntry.row_hash).order_by(AuditEntry.seq.desc()).limit(1)
        ).one()
    with control.uow() as uow:
        result = repl(control).anchor(uow, system_actor("replication"))
    # signed by a key the site made after its copy: not anchored until the control holds it
    assert "signed by keys this node does not hold" in result["refused"][origin]
    assert register_site_keys(site, control)
    with control.uow() as uow:
        result = repl(control).anchor(uow, system_actor("replication"))
    body = result["anchored"][origin]
    assert body["seq"] == len(expected)
    assert body["chains"][f"ledger:{origin}"]["hash"] == ledger_head
    assert body["chains"]["audit"]["hash"] == audit_head
    with control.uow() as uow:
        assert repl(control).anchor(uow, system_actor("replication"))["anchored"] == {}
        rows = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.entity_type == "replication_origin")
        ).all()
    assert [r.entity_id for r in rows] == [origin]


def test_a_broker_restart_mid_stream_loses_and_doubles_nothing(
    nodes: tuple[App, App], broker: Broker
) -> None:
    site, control = nodes
    address = BrokerAddress("127.0.0.1", broker.port)
    some_work(site, 150)
    inbox = start_inbox(repl(control), control.uow, address, control_site_id=repl(control).site_id)
    origin = repl(site).site_id
    try:
        publisher = OutboxPublisher(address, "nearfab-node-site")
        first = repl(site).replicate_once(site.uow, publisher, batch=50, max_batches=2)
        assert first.acknowledged == 100 and first.pending > 0
        # the broker restarts in the middle of the stream, the publisher's and the control
        # node's sessions open; the publisher goes on as soon as it is back
        broker.stop()
        stopped = repl(site).replicate_once(site.uow, publisher, batch=50, timeout_s=0.5)
        assert stopped.error is not None and stopped.acknowledged == 0
        broker.start()
        assert wait_for(lambda: inbox.connected.is_set(), 10)
        rounds = 0
        while True:
            result = repl(site).replicate_once(site.uow, publisher, batch=50, timeout_s=3)
            rounds += 1
            if result.pending == 0 and result.error is None:
                break
            assert rounds < 10, result
            time.sleep(0.5)
        publisher.close()
        expected = owned_rows(site)
        assert wait_for(lambda: len(inbox_refs(control, origin)) >= len(expected), 20)
        time.sleep(0.3)
    finally:
        inbox.stop()
    refs = inbox_refs(control, origin)
    assert sorted(refs) == sorted(expected) and len(refs) == len(set(refs))
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.ok and status.head_seq == len(expected), status.to_dict()


def _forged(record: Record, **changes: object) -> Record:
    forged = replace(record, **changes)  # type: ignore[arg-type]
    return replace(
        forged,
        record_hash=record_hash(
            id=forged.id,
            origin_site=forged.origin_site,
            seq=forged.seq,
            kind=forged.kind,
            source_ref=forged.source_ref,
            chain_hash=forged.chain_hash,
            prev_hash=forged.prev_hash,
            payload=forged.payload,
        ),
    )


def test_a_gap_a_duplicate_and_a_fork_are_detected_and_named(
    nodes: tuple[App, App], broker: Broker
) -> None:
    site, control = nodes
    some_work(site, 2)
    with site.uow() as uow:
        repl(site).capture_now(uow)
    with site.uow() as uow:
        records = repl(site).pending(uow, 100_000)
    origin = repl(site).site_id
    n = len(records)
    missing = records[n - 3]  # held back: a gap
    fork = _forged(
        records[n - 2],
        id=f"{origin}/audit:999999",
        source_ref="audit:999999",
        payload=json.dumps({"forged": True}),
    )
    messages = [r for r in records if r is not missing] + [records[n - 1], fork]
    address = BrokerAddress("127.0.0.1", broker.port)
    inbox = start_inbox(repl(control), control.uow, address, control_site_id=repl(control).site_id)
    try:
        publisher = OutboxPublisher(address, "nearfab-node-injector")
        acked = publisher.send(
            [
                (topic(r.origin_site, r.kind), r.to_message(), f"{i}")
                for i, r in enumerate(messages)
            ],
            10,
        )
        publisher.close()
        assert len(acked) == len(messages)
        assert wait_for(lambda: inbox_count(control) >= n - 1 and inbox.idle_for(0.3))
    finally:
        inbox.stop()
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    seq_gap = missing.seq
    assert status.gaps == [f"{origin}: gap: seq {seq_gap} missing"]
    assert status.duplicates == 1
    assert len(status.forks) == 1
    assert f"seq {records[n - 2].seq}" in status.forks[0] and "fork" in status.forks[0]
    assert not status.ok
    # the held records still verify; the hole is named, nothing else is wrong
    assert status.chain_problems == []
    with control.uow() as uow:
        refused = repl(control).anchor(uow, system_actor("replication"))
    assert refused == {"anchored": {}, "refused": {origin: status.gaps[0]}}

    # the missing record arrives late: the gap closes
    with control.uow() as uow:
        repl(control).apply(uow, [missing.to_message()])
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.gaps == [] and status.head_seq == n and status.chain_problems == []


def test_an_altered_record_and_a_broken_chain_are_named(nodes: tuple[App, App]) -> None:
    """Without the broker: the inbox's checks on what arrives (the transport is the tests
    above)."""
    site, control = nodes
    some_work(site, 2)
    with site.uow() as uow:
        repl(site).capture_now(uow)
    with site.uow() as uow:
        records = repl(site).pending(uow, 100_000)
    last = next(r for r in reversed(records) if r.kind == "audit")
    records = [r for r in records if r.seq <= last.seq]
    # altered in transit: the payload changed, the hash kept
    altered = replace(last, payload=last.payload.replace('"i":1', '"i":7'))
    assert altered.payload != last.payload
    with control.uow() as uow:
        result = repl(control).apply(uow, [r.to_message() for r in records[:-1]])
    assert result.applied == len(records) - 1
    with control.uow() as uow:
        result = repl(control).apply(uow, [altered.to_message(), b"{not json"])
    assert result.applied == 0
    assert any("altered" in p for p in result.problems)
    assert any("message: not JSON" in p for p in result.problems)
    # a record whose own hash is right but whose source row was rewritten: the audit row's
    # hash no longer matches its content, which the chain check names
    rewritten_payload = json.loads(last.payload)
    rewritten_payload["reason"] = "rewritten"
    rewritten = _forged(last, payload=json.dumps(rewritten_payload))
    with control.uow() as uow:
        repl(control).apply(uow, [rewritten.to_message()])
    with control.uow() as uow:
        by_origin = {s.origin_site: s for s in repl(control).inbox_status(uow)}
    assert by_origin["?"].altered == ["message: not JSON"]  # no origin to name: "?"
    status = by_origin[last.origin_site]
    assert len(status.altered) == 1 and "altered" in status.altered[0]
    assert status.chain_problems and "hash does not match its content" in status.chain_problems[0]


def test_a_recall_at_the_control_site_reaches_the_site_node(
    nodes: tuple[App, App], broker: Broker
) -> None:
    """The other direction: the control node's decisions (here a recall) go out through the
    same outbox and arrive in the site node's inbox once, the site's own records untouched."""
    site, control = nodes
    with control.uow() as uow:
        lot = uow.session.scalars(
            select(MaterialLot.lot_number).where(MaterialLot.status == "approved").limit(1)
        ).one()
    with control.uow() as uow:
        recall = control.custody_chain.recalls.create(
            uow, fh.actor(control, "qp"), lot=lot, reason="supplier assay out of specification"
        )
    address = BrokerAddress("127.0.0.1", broker.port)
    inbox = start_inbox(repl(site), site.uow, address, control_site_id=repl(control).site_id)
    try:
        publisher = OutboxPublisher(address, "nearfab-node-control")
        result = repl(control).replicate_once(control.uow, publisher)
        publisher.close()
        assert result.error is None and result.pending == 0
        control_id = repl(control).site_id
        assert wait_for(lambda: any(s.startswith("audit:") for s in inbox_refs(site, control_id)))
        time.sleep(0.2)
    finally:
        inbox.stop()
    with site.uow() as uow:
        held = repl(site).received(uow, control_id)
        (status,) = repl(site).inbox_status(uow)
    kinds = {json.loads(r.payload).get("entity_type") for r in held if r.kind == "audit"}
    assert "recall" in kinds
    # only the decisions (replication.node.CONTROL_TO_SITES)
    assert kinds <= {
        "recall",
        "master_file",
        "master_file_published",
        "release_review",
        "remote_release",
    }
    recall_rows = [
        json.loads(r.payload) for r in held if json.loads(r.payload).get("entity_type") == "recall"
    ]
    assert [r["entity_id"] for r in recall_rows] == [recall.id]
    assert status.ok, status.to_dict()
    # parse_message reads what travelled: the same record the control holds
    with control.uow() as uow:
        sent = {r.id for r in uow.session.scalars(select(OutboxRecord))}
    assert {r.id for r in held} <= sent
    assert parse_message(held[0].to_message()) == held[0]


def test_a_broker_killed_before_saving_loses_records_the_gap_names_them_and_a_resend_fills_it(
    nodes: tuple[App, App], broker: Broker
) -> None:
    """kill -9 of the broker after it acknowledged records it had not saved yet (Mosquitto saves
    at shutdown and every autosave): the site counts them sent, the broker no longer has them.
    The control node names the gap when later records arrive; the site sends again from the
    gap's first seq; the control keeps each record once."""
    site, control = nodes
    address = BrokerAddress("127.0.0.1", broker.port)
    origin = repl(site).site_id
    inbox = start_inbox(repl(control), control.uow, address, control_site_id=repl(control).site_id)
    inbox.stop()  # the control node is away; its persistent session queues for it
    broker.stop()
    broker.start()  # saved with the control node's session in it
    assert send(site, broker).error is None  # acknowledged by the broker, held for the control
    assert broker.proc is not None
    broker.proc.kill()  # SIGKILL: nothing saved since the restart
    broker.proc.wait()
    broker.proc = None
    broker.start()
    lost = owned_rows(site)
    some_work(site, 3)
    assert send(site, broker).error is None
    inbox = start_inbox(repl(control), control.uow, address, control_site_id=repl(control).site_id)
    try:
        assert wait_for(lambda: inbox_count(control) >= 6 and inbox.idle_for(0.3))
        with control.uow() as uow:
            (status,) = repl(control).inbox_status(uow)
        assert status.gaps == [f"{origin}: gap: seq 1..{len(lost)} missing"]
        with site.uow() as uow:
            assert repl(site).resend_from(uow, 1) == len(lost) + 6
        assert send(site, broker).error is None
        expected = owned_rows(site)
        assert wait_for(lambda: len(inbox_refs(control, origin)) >= len(expected))
        assert wait_for(lambda: inbox.idle_for(0.3))
    finally:
        inbox.stop()
    refs = inbox_refs(control, origin)
    assert sorted(refs) == sorted(expected) and len(refs) == len(set(refs))
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.ok and status.duplicates == 6, status.to_dict()


def test_a_batch_made_at_the_site_node_travels_as_audit_rows_ledger_entries_and_summaries(
    made_at_site: tuple[App, App, str],
) -> None:
    """A batch made, serialised and evaluated at the site node: each audited change of its
    batch record is followed in the outbox by the record's summary as that transaction left it,
    carrying the audit row's hash; the control node holds them and the chains verify."""
    site, control, batch_id = made_at_site  # `nodes`, then fh.make_batch(site)
    batch = fh.batch(site, batch_id)
    with site.uow() as uow:
        repl(site).capture_now(uow)
    with site.uow() as uow:
        records = repl(site).pending(uow, 100_000)
        batch_audit = uow.session.scalars(
            select(AuditEntry.seq).where(
                AuditEntry.entity_type == "batch", AuditEntry.entity_id == batch_id
            )
        ).all()
    summaries = [r for r in records if r.kind == "batch"]
    assert batch_audit  # the batch record's changes were audited at the site
    # one summary per audited change, right after it, carrying its hash
    assert [json.loads(r.payload)["audit_seq"] for r in summaries] == sorted(batch_audit)
    by_seq = {r.seq: r for r in records}
    for summary in summaries:
        before = by_seq[summary.seq - 1]
        assert before.kind == "audit" and before.chain_hash == summary.chain_hash
    last = json.loads(summaries[-1].payload)
    assert (last["id"], last["batch_number"], last["status"]) == (
        batch_id,
        batch.batch_number,
        batch.status,
    )
    with control.uow() as uow:
        applied = repl(control).apply(uow, [r.to_message() for r in records])
    assert applied.applied == len(records) and applied.problems == []
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.ok, status.to_dict()
    # a summary that claims another audit row's hash is named
    forged = _forged(summaries[0], chain_hash="f" * 64)
    named = verify_chain([*[r for r in records if r.seq < forged.seq], forged])
    assert any(f"audit seq {last_seq}" in p for p in named for last_seq in batch_audit[:1])


def test_a_link_lost_between_the_connected_check_and_the_publish_is_an_error_not_a_crash(
    nodes: tuple[App, App], broker: Broker
) -> None:
    """Found under load (helper-98): the broker goes away after the publisher's connected check
    and before its publishes, so paho refuses each message (`MQTT_ERR_NO_CONN`) and raises
    when asked whether it was published. The window is forced here on a real broker and a real
    client: the broker stopped, the client's disconnect seen, then its connected flag set again
    as the race leaves it. The pass ends with an error naming what the broker acknowledged
    (none), every record still pending, and a later pass sends them all."""
    site, _control = nodes
    address = BrokerAddress("127.0.0.1", broker.port)
    some_work(site, 3)
    publisher = OutboxPublisher(address, "nearfab-node-site-race")
    try:
        broker.stop()
        assert wait_for(lambda: not publisher._connected.is_set(), 10)
        publisher._connected.set()  # the race: checked connected, no longer connected
        result = repl(site).replicate_once(site.uow, publisher, batch=50, timeout_s=0.5)
        with site.uow() as uow:
            waiting = repl(site).outbox(uow).pending
        assert result.attempted == 50 and result.acknowledged == 0
        assert result.error == "the broker acknowledged 0 of 50 records"
        assert result.pending == waiting > 50  # nothing marked sent
        broker.start()
        assert wait_for(publisher._client.is_connected, 15)  # paho reconnects by itself
        again = repl(site).replicate_once(site.uow, publisher, batch=500, timeout_s=5)
        assert again.error is None and again.pending == 0 and again.acknowledged == waiting
    finally:
        publisher.close()
