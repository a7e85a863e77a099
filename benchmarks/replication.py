"""Replication throughput and lag (issue 17): a site node's backlog through a private Mosquitto
into the control node's inbox, with the broker's raw rate measured in the same run.

Two nodes, each a nearfab App on its own copy of the seeded demo network: SQLite files
(`--db sqlite`, the default) or throwaway databases on a PostgreSQL server (`--db postgresql`,
`--pg-admin URL`, default the local server at 127.0.0.1:5432 with trust auth, user postgres:
a migrated and seeded template database cloned for each node, every database dropped at the
end, even after a failure). The site node works while cut off: a backlog of outbox records
written 100 per transaction. Then, as on reconnecting, the replicator publishes the backlog
(QoS 1, batches of 500, acknowledged marks) while the control node's persistent subscriber
applies it (dedupe, gap and fork checks, one transaction per batch).

The backlog's size: `--records N` (half audit rows, half ledger entries), or `--day`: a day of
a busy site, measured, not guessed. On a third copy of the network with the site node's
capture installed (the site's whole audit trail, its ledger chain and its batch summaries,
`replication.node_capture`), the demo's own steps take hydrocortisone orders at GSTT-PH from
prescription to dispense, each a batch of one: the FHIR prescription; the runner; the steps
before the machine signed under the site's automated operator, the critical entry verified by
the QP autopilot (as `DemoLoop.sign_before_start`); after the run, the record completed the
same way; the QP's audit-trail review and release; the pack dispensed to its patient. The
first order is a warm-up (it makes the automated operator's account and training, once per
site); the next ones' records, averaged, are the records per order.

ASSUMPTION (printed with the figures): a busy site dispenses `--orders-per-day` such orders a
day (default 200), and nothing else it does (logins, reads, telemetry, which is not
replicated) adds records. The release is counted at the site although in a deployment the
control node's QP writes it (a site node refuses it): the day is, if anything, overstated by
those rows. The backlog is then that many records (the seed's and the overhead measurement's
included), audit rows (batch summaries counted with them) and ledger entries in the measured
proportion, padded to the measured mean sizes.

Figures:

- `capture_overhead_ms`: extra time per transaction of one audit row when the node captures
  (the same transactions on the site's database, without and with the capture, in alternating
  rounds of 60; the median of the rounds' differences, the rounds listed beside it);
- `replicate_records_per_s`: from the first publish to the last record applied at the control;
- `lag_p50_s`, `lag_p99_s`: per record, from the reconnect to its commit in the control inbox;
- `raw_publish_per_s`: paho QoS 1 publishes of the same payloads to the same broker, counted
  by a plain subscriber (no database on either side): the engine's own rate;
- `verify_per_s`: the control node's inbox status (chain verification) over what it holds.

    .venv/bin/python benchmarks/replication.py [--records 20000 | --day [--orders-per-day 200]]
        [--db sqlite|postgresql] [--pg-admin postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
        [--json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from nearfab.bootstrap import App, build_app
from nearfab.common.clock import ManualClock
from nearfab.config import Settings
from nearfab.custody import make_identifier
from nearfab.custody.enums import LedgerKind
from nearfab.demo import (
    AUTOPILOT,
    HYDROCORTISONE,
    automated_operator,
    complete_record,
    prescription_bundle,
    seed,
)
from nearfab.identity import AuditAction, actor_of, audit, system_actor
from nearfab.replication import (
    InboxSubscriber,
    OutboxPublisher,
    install_capture,
    node_capture,
    origin_filter,
)
from nearfab.replication.models import OutboxRecord
from nearfab.telemetry import BrokerAddress

PASSWORD = "bench-password-1"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SITE = "GSTT-PH"


def _mosquitto() -> str:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(found).exists():
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    return found


def _broker(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    folder.chmod(0o777)
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {folder}/\nmax_queued_messages 0\n"
    )
    proc = subprocess.Popen(
        [_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


class Databases:
    """Where the nodes' databases live: SQLite files in each node's data folder, or throwaway
    databases on a PostgreSQL server. The control node's kind is `control`, every other
    database's (the template, the site, the measured day) is `site`'s. A node of the
    template's kind is a clone of it (a file copy; CREATE DATABASE ... TEMPLATE); of the other
    kind, an empty database migrated and given the template's rows, table by table. `drop_all`
    removes every PostgreSQL database this run made, whatever happened."""

    def __init__(self, site: str, control: str, pg_admin: str) -> None:
        self.site, self.control, self.pg_admin = site, control, pg_admin
        self.prefix = f"nearfab_bench_repl_{secrets.token_hex(4)}"
        self.made: list[str] = []

    def kind(self, name: str) -> str:
        return self.control if name == "control" else self.site

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.pg_admin.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def url(self, name: str) -> str | None:
        """The database URL of node `name` (None: SQLite in its data folder)."""
        if self.kind(name) == "sqlite":
            return None
        return self.pg_admin.rsplit("/", 1)[0] + f"/{self.prefix}_{name}"

    def _full_url(self, name: str, data_dir: Path) -> str:
        return self.url(name) or f"sqlite:///{data_dir / 'nearfab.db'}"

    def create(self, name: str) -> None:
        """An empty database for the template (SQLite: made by the first migration)."""
        if self.kind(name) == "postgresql":
            self.made.append(f"{self.prefix}_{name}")
            self._admin(f'CREATE DATABASE "{self.prefix}_{name}"')

    def clone(self, root: Path, name: str) -> None:
        """Node `name`'s data folder and database, as the template's."""
        shutil.copytree(root / "template", root / name)
        same = self.kind(name) == self.kind("template")
        if self.kind(name) == "postgresql":
            self.made.append(f"{self.prefix}_{name}")
            template = f' TEMPLATE "{self.prefix}_template"' if same else ""
            self._admin(f'CREATE DATABASE "{self.prefix}_{name}"{template}')
        if not same:
            (root / name / "nearfab.db").unlink(missing_ok=True)
            _copy_rows(
                self._full_url("template", root / "template"), self._full_url(name, root / name)
            )

    def drop_all(self) -> None:
        for full in reversed(self.made):
            self._admin(f'DROP DATABASE IF EXISTS "{full}" WITH (FORCE)')
        self.made.clear()

    def describe(self, name: str) -> str:
        if self.kind(name) == "sqlite":
            return "SQLite (WAL, one file per node)"
        import psycopg

        with psycopg.connect(self.pg_admin.replace("+psycopg", ""), autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            fsync = conn.execute("SHOW fsync").fetchone()
            sync = conn.execute("SHOW synchronous_commit").fetchone()
        assert version and fsync and sync
        return f"PostgreSQL {version[0]} (fsync {fsync[0]}, synchronous_commit {sync[0]})"


def _copy_rows(source: str, target: str) -> None:
    """Every row of the seeded `source` into `target` (migrated here, emptied), through the
    models' tables, whose types convert between the backends; each table's count checked.
    On PostgreSQL the triggers, foreign keys' included, are off while copying (a superuser's
    `session_replication_role`: the rows are the source's, consistent already) and the
    sequences are moved past the copied ids."""
    from sqlalchemy import create_engine, inspect, text

    from nearfab.db import Base
    from nearfab.migrations import upgrade

    upgrade(target)
    src, dst = create_engine(source), create_engine(target)
    tables = Base.metadata.sorted_tables
    missing = set(inspect(src).get_table_names()) - {t.name for t in tables} - {"alembic_version"}
    if missing:
        raise RuntimeError(f"tables outside the models, not copied: {sorted(missing)}")
    pg = dst.dialect.name == "postgresql"
    try:
        with src.connect() as s, dst.begin() as d:
            if pg:
                d.execute(text("SET session_replication_role = replica"))
            else:
                d.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
            for table in reversed(tables):
                d.execute(table.delete())
            for table in tables:
                rows = [dict(r._mapping) for r in s.execute(select(table))]
                if rows:
                    d.execute(table.insert(), rows)
                copied = d.execute(select(func.count()).select_from(table)).scalar_one()
                if copied != len(rows):
                    raise RuntimeError(f"{table.name}: {copied} rows copied of {len(rows)}")
                if not pg:
                    continue
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


def _node_app(root: Path, dbs: Databases, name: str, node_site: str | None) -> App:
    settings = Settings(data_dir=root / name, database_url=dbs.url(name), node_site=node_site)
    return build_app(settings, clock=ManualClock(), migrate=False)


def _template(root: Path, dbs: Databases) -> None:
    """The seeded demo network every node starts from (one seeding: the same ids everywhere)."""
    template = root / "template"
    template.mkdir()
    dbs.create("template")
    app = build_app(
        Settings(data_dir=template, database_url=dbs.url("template")), clock=ManualClock()
    )
    seed(app, PASSWORD)
    app.engine.dispose()


@dataclass(frozen=True)
class Day:
    """What one order, prescription to dispense, adds to a site node's outbox (measured)."""

    orders_measured: int
    per_order: dict[str, float]  # records per order, by record kind
    mean_bytes: dict[str, float]  # mean payload size, by record kind
    seconds_per_order: float

    @property
    def records_per_order(self) -> float:
        return sum(self.per_order.values())


def _outbox_by_kind(app: App) -> dict[str, tuple[int, float]]:
    with app.uow() as uow:
        rows = uow.session.execute(
            select(
                OutboxRecord.kind, func.count(), func.sum(func.length(OutboxRecord.payload))
            ).group_by(OutboxRecord.kind)
        ).all()
    return {str(kind): (int(n), float(total or 0)) for kind, n, total in rows}


def _identifier(unit: Any) -> Any:
    return make_identifier(unit.gtin, unit.serial, unit.batch_number, unit.expiry)


def _one_order(app: App, site_id: str, n: int) -> None:
    """One hydrocortisone order at the site, prescription to dispense, by the demo's steps."""
    bundle = prescription_bundle(
        random.Random(n), today=app.clock.now().date(), medication="hydrocortisone"
    )
    with app.uow() as uow:
        (order,) = app.orders.submit(uow, system_actor("demo-prescriber"), bundle, site_id=SITE)
        order_id = order.id
    # the runner opens the batch; the steps its machine waits for (line clearance, filament
    # loaded) are signed as the demo does (`DemoLoop.sign_before_start`): under the site's
    # automated operator, the critical entry verified by the QP autopilot
    performer = automated_operator(app, site_id, HYDROCORTISONE, PASSWORD)
    batch_id = ""
    for _ in range(20):
        app.runner.run_until_idle()
        with app.uow() as uow:
            if app.orders.get(uow, order_id).status == "awaiting_release":
                break
            for batch in app.production.batches(uow, status="in_progress"):
                if batch.order_id == order_id:
                    batch_id = batch.id
        if batch_id:
            complete_record(
                app, batch_id, PASSWORD, verifier=AUTOPILOT, performer=performer, before_start=True
            )
    else:
        raise RuntimeError(f"order {order_id} never reached awaiting_release")
    with app.uow() as uow:
        (batch_id,) = [b.id for b in app.production.batches(uow) if b.order_id == order_id]
    # after the run: the rest of the record as the demo autopilot completes it, then the QP
    complete_record(app, batch_id, PASSWORD, verifier=AUTOPILOT, performer=performer)
    with app.uow() as uow:
        qp_user = app.users.by_username(uow, "qp")
        assert qp_user is not None
        qp = actor_of(qp_user, uow.session)
        app.quality.records.review_audit_trail(uow, qp, batch_id, password=PASSWORD)
    with app.uow() as uow:
        app.quality.decide(
            uow,
            qp,
            batch_id,
            decision="release",
            password=PASSWORD,
            meaning="QP certification: batch released",
            reason="benchmark: the demo's order (a batch of one)",
        )
    with app.uow() as uow:
        pharmacist = app.users.by_username(uow, "pharmacist")
        assert pharmacist is not None
        ph = actor_of(pharmacist, uow.session)
        scans = [
            (
                "]d2"
                + make_identifier(u.gtin, u.serial, u.batch_number, u.expiry).datamatrix_data(),
                app.orders.patient(uow, u.patient_id).ref,
            )
            for u in app.custody.units_of_batch(uow, batch_id)
        ]
    for scan, ref in scans:
        with app.uow() as uow:
            app.custody.dispense(uow, ph, scan=scan, patient_ref=ref)
    app.custody.flush_verification_log()
    with app.uow() as uow:
        status = app.orders.get(uow, order_id).status
    if status != "dispensed":
        raise RuntimeError(f"order {order_id} ended {status}, not dispensed")


def _measure_day(root: Path, dbs: Databases, site_id: str, orders: int) -> Day:
    """The records one order adds to the site's outbox: a warm-up order, then `orders` more,
    on a copy of the network with the site node's capture (a plain app: a site node refuses
    the QP's release, which the control makes in a deployment)."""
    dbs.clone(root, "day")
    app = _node_app(root, dbs, "day", None)
    try:
        install_capture(app.engine, node_capture(site_id, app.clock, control=False))
        _one_order(app, site_id, 0)
        before = _outbox_by_kind(app)
        start = time.perf_counter()
        for n in range(1, orders + 1):
            _one_order(app, site_id, n)
        elapsed = time.perf_counter() - start
        after = _outbox_by_kind(app)
    finally:
        app.engine.dispose()
    per_order: dict[str, float] = {}
    mean_bytes: dict[str, float] = {}
    for kind, (count, total) in after.items():
        was_count, was_total = before.get(kind, (0, 0.0))
        if count > was_count:
            per_order[kind] = (count - was_count) / orders
            mean_bytes[kind] = (total - was_total) / (count - was_count)
    return Day(orders, per_order, mean_bytes, elapsed / orders)


def _work(
    app: App, site_id: str, records: int, ledger_share: float = 0.5, pad: tuple[int, int] = (0, 0)
) -> None:
    """`records` outbox records in transactions of 100: ledger entries (`ledger_share` of them)
    and audit rows, their payloads padded by `pad` (audit, ledger) characters."""
    actor = system_actor("bench")
    audit_pad, ledger_pad = "x" * pad[0], "x" * pad[1]
    per = 100
    t = 0
    while records > 0:
        size = min(per, records)
        ledger = max(1, round(size * ledger_share)) if ledger_share > 0 else 0
        ledger = min(ledger, size)
        with app.uow() as uow:
            if ledger:
                app.custody_chain.ledger.append_many(
                    uow,
                    site_id,
                    [
                        (LedgerKind.EPCIS, f"b{t}-{i}", {"t": t, "i": i, "pad": ledger_pad})
                        for i in range(ledger)
                    ],
                )
            for i in range(size - ledger):
                new = {"i": i, "pad": audit_pad}
                audit(uow, actor, AuditAction.CREATE, "bench", f"{t}-{i}", new=new)
            uow.commit()
        records -= size
        t += 1


def _pads(app: App, site_id: str, day: Day) -> tuple[int, int]:
    """Padding that brings the synthetic rows to the measured mean sizes: one probe
    transaction (one audit row, one ledger entry, unpadded), its records' sizes read back."""
    with app.uow() as uow:
        assert app.replication is not None
        app.replication.capture_now(uow)
    before = _outbox_by_kind(app)
    _work(app, site_id, 2, ledger_share=0.5)
    after = _outbox_by_kind(app)
    sizes = {k: after[k][1] - before.get(k, (0, 0.0))[1] for k in ("audit", "ledger")}
    audit_kinds = {k: v for k, v in day.per_order.items() if k != "ledger"}
    audit_target = sum(day.mean_bytes[k] * n for k, n in audit_kinds.items()) / max(
        1e-9, sum(audit_kinds.values())
    )
    ledger_target = day.mean_bytes.get("ledger", sizes["ledger"])
    return (
        max(0, round(audit_target - sizes["audit"])),
        max(0, round(ledger_target - sizes["ledger"])),
    )


def _overhead_ms(app: App, n: int, tag: str) -> float:
    """ms per one-audit-row transaction (the caller installs the capture or not)."""
    actor = system_actor("bench")
    start = time.perf_counter()
    for i in range(n):
        with app.uow() as uow:
            audit(uow, actor, AuditAction.CREATE, "bench", f"{tag}-{i}", new={"i": i})
            uow.commit()
    return (time.perf_counter() - start) / n * 1000


def _raw_rate(port: int, payloads: list[tuple[str, bytes]]) -> float:
    got = threading.Event()
    count = [0]

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        count[0] += 1
        if count[0] >= len(payloads):
            got.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-sub", protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("raw/#", qos=1)
    sub.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-pub", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(500)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    time.sleep(0.2)
    start = time.perf_counter()
    for name, payload in payloads:
        pub.publish("raw/" + name, payload, qos=1)
    got.wait(300)
    elapsed = time.perf_counter() - start
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    return len(payloads) / elapsed


@contextmanager
def _mosquitto_running() -> Iterator[int]:
    # not under the 0700 temporary folder: mosquitto started as root drops to its own user
    broker_dir = Path(tempfile.mkdtemp(prefix="nearfab-bench-broker-"))
    try:
        proc, port = _broker(broker_dir)
        try:
            yield port
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    finally:
        shutil.rmtree(broker_dir, ignore_errors=True)


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    dbs = Databases(args.db, args.control_db or args.db, args.pg_admin)
    out: dict[str, Any] = {
        "db": dbs.site,
        "control_db": dbs.control,
        "database": dbs.describe("site"),
        "control_database": dbs.describe("control"),
    }
    with tempfile.TemporaryDirectory(prefix="nearfab-bench-repl-") as tmp:
        root = Path(tmp)
        opened: list[App] = []
        try:
            _template(root, dbs)
            for name in ("site", "control"):
                dbs.clone(root, name)
            site = _node_app(root, dbs, "site", SITE)
            opened.append(site)
            control = _node_app(root, dbs, "control", "CTRL")
            opened.append(control)
            assert site.replication is not None and control.replication is not None
            site_id = site.replication.site_id
            day: Day | None = None
            if args.day:
                day = _measure_day(root, dbs, site_id, 1 if args.smoke else args.measure_orders)
                records = round(day.records_per_order * args.orders_per_day)
                out |= {
                    "orders_per_day": args.orders_per_day,
                    "orders_measured": day.orders_measured,
                    "records_per_order": round(day.records_per_order, 2),
                    "records_per_order_by_kind": {
                        k: round(v, 2) for k, v in sorted(day.per_order.items())
                    },
                    "order_mean_bytes_by_kind": {
                        k: round(v) for k, v in sorted(day.mean_bytes.items())
                    },
                    "order_to_dispense_s": round(day.seconds_per_order, 2),
                    "day_records": records,
                    "assumption": (
                        f"{args.orders_per_day} orders a day, each prescription to dispense "
                        "(release included), nothing else recorded"
                    ),
                }
            else:
                records = 400 if args.smoke else args.records
            with _mosquitto_running() as port:
                out |= _replicate(args, root, dbs, site, control, site_id, records, day, port)
        finally:
            for app in opened:
                app.engine.dispose()
            dbs.drop_all()
    return out


def _replicate(
    args: argparse.Namespace,
    root: Path,
    dbs: Databases,
    site: App,
    control: App,
    site_id: str,
    records: int,
    day: Day | None,
    port: int,
) -> dict[str, Any]:
    assert site.replication is not None and control.replication is not None
    address = BrokerAddress("127.0.0.1", port)
    # the capture's cost per transaction: the same writes on the site's database through an app
    # without the capture and through the site node, in alternating rounds (the rows written
    # without it are captured before the next round, untimed); the median of the rounds
    rounds, n = (2, 25) if args.smoke else (7, 60)
    plain = _node_app(root, dbs, "site", None)
    without: list[float] = []
    with_capture: list[float] = []
    try:
        for r in range(rounds):
            without.append(_overhead_ms(plain, n, f"p{r}"))
            with site.uow() as uow:
                site.replication.capture_now(uow)
            with_capture.append(_overhead_ms(site, n, f"c{r}"))
    finally:
        plain.engine.dispose()
    overheads = sorted(c - p for p, c in zip(without, with_capture, strict=True))
    if day is not None:
        pad = _pads(site, site_id, day)
        share = day.per_order.get("ledger", 0.0) / day.records_per_order
    else:
        pad, share = (0, 0), 0.5
    # the backlog is `records` in all: the seed's and the overhead's rows are pending too
    with site.uow() as uow:
        site.replication.capture_now(uow)
        already = site.replication.outbox(uow).pending
    _work(site, site_id, max(0, records - already), ledger_share=share, pad=pad)
    with site.uow() as uow:
        site.replication.capture_now(uow)
        backlog = site.replication.outbox(uow).pending
    backlog_kinds = _outbox_by_kind(site)
    # the control node's session exists before the site reconnects (as deployed)
    applied_at: list[tuple[float, int]] = []
    service = control.replication

    def timed_apply(messages: list[bytes]) -> object:
        with control.uow() as uow:
            result = service.apply(uow, messages)
        applied_at.append((time.perf_counter(), result.applied))
        return result

    inbox = InboxSubscriber(address, timed_apply, [origin_filter()], client_id="bench-in")
    inbox.start()
    try:
        start = time.perf_counter()
        publisher = OutboxPublisher(address, "bench-site")
        sent = site.replication.replicate_once(site.uow, publisher, timeout_s=60)
        publisher.close()
        deadline = time.monotonic() + 900
        while sum(a for _, a in applied_at) < backlog and time.monotonic() < deadline:
            time.sleep(0.01)
        end = time.perf_counter()
    finally:
        inbox.stop()
    lags = sorted(lag for at, count in applied_at for lag in [at - start] * count)
    with control.uow() as uow:
        t0 = time.perf_counter()
        (status,) = service.inbox_status(uow)
        verify_s = time.perf_counter() - t0
    # the same payloads, sizes and count, straight through the broker
    with site.uow() as uow:
        payloads = [
            (r.kind, r.payload.encode())
            for r in uow.session.scalars(
                select(OutboxRecord).order_by(OutboxRecord.seq.desc()).limit(backlog)
            )
        ]
    raw = _raw_rate(port, payloads)
    rate = backlog / (end - start)
    return {
        "records": backlog,
        "backlog_by_kind": {k: n for k, (n, _) in sorted(backlog_kinds.items())},
        "backlog_mean_bytes": round(sum(len(p) for _, p in payloads) / max(1, len(payloads))),
        "acknowledged": sent.acknowledged,
        "applied": status.records,
        "chain_ok": status.ok,
        "capture_overhead_ms": round(statistics.median(overheads), 3),
        "capture_overhead_ms_rounds": [round(o, 2) for o in overheads],
        "transaction_ms_without_capture": round(statistics.median(without), 3),
        "replicate_records_per_s": round(rate, 1),
        "replicate_s": round(end - start, 2),
        "lag_p50_s": _percentile(lags, 0.5),
        "lag_p99_s": _percentile(lags, 0.99),
        "raw_publish_per_s": round(raw, 1),
        "ratio_to_raw": round(rate / raw, 3),
        "verify_per_s": round(status.records / verify_s, 1),
    }


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="the backlog (not --day)")
    parser.add_argument("--day", action="store_true", help="size the backlog as a measured day")
    parser.add_argument("--orders-per-day", type=int, default=200, help="with --day")
    parser.add_argument(
        "--measure-orders", type=int, default=3, help="orders measured after the warm-up (--day)"
    )
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--control-db",
        choices=("sqlite", "postgresql"),
        help="the control node's database, when not --db's (the site node keeps --db)",
    )
    parser.add_argument("--pg-admin", default=PG_ADMIN, help="a PostgreSQL admin URL (--db)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (tests)")
    args = parser.parse_args()
    # a run stopped with SIGTERM still drops its databases (the finally blocks run)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        out = run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:34} {value}")


if __name__ == "__main__":
    main()
