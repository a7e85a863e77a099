"""Issue 17, "proof by chaos": site nodes cut off from the control site for hours of simulated
time, brokers restarted, a node killed with SIGKILL in the middle of a write, then reconnected.
Nothing may be lost or doubled on either side: each origin's records as the receiving node
holds them are exactly the origin's outbox (same ids, sequence numbers and hashes, nothing
more), every committed source row has exactly one outbox record, the chains verify and the
control anchors them; the control's view is the union of the sites'.

The deployment's shape (docs/replication.md): each site node publishes to a Mosquitto of its
own, bridged (QoS 1, persistent bridge session) to the control site's Mosquitto. The expected
records are read from each node's own tables (its audit trail, its ledger chain, its outbox),
never from the replication code's answers.

The nodes run on SQLite; the hours-cut-off test also runs with the control on PostgreSQL and
the kill -9 test with the site node on PostgreSQL (`on_postgresql`: the suite's private
cluster, a database given every row of the node's seeded copy)."""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, inspect, select, text
from tests import flow_helpers as fh
from tests.conftest import CLOCK_JUMPS, _pg_clone, _pg_drop
from tests.replication import chaos_writer
from tests.replication.test_release_across import control_key_known
from tests.replication.test_replication_mqtt import (
    owned_rows,
    register_site_keys,
    repl,
    wait_for,
)
from tests.telemetry.test_mqtt import MOSQUITTO, Broker

from nearfab.bootstrap import App, build_app
from nearfab.common.clock import ManualClock
from nearfab.common.errors import Refused
from nearfab.config import Settings
from nearfab.custody import LedgerEntry
from nearfab.db import Base
from nearfab.identity import AuditEntry, system_actor, verify_audit_chain
from nearfab.replication import replicate_once, start_inbox
from nearfab.replication.decisions import APPLIED_ENTITY
from nearfab.replication.logic import GENESIS, TOPIC_ROOT
from nearfab.replication.models import InboxProblem, InboxRecord, OutboxRecord
from nearfab.telemetry import BrokerAddress

HC_LOT = "HC-FIL-2.5-GSTT-PH-001"  # the seeded hydrocortisone lot at GSTT-PH (demo seed)
SITES = ("GSTT-PH", "MAN-PH")


# --- three nodes, each its own database --------------------------------------------------------


@pytest.fixture
def network(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[dict[str, App]]:
    """{code: App} for the site nodes GSTT-PH and MAN-PH and the control node CTRL: copies of
    the seeded demo network, each its own database and data folder, one simulated clock.
    Each node on SQLite, but the one a test names by indirect parametrisation (`network`:
    a node's code), which is on PostgreSQL (`on_postgresql`)."""
    on_pg = getattr(request, "param", None)
    apps = {}
    for code in (*SITES, "CTRL"):
        folder = node_folder(request, tmp_path, code)
        url = on_postgresql(request, folder) if code == on_pg else None
        apps[code] = build_app(
            Settings(data_dir=folder, database_url=url, node_site=code, **CLOCK_JUMPS),
            clock=clock,
            migrate=False,
        )
        assert apps[code].engine.dialect.name == ("postgresql" if url else "sqlite")
    for code in SITES:  # provisioning: the control's signing key known at each site
        control_key_known(apps["CTRL"], apps[code])
    yield apps
    for app in apps.values():
        app.engine.dispose()


def node_folder(request: pytest.FixtureRequest, tmp_path: Path, code: str) -> Path:
    """A node's data folder (its database and keys), copied from the seeded template."""
    fh._seeded_sqlite(request, tmp_path)  # the seeded template, copied to tmp_path/nearfab.db
    template = fh._TEMPLATES[("sqlite", str(request.getfixturevalue("sqlite_template")))]
    data = tmp_path / code
    data.mkdir()
    shutil.copyfile(tmp_path / "nearfab.db", data / "nearfab.db")
    shutil.copytree(fh._KEYS[template], data / "keys")
    return data


def on_postgresql(request: pytest.FixtureRequest, folder: Path) -> str:
    """Node `folder`'s database moved to PostgreSQL (the suite's private cluster): a migrated
    database cloned from the suite's template, given every row of the node's SQLite copy of
    the seeded network (so the same ids and keys as the other nodes), and the SQLite file
    removed, so the node cannot fall back on it. Dropped at the end of the test. Its URL."""
    name, url = _pg_clone(request.getfixturevalue("pg_template"))
    request.addfinalizer(functools.partial(_pg_drop, name))
    copy_rows(f"sqlite:///{folder / 'nearfab.db'}", url)
    (folder / "nearfab.db").unlink()
    return url


def copy_rows(source: str, target: str) -> None:
    """Every row of the migrated `source` into the migrated, seedless `target`, through the
    models' tables, whose types convert between the backends; each table's count checked
    (as `benchmarks/replication.py` moves a node to PostgreSQL). The triggers, foreign keys'
    included, are off while copying (a superuser's `session_replication_role`: the rows are
    the source's, consistent already); the sequences are moved past the copied ids."""
    src, dst = create_engine(source), create_engine(target)
    tables = Base.metadata.sorted_tables
    missing = set(inspect(src).get_table_names()) - {t.name for t in tables} - {"alembic_version"}
    assert not missing, f"tables outside the models, not copied: {sorted(missing)}"
    try:
        with src.connect() as s, dst.begin() as d:
            d.execute(text("SET session_replication_role = replica"))
            for table in reversed(tables):
                d.execute(table.delete())
            for table in tables:
                rows = [dict(r._mapping) for r in s.execute(select(table))]
                if rows:
                    d.execute(table.insert(), rows)
                copied = d.execute(select(func.count()).select_from(table)).scalar_one()
                assert copied == len(rows), f"{table.name}: {copied} rows copied of {len(rows)}"
                for column in table.primary_key.columns:
                    sequence = d.execute(
                        text("SELECT pg_get_serial_sequence(:t, :c)"),
                        {"t": table.name, "c": column.name},
                    ).scalar()
                    if sequence:
                        top = d.execute(select(func.max(column))).scalar() or 0
                        d.execute(
                            text("SELECT setval(:s, :v, false)"), {"s": sequence, "v": top + 1}
                        )
    finally:
        src.dispose()
        dst.dispose()


#: the chaos tests that also run with one node on PostgreSQL: which one (a deployment's control
#: is on PostgreSQL, its sites on SQLite or PostgreSQL)
CONTROL_ON_PG = pytest.param("CTRL", id="control-on-postgresql", marks=pytest.mark.postgres)


def _broker_folder(name: str) -> Path:
    # not under tmp_path: mosquitto started as root drops to its own user (test_mqtt.Broker)
    folder = Path(tempfile.mkdtemp(prefix=f"nearfab-chaos-{name}-"))
    folder.chmod(0o777)
    return folder


def bridge(local: Broker, hub: Broker, site_id: str, control_id: str) -> None:
    """The site broker's bridge to the control broker, as docs/replication.md gives it (retry
    every second instead of 5 s backing off to 30 s)."""
    with local.conf.open("a") as conf:
        conf.write(
            "connection to-control\n"
            f"address 127.0.0.1:{hub.port}\n"
            f"topic {TOPIC_ROOT}/{site_id}/# out 1\n"
            f"topic {TOPIC_ROOT}/{control_id}/# in 1\n"
            f"remote_clientid nearfab-bridge-{site_id}\n"
            "cleansession false\n"
            "restart_timeout 1 1\n"
            "keepalive_interval 5\n"
            "try_private true\n"
        )


@pytest.fixture
def brokers(network: dict[str, App]) -> Iterator[dict[str, Broker]]:
    """{"CTRL": the control broker, <site code>: that site's broker bridged to it}."""
    folders = {code: _broker_folder(code) for code in network}
    found = {code: Broker(folder) for code, folder in folders.items()}
    control_id = repl(network["CTRL"]).site_id
    for code in SITES:
        bridge(found[code], found["CTRL"], repl(network[code]).site_id, control_id)
    found["CTRL"].start()
    for code in SITES:
        found[code].start()
    # the bridges' sessions at the control broker exist before anyone publishes (a record the
    # control publishes before a site's bridge first subscribed is not kept for it)
    hub_log = folders["CTRL"] / "broker.log"
    for code in SITES:
        client = f"nearfab-bridge-{repl(network[code]).site_id}"
        assert wait_for(lambda c=client: c in hub_log.read_text(errors="replace"), 20), client
    yield found
    for b in found.values():
        if b.proc is not None and b.proc.poll() is None:
            b.stop()
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)


def at(b: Broker) -> BrokerAddress:
    return BrokerAddress("127.0.0.1", b.port)


# --- what each node holds, read from its tables -------------------------------------------------


def outbox_rows(app: App) -> list[tuple[str, int, str]]:
    """(id, seq, record_hash) of the node's own outbox, in seq order."""
    with app.uow() as uow:
        rows = uow.session.execute(
            select(OutboxRecord.id, OutboxRecord.seq, OutboxRecord.record_hash)
            .where(OutboxRecord.origin_site == repl(app).site_id)
            .order_by(OutboxRecord.seq)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def inbox_rows(app: App, origin: str | None = None) -> list[tuple[str, int, str]]:
    """(id, seq, record_hash) of what the node holds from `origin` (None: from every origin),
    by origin and seq."""
    query = select(InboxRecord.id, InboxRecord.seq, InboxRecord.record_hash).order_by(
        InboxRecord.origin_site, InboxRecord.seq
    )
    if origin is not None:
        query = query.where(InboxRecord.origin_site == origin)
    with app.uow() as uow:
        return [tuple(r) for r in uow.session.execute(query).all()]  # type: ignore[misc]


def pending(app: App) -> int:
    with app.uow() as uow:
        return repl(app).outbox(uow).pending


def problems(app: App) -> list[tuple[str, str]]:
    """(kind, detail) of every problem the node's inbox named but duplicates and gaps: a
    redelivered copy is dropped, and after a broker restart the bridge may deliver a later
    record before the earlier ones it resends (QoS 1 keeps no order across reconnections), so
    a gap may be named on the way and closed by the late records (the test then asks `inbox
    status`, which names the gaps still open). A fork or an altered record is never fine."""
    with app.uow() as uow:
        return [
            (k, d)
            for k, d in uow.session.execute(select(InboxProblem.kind, InboxProblem.detail))
            if k not in ("duplicate", "gap")
        ]


def source_refs_in_outbox(app: App) -> list[str]:
    """The source row of every audit and ledger record of the outbox (batch summaries are
    derived records, not source rows)."""
    with app.uow() as uow:
        return list(
            uow.session.scalars(
                select(OutboxRecord.source_ref).where(OutboxRecord.kind.in_(("audit", "ledger")))
            )
        )


def assert_outbox_matches_source_rows(app: App) -> None:
    """Every committed audit row and ledger entry the node owns has exactly one outbox record,
    and no outbox record is without its row; the outbox is gapless and chained."""
    refs = source_refs_in_outbox(app)
    assert len(refs) == len(set(refs)), "a source row has two outbox records"
    assert set(refs) == owned_rows(app)
    rows = outbox_rows(app)
    assert [seq for _, seq, _ in rows] == list(range(1, len(rows) + 1))
    with app.uow() as uow:
        full = list(
            uow.session.scalars(
                select(OutboxRecord)
                .where(OutboxRecord.origin_site == repl(app).site_id)
                .order_by(OutboxRecord.seq)
            )
        )
    assert full[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.record_hash for a, b in itertools.pairwise(full))


def assert_own_chains_verify(app: App) -> None:
    """The node's own audit trail and custody ledger verify (their own checks,
    docs/audit-trail.md and docs/custody.md)."""
    with app.uow() as uow:
        report = verify_audit_chain(uow, fh.actor(app, "auditor"))
    assert report.ok, report.to_dict()
    with app.uow() as uow:
        ledger = app.custody_chain.ledger.verify(uow)
    assert ledger.ok, ledger.problems[:3]


# --- real work at a site -----------------------------------------------------------------------


def site_work(app: App, code: str, step: int) -> None:
    """One stretch of a site's work through its services. GSTT-PH makes a batch (prescription,
    planning, ticket, start, run, manual steps signed, audit trail reviewed); MAN-PH's own
    clinician prescribes and the order is planned and ticketed (or, when the network's plan
    has no place for it yet, waits). Each site rotates its ledger
    signing key (an entry of its ledger chain signed with the old key, and its audit row)."""
    if code == "GSTT-PH":
        with suppress(Refused):  # the network's plan has no place for it yet: on record
            fh.make_batch(app)
    else:
        clinician = fh.actor(app, "clinician-man")
        with app.uow() as uow:
            (order,) = app.orders.submit(uow, clinician, fh.bundle(app, dose_mg=2.0, days=7))
        with suppress(Refused):  # likewise: the order waits
            fh.ticketed_job(app, order.id)
    with app.uow() as uow:
        app.custody_chain.ledger.rotate(
            uow, fh.actor(app, "admin"), repl(app).site_id, reason=f"rotation {step}"
        )  # commits


def batch_summaries(app: App) -> int:
    """How many batch summaries the node's outbox holds (one per audited batch change)."""
    with app.uow() as uow:
        return int(
            uow.session.scalar(
                select(func.count()).select_from(OutboxRecord).where(OutboxRecord.kind == "batch")
            )
            or 0
        )


def send(app: App, address: BrokerAddress) -> Any:
    return replicate_once(repl(app), app.uow, address, timeout_s=3, connect_timeout_s=1)


@pytest.mark.parametrize("network", [pytest.param(None, id="sqlite"), CONTROL_ON_PG], indirect=True)
def test_sites_cut_off_for_hours_with_brokers_restarted_converge_exactly(
    network: dict[str, App], brokers: dict[str, Broker], clock: ManualClock
) -> None:
    control = network["CTRL"]
    hub = brokers["CTRL"]
    control_id = repl(control).site_id
    ids = {code: repl(network[code]).site_id for code in SITES}
    fh.create_user(network["MAN-PH"], "clinician-man", ["clinician"], "MAN-PH")
    inboxes = [start_inbox(repl(control), control.uow, at(hub), control_site_id=control_id)]
    for code in SITES:
        app = network[code]
        inboxes.append(
            start_inbox(repl(app), app.uow, at(brokers[code]), control_site_id=control_id)
        )
    try:
        # linked: an hour's work at each site reaches the control through the bridges
        for code in SITES:
            site_work(network[code], code, 0)
            assert send(network[code], at(brokers[code])).error is None
        assert send(control, at(hub)).error is None
        for code in SITES:
            want = outbox_rows(network[code])
            assert wait_for(lambda w=want, c=code: inbox_rows(control, ids[c]) == w, 30)

        # the link goes: the control broker is down; the sites work on for twelve hours of
        # their time, replicating to their own brokers, which take everything (the bridges
        # queue it). GSTT-PH's broker restarts meanwhile; the control recalls a lot.
        hub.stop()
        summaries_before = batch_summaries(network["GSTT-PH"])
        started = clock.now()
        for hour in range(1, 13):
            for code in SITES:
                site_work(network[code], code, hour)
            clock.sleep(3600)
            if hour % 4 == 0:
                for code in SITES:
                    cut = send(network[code], at(brokers[code]))
                    assert cut.error is None and cut.pending == 0, (code, cut)
            if hour == 6:
                brokers["GSTT-PH"].stop()  # SIGTERM: an orderly restart saves the bridge queue
                brokers["GSTT-PH"].start()
            if hour == 7:
                with control.uow() as uow:
                    control.custody_chain.recalls.create(
                        uow, fh.actor(control, "qp"), lot=HC_LOT, reason="assay out of spec"
                    )
                waiting = send(control, at(hub))
                assert waiting.error is not None and waiting.pending > 0  # they wait at home
        assert (clock.now() - started).total_seconds() >= 12 * 3600  # the runs take time too
        held_before = len(inbox_rows(control))

        # the control broker comes back, and restarts again while the backlog flows in
        hub.start()
        assert wait_for(lambda: len(inbox_rows(control)) > held_before, 30)
        hub.stop()
        hub.start()

        # every node sends what waits until nothing waits and every inbox holds its origins'
        # outboxes (a site's records about the recall it applied travel too)
        def converged() -> bool:
            for code in SITES:
                send(network[code], at(brokers[code]))
            send(control, at(hub))
            return (
                all(pending(a) == 0 for a in network.values())
                and all(inbox_rows(control, ids[c]) == outbox_rows(network[c]) for c in SITES)
                and all(inbox_rows(network[c], control_id) == outbox_rows(control) for c in SITES)
                and all(i.idle_for(0.5) for i in inboxes)
            )

        assert wait_for(converged, 60), {
            code: (len(inbox_rows(control, ids[code])), len(outbox_rows(network[code])))
            for code in SITES
        }
    finally:
        for inbox in inboxes:
            inbox.stop()

    # none lost, none doubled: each origin's records at the control are exactly its outbox
    union: set[tuple[str, int, str]] = set()
    for code in SITES:
        site = network[code]
        mine = outbox_rows(site)
        held = inbox_rows(control, ids[code])
        assert held == mine and len({i for i, _, _ in held}) == len(held)
        assert [s for _, s, _ in held] == list(range(1, len(mine) + 1))  # no gap
        union |= set(mine)
        assert_outbox_matches_source_rows(site)
        assert_own_chains_verify(site)
        # the other way: the control's records at the site, the recall acted on once
        assert inbox_rows(site, control_id) == outbox_rows(control)
        assert problems(site) == []
        with site.uow() as uow:
            assert all(st.ok for st in repl(site).inbox_status(uow))
        assert applied_recalls(site) == 1
    assert batch_summaries(network["GSTT-PH"]) > summaries_before  # batches made while cut off
    assert set(inbox_rows(control)) == union  # the control's view is the union of the sites'
    assert problems(control) == []
    with control.uow() as uow:
        statuses = {s.origin_site: s for s in repl(control).inbox_status(uow)}
    assert set(statuses) == set(ids.values())
    for code in SITES:
        status = statuses[ids[code]]
        assert status.ok and status.head_seq == len(outbox_rows(network[code])), status.to_dict()

    # the control anchors each site's chains where the site's own tables end, once it holds
    # the keys each site made after its copy (registered after the fact)
    for code in SITES:
        assert register_site_keys(network[code], control)
    with control.uow() as uow:
        anchored = repl(control).anchor(uow, system_actor("replication"))
    assert anchored["refused"] == {}
    for code in SITES:
        site, origin = network[code], ids[code]
        with site.uow() as uow:
            audit_head = uow.session.scalars(
                select(AuditEntry.row_hash).order_by(AuditEntry.seq.desc()).limit(1)
            ).one()
            ledger_head = uow.session.scalars(
                select(LedgerEntry.entry_hash)
                .where(LedgerEntry.site_id == origin)
                .order_by(LedgerEntry.seq.desc())
                .limit(1)
            ).one()
        body = anchored["anchored"][origin]
        assert body["seq"] == len(outbox_rows(site))
        assert body["chains"]["audit"]["hash"] == audit_head
        assert body["chains"][f"ledger:{origin}"]["hash"] == ledger_head


def test_an_anchor_names_the_ledger_head_even_when_a_batch_summary_comes_after_it(
    network: dict[str, App],
) -> None:
    """A batch started after the last ledger entry: its summary record (kind `batch`, carrying
    its audit row's hash) comes after the last ledger record. The anchor's ledger head is still
    the site's last ledger entry (it was the summary's audit hash, with no seq: a bug this test
    found)."""
    site, control = network["GSTT-PH"], network["CTRL"]
    fh.make_batch(site)  # its run writes two EPCIS entries to the site's ledger chain
    fh.start(site, fh.ticketed_job(site))  # a batch record changed, no ledger entry
    with site.uow() as uow:
        repl(site).capture_now(uow)
    with site.uow() as uow:
        records = repl(site).pending(uow, 100_000)
    last = {r.kind: r.seq for r in records}  # each kind's last record
    assert last["batch"] > last["ledger"]  # the premise: a summary after the last ledger record
    origin = repl(site).site_id
    with site.uow() as uow:
        ledger_seq, ledger_hash = uow.session.execute(
            select(LedgerEntry.seq, LedgerEntry.entry_hash)
            .where(LedgerEntry.site_id == origin)
            .order_by(LedgerEntry.seq.desc())
            .limit(1)
        ).one()
        audit_seq, audit_hash = uow.session.execute(
            select(AuditEntry.seq, AuditEntry.row_hash).order_by(AuditEntry.seq.desc()).limit(1)
        ).one()
    with control.uow() as uow:
        assert repl(control).apply(uow, [r.to_message() for r in records]).problems == []
    register_site_keys(site, control)
    with control.uow() as uow:
        body = repl(control).anchor(uow, system_actor("replication"))["anchored"][origin]
    assert body["chains"] == {
        "audit": {"seq": audit_seq, "hash": audit_hash},
        f"ledger:{origin}": {"seq": ledger_seq, "hash": ledger_hash},
    }


# --- kill -9 of a node in the middle of its work -----------------------------------------------


def committed(db: str, site_id: str) -> tuple[set[str], list[str]]:
    """Straight from a node's database (URL), opened without the app (no capture can run):
    (its committed audit rows and ledger entries as `audit:<seq>` / `ledger:<site>:<seq>`, the
    source refs of its outbox's audit and ledger records)."""
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            audit_seqs = conn.scalars(select(AuditEntry.seq)).all()
            ledger_seqs = conn.scalars(
                select(LedgerEntry.seq).where(LedgerEntry.site_id == site_id)
            ).all()
            refs = conn.scalars(
                select(OutboxRecord.source_ref).where(OutboxRecord.kind.in_(("audit", "ledger")))
            ).all()
    finally:
        engine.dispose()
    rows = {f"audit:{s}" for s in audit_seqs} | {f"ledger:{site_id}:{s}" for s in ledger_seqs}
    return rows, list(refs)


def inbox_count(db: Path) -> int:
    engine = create_engine(f"sqlite:///{db}", connect_args={"timeout": 10})
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(InboxRecord)) or 0)
    finally:
        engine.dispose()


ROUNDS = 5  # the site node is killed this many times
FORK = multiprocessing.get_context("fork")  # a child starts with the test's imports: no 4 s


def writer(
    folder: Path, port: int, steps: int, start: datetime, progress: Path, url: str | None = None
) -> Any:
    """The site node GSTT-PH as a process of its own, working and replicating
    (`chaos_writer.main`, also a script); `url`: its database on PostgreSQL."""
    os.environ["NEARFAB_NODE_SITE"] = "GSTT-PH"  # read by the child, as by `nearfab node`
    if url is not None:
        os.environ["NEARFAB_DATABASE_URL"] = url
    try:
        proc = FORK.Process(
            target=chaos_writer.main,
            args=(str(folder), steps, port, start.isoformat(), str(progress)),
            daemon=True,
        )
        proc.start()
    finally:
        del os.environ["NEARFAB_NODE_SITE"]
        os.environ.pop("NEARFAB_DATABASE_URL", None)
    return proc


def _receive_forever(folder: str, port: int) -> None:
    """The control node's receiving side, as `nearfab node receive` runs it, until killed."""
    app = build_app(Settings(data_dir=Path(folder), node_site="CTRL", **CLOCK_JUMPS), migrate=False)
    service = repl(app)
    start_inbox(service, app.uow, BrokerAddress("127.0.0.1", port), control_site_id=service.site_id)
    while True:
        time.sleep(1)


def receiver(folder: Path, port: int) -> Any:
    proc = FORK.Process(target=_receive_forever, args=(str(folder), port), daemon=True)
    proc.start()
    return proc


def kill9(proc: Any) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL, proc.exitcode


@pytest.mark.parametrize(
    "site_on",
    ["sqlite", pytest.param("postgresql", id="site-on-postgresql", marks=pytest.mark.postgres)],
)
def test_kill_9_of_a_site_node_mid_write_and_of_the_control_receiver_mid_apply(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock, site_on: str
) -> None:
    """A site node works and replicates in a process of its own; it is killed with SIGKILL at
    a random moment, five times, restarted each time later in its time, and finishes. The control
    node's receiver, a process of its own, is killed with SIGKILL at a random moment while the
    site's records stream in and are applied, and restarted. After each kill of the site node,
    its database file is read before anything opens it again (no capture can run): every
    committed audit row and ledger entry has exactly one outbox record, and no outbox record
    is without its row. At the end the control holds the site's outbox exactly, and both
    sides verify. On PostgreSQL (`site_on`), the killed process's server session rolls back
    what it had not committed."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    site_dir, control_dir = (node_folder(request, tmp_path, c) for c in ("GSTT-PH", "CTRL"))
    site_url = on_postgresql(request, site_dir) if site_on == "postgresql" else None
    site_db = site_url or f"sqlite:///{site_dir / 'nearfab.db'}"
    control_db = control_dir / "nearfab.db"
    folder = _broker_folder("kill")
    b = Broker(folder)
    b.start()
    # the control node's persistent session exists before the site publishes (as deployed)
    control = build_app(
        Settings(data_dir=control_dir, node_site="CTRL", **CLOCK_JUMPS), clock=clock, migrate=False
    )
    control_id = repl(control).site_id
    site_id = fh.site_id(control, "GSTT-PH")
    start_inbox(repl(control), control.uow, at(b), control_site_id=control_id).stop()
    control.engine.dispose()  # no connection of the test's is carried into a child
    progress = tmp_path / "progress.log"

    def steps_done() -> int:
        return progress.read_text().count("step ") if progress.exists() else 0

    def outbox_matches_committed_rows(when: str) -> None:
        rows, refs = committed(site_db, site_id)
        assert len(refs) == len(set(refs)), f"seed {seed}, {when}: a row has two outbox records"
        assert set(refs) == rows, f"seed {seed}, {when}: {sorted(set(refs) ^ rows)[:5]}"

    procs: list[Any] = []
    kills: list[int] = []
    try:
        receiving = receiver(control_dir, b.port)
        procs.append(receiving)
        for round_ in range(ROUNDS):
            # the site node works; a random moment after its next step it dies
            before = steps_done()
            working = writer(
                site_dir, b.port, 40, clock.now() + timedelta(days=round_), progress, site_url
            )
            procs.append(working)
            assert wait_for(lambda w=working, n=before: steps_done() > n or not w.is_alive(), 60)
            assert working.is_alive(), f"the site node stopped: exit code {working.exitcode}"
            if round_ == 0:
                # the control's receiver dies while the site's records stream in and apply
                assert wait_for(lambda: inbox_count(control_db) > 0, 60)
                time.sleep(rng.uniform(0.0, 0.5))
                kill9(receiving)
                receiving = receiver(control_dir, b.port)
                procs.append(receiving)
            time.sleep(rng.uniform(0.0, 0.6))
            kill9(working)
            kills.append(steps_done())
            outbox_matches_committed_rows(f"after kill {round_ + 1}")

        # the site node restarts once more and finishes: nothing waits in its outbox
        last = writer(site_dir, b.port, 2, clock.now() + timedelta(days=ROUNDS), progress, site_url)
        procs.append(last)
        last.join(90)
        assert last.exitcode == 0 and progress.read_text().endswith("done\n"), progress.read_text()[
            -1000:
        ]
        outbox_matches_committed_rows("at the end")
        with site_app(site_dir, clock, site_url) as site:
            mine = outbox_rows(site)
        # the restarted receiver takes in what the broker kept for the control's session
        assert wait_for(lambda: inbox_rows(control, site_id) == mine, 30), (
            f"seed {seed}: control holds {len(inbox_rows(control, site_id))} of {len(mine)}"
        )
        control.engine.dispose()
    finally:
        for proc in procs:
            if proc.is_alive():
                kill9(proc)
        b.stop()
        shutil.rmtree(folder, ignore_errors=True)

    with site_app(site_dir, clock, site_url) as site:
        assert pending(site) == 0
        held = inbox_rows(control, site_id)
        assert held == outbox_rows(site) == mine, f"seed {seed}, killed after steps {kills}"
        assert problems(control) == []
        with control.uow() as uow:
            (status,) = repl(control).inbox_status(uow)
        assert status.ok and status.head_seq == len(mine), status.to_dict()
        assert_outbox_matches_source_rows(site)
        assert_own_chains_verify(site)
        assert register_site_keys(site, control)
    with control.uow() as uow:
        anchored = repl(control).anchor(uow, system_actor("replication"))
    assert anchored["anchored"][site_id]["seq"] == len(mine)
    control.engine.dispose()


@contextmanager
def site_app(folder: Path, clock: ManualClock, url: str | None = None) -> Iterator[App]:
    settings = Settings(data_dir=folder, database_url=url, node_site="GSTT-PH", **CLOCK_JUMPS)
    app = build_app(settings, clock=clock, migrate=False)
    try:
        yield app
    finally:
        app.engine.dispose()


# --- a real link cut: the control site behind a network namespace -------------------------------


class Namespace:
    """A network namespace (`ip netns`) holding the control site's broker, reached through two
    veth links: the sites' link (cut and restored by the test) and the control node's own.
    Needs root (CAP_NET_ADMIN) and iproute2; the test skips, saying so, without them."""

    def __init__(self) -> None:
        self.name = f"nfchaos{os.getpid() % 100000}"
        self.links: dict[str, tuple[str, str]] = {}  # name -> (address in the namespace, dev)
        ip = shutil.which("ip")
        if ip is None or os.geteuid() != 0:
            pytest.skip("network namespaces need root and iproute2 (`ip netns`); not here")
        self.ip = ip
        made = subprocess.run([ip, "netns", "add", self.name], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"`ip netns add` is not allowed here: {made.stderr.strip()}")
        self._ip("-n", self.name, "link", "set", "lo", "up")

    def _ip(self, *args: str) -> None:
        done = subprocess.run([self.ip, *args], capture_output=True, text=True)
        assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"

    def link(self, name: str, net: int) -> str:
        """A veth pair, here <prefix>.<4 net + 1> and in the namespace <prefix>.<4 net + 2>
        (a /30 of 10.x.y.0/24 chosen by the process id, so two test runs never share one);
        the namespace's address."""
        here, there = f"{self.name[:9]}{name}0", f"{self.name[:9]}{name}1"
        pid = os.getpid()
        prefix = f"10.{200 + (pid // 250) % 50}.{pid % 250}"
        mine, theirs = f"{prefix}.{4 * net + 1}", f"{prefix}.{4 * net + 2}"
        self._ip("link", "add", here, "type", "veth", "peer", "name", there, "netns", self.name)
        self._ip("addr", "add", f"{mine}/30", "dev", here)
        self._ip("link", "set", here, "up")
        self._ip("-n", self.name, "addr", "add", f"{theirs}/30", "dev", there)
        self._ip("-n", self.name, "link", "set", there, "up")
        self.links[name] = (theirs, there)
        return theirs

    def set_link(self, name: str, up: bool) -> None:
        """The link's end in the namespace up or down: while down, what is sent over it is
        dropped without a word (no reset reaches the other side)."""
        self._ip("-n", self.name, "link", "set", self.links[name][1], "up" if up else "down")

    def start(self, b: Broker, reach: str) -> None:
        """Run the broker in the namespace, listening on every address there."""
        text = b.conf.read_text().replace(f"listener {b.port} 127.0.0.1", f"listener {b.port}")
        b.conf.write_text(text)
        b.proc = subprocess.Popen(
            [self.ip, "netns", "exec", self.name, str(MOSQUITTO), "-c", str(b.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            with socket.socket() as s:
                s.settimeout(0.5)
                return s.connect_ex((reach, b.port)) == 0

        assert wait_for(answers, 10), "mosquitto did not start in the namespace"

    def close(self) -> None:
        subprocess.run([self.ip, "netns", "del", self.name], capture_output=True)


def test_a_site_whose_link_is_cut_in_the_network_converges_exactly(
    network: dict[str, App], clock: ManualClock
) -> None:
    """The control site's broker runs in a network namespace; the site broker's bridge reaches
    it over one veth link, the control node over another. The sites' link goes down just after
    a backlog reached the site's broker, while its bridge forwards it: packets vanish, no
    reset, so the bridge learns of it only by its keepalive, and the control broker drops the
    bridge's connection by its own. The site works on for hours of its time, replicating to
    its own broker; the link comes back: the control holds the site's outbox exactly, and the
    site the control's."""
    if MOSQUITTO is None:
        Broker(Path(tempfile.gettempdir()))  # skips (or fails under CI) naming the binary
    ns = Namespace()
    folders = [_broker_folder(n) for n in ("ns-ctrl", "ns-site")]
    hub, local = Broker(folders[0]), Broker(folders[1])
    site, control = network["GSTT-PH"], network["CTRL"]
    origin, control_id = repl(site).site_id, repl(control).site_id
    inboxes = []
    try:
        sites_side = ns.link("s", 0)
        control_side = ns.link("c", 1)
        ns.start(hub, control_side)
        hub_at = BrokerAddress(control_side, hub.port)
        with local.conf.open("a") as conf:  # the bridge over the sites' link
            conf.write(
                f"connection to-control\naddress {sites_side}:{hub.port}\n"
                f"topic {TOPIC_ROOT}/{origin}/# out 1\ntopic {TOPIC_ROOT}/{control_id}/# in 1\n"
                f"remote_clientid nearfab-bridge-{origin}\ncleansession false\n"
                "restart_timeout 1 1\nkeepalive_interval 2\ntry_private true\n"
            )
        local.start()
        hub_log = folders[0] / "broker.log"
        bridge_id = f"nearfab-bridge-{origin}"
        assert wait_for(lambda: bridge_id in hub_log.read_text(errors="replace"), 20)
        inboxes.append(start_inbox(repl(control), control.uow, hub_at, control_site_id=control_id))
        inboxes.append(start_inbox(repl(site), site.uow, at(local), control_site_id=control_id))
        assert send(control, hub_at).error is None
        site_work(site, "GSTT-PH", 0)
        assert send(site, at(local)).error is None
        assert wait_for(lambda: inbox_rows(control, origin) == outbox_rows(site), 30)

        # a backlog goes to the site's broker and the link is cut while the bridge forwards it
        for step in (1, 2, 3):
            site_work(site, "GSTT-PH", step)
        assert send(site, at(local)).error is None
        ns.set_link("s", up=False)
        cut_at = len(hub_log.read_text(errors="replace"))
        for hour in range(4, 10):  # six hours of the site's time, its broker taking everything
            site_work(site, "GSTT-PH", hour)
            clock.sleep(3600)
            cut = send(site, at(local))
            assert cut.error is None and cut.pending == 0, cut
        # the control broker gives the silent bridge up (1.5 keepalives), then the link is back
        gone = f"Client {bridge_id} has exceeded timeout"
        assert wait_for(lambda: gone in hub_log.read_text(errors="replace")[cut_at:], 20)
        held_while_cut = len(inbox_rows(control, origin))
        ns.set_link("s", up=True)

        def converged() -> bool:
            send(site, at(local))
            send(control, hub_at)
            return (
                pending(site) == pending(control) == 0
                and inbox_rows(control, origin) == outbox_rows(site)
                and inbox_rows(site, control_id) == outbox_rows(control)
                and all(i.idle_for(0.5) for i in inboxes)
            )

        assert wait_for(converged, 60), (len(inbox_rows(control, origin)), len(outbox_rows(site)))
    finally:
        for inbox in inboxes:
            inbox.stop()
        for b in (local, hub):
            if b.proc is not None and b.proc.poll() is None:
                b.stop()
        ns.close()
        for f in folders:
            shutil.rmtree(f, ignore_errors=True)
    assert held_while_cut < len(outbox_rows(site))  # the link was really cut: records waited
    mine = outbox_rows(site)
    held = inbox_rows(control, origin)
    assert held == mine and [s for _, s, _ in held] == list(range(1, len(mine) + 1))
    assert problems(control) == [] and problems(site) == []
    with site.uow() as uow:
        assert all(st.ok for st in repl(site).inbox_status(uow))
    assert_outbox_matches_source_rows(site)
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.ok and status.head_seq == len(mine), status.to_dict()
    assert register_site_keys(site, control)
    with control.uow() as uow:
        assert repl(control).anchor(uow, system_actor("replication"))["refused"] == {}


def test_a_bridge_joining_after_the_control_sent_names_the_gap_and_a_resend_fills_it(
    network: dict[str, App],
) -> None:
    """MQTT keeps nothing for a subscriber that never subscribed: what the control sends before
    a new site's bridge first connected to the control broker never reaches that site. The
    site names the gap when later records arrive, and does not act on a recall after it; the
    control sends again from seq 1 (`replicate --resend-from 1`), the site drops the copies it
    holds, fills the gap and applies the recall once."""
    site, control = network["GSTT-PH"], network["CTRL"]
    control_id = repl(control).site_id
    folders = [_broker_folder(n) for n in ("late-ctrl", "late-site")]
    hub, local = Broker(folders[0]), Broker(folders[1])
    bridge(local, hub, repl(site).site_id, control_id)
    hub.start()
    inbox = None
    try:
        first = send(control, at(hub))  # nobody subscribed to the control's records yet
        assert first.error is None and first.pending == 0 and first.acknowledged > 0
        local.start()
        hub_log = folders[0] / "broker.log"
        assert wait_for(lambda: "nearfab-bridge-" in hub_log.read_text(errors="replace"), 20)
        inbox = start_inbox(repl(site), site.uow, at(local), control_site_id=control_id)
        with control.uow() as uow:
            control.custody_chain.recalls.create(
                uow, fh.actor(control, "qp"), lot=HC_LOT, reason="assay out of spec"
            )
        assert send(control, at(hub)).error is None
        everything = outbox_rows(control)
        late = [r for r in everything if r[1] > first.acknowledged]
        assert wait_for(lambda: inbox_rows(site, control_id) == late and inbox.idle_for(0.3), 30)
        with site.uow() as uow:
            (status,) = repl(site).inbox_status(uow)
        assert status.gaps == [f"{control_id}: gap: seq 1..{first.acknowledged} missing"]
        assert applied_recalls(site) == 0  # a record after a gap waits

        with control.uow() as uow:
            assert repl(control).resend_from(uow, 1) == len(everything)
        assert send(control, at(hub)).error is None
        assert wait_for(
            lambda: inbox_rows(site, control_id) == everything and inbox.idle_for(0.5), 30
        )
    finally:
        if inbox is not None:
            inbox.stop()
        local.stop()
        hub.stop()
        for f in folders:
            shutil.rmtree(f, ignore_errors=True)
    with site.uow() as uow:
        (status,) = repl(site).inbox_status(uow)
    assert status.ok and status.duplicates == len(late), status.to_dict()
    assert applied_recalls(site) == 1


def applied_recalls(site: App) -> int:
    """The site's `replication_applied` audit rows about a recall of the seeded lot."""
    with site.uow() as uow:
        rows = uow.session.scalars(
            select(AuditEntry.new).where(AuditEntry.entity_type == APPLIED_ENTITY)
        ).all()
    return sum(1 for r in rows if (r or {}).get("lot") == HC_LOT)
