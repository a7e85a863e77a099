"""Replication throughput and lag (issue 17): a site node's backlog through a private Mosquitto
into the control node's inbox, with the broker's raw rate measured in the same run.

Two nodes, each a nearfab App on its own SQLite copy of the seeded demo network. The site node
works while cut off: `--records` outbox records (half audit rows, half ledger entries, 100 per
transaction). Then, as on reconnecting, the replicator publishes the backlog (QoS 1, batches of
500, acknowledged marks) while the control node's persistent subscriber applies it (dedupe,
gap and fork checks, one transaction per batch). Figures:

- `capture_overhead_ms`: extra time per transaction of one audit row when the node captures
  (the same transactions on the same database, without and with the capture);
- `replicate_records_per_s`: from the first publish to the last record applied at the control;
- `lag_p50_s`, `lag_p99_s`: per record, from the reconnect to its commit in the control inbox;
- `raw_publish_per_s`: paho QoS 1 publishes of the same payloads to the same broker, counted
  by a plain subscriber (no database on either side): the engine's own rate;
- `verify_per_s`: the control node's inbox status (chain verification) over what it holds.

    .venv/bin/python benchmarks/replication.py [--records 20000] [--json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from nearfab.bootstrap import App, build_app
from nearfab.common.clock import ManualClock
from nearfab.config import Settings
from nearfab.custody.enums import LedgerKind
from nearfab.demo import seed
from nearfab.identity import AuditAction, audit, system_actor
from nearfab.replication import InboxSubscriber, OutboxPublisher, origin_filter
from nearfab.replication.models import OutboxRecord
from nearfab.telemetry import BrokerAddress

PASSWORD = "bench-password-1"


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


def _nodes(root: Path) -> tuple[App, App]:
    template = root / "template"
    template.mkdir()
    app = build_app(Settings(data_dir=template), clock=ManualClock())
    seed(app, PASSWORD)
    app.engine.dispose()
    apps = []
    for name, code in (("site", "GSTT-PH"), ("control", "CTRL")):
        shutil.copytree(template, root / name)
        settings = Settings(data_dir=root / name, node_site=code)
        apps.append(build_app(settings, clock=ManualClock(), migrate=False))
    return apps[0], apps[1]


def _work(app: App, site_id: str, transactions: int, per: int) -> None:
    """`transactions` transactions of `per` audit rows and `per` ledger entries each."""
    actor = system_actor("bench")
    for t in range(transactions):
        with app.uow() as uow:
            app.custody_chain.ledger.append_many(
                uow,
                site_id,
                [(LedgerKind.EPCIS, f"b{t}-{i}", {"t": t, "i": i}) for i in range(per)],
            )
            for i in range(per):
                audit(uow, actor, AuditAction.CREATE, "bench", f"{t}-{i}", new={"i": i})
            uow.commit()


def _overhead_ms(app: App, n: int) -> float:
    """ms per one-audit-row transaction (the caller installs the capture or not)."""
    actor = system_actor("bench")
    start = time.perf_counter()
    for i in range(n):
        with app.uow() as uow:
            audit(uow, actor, AuditAction.CREATE, "bench", f"o{i}", new={"i": i})
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
    got.wait(120)
    elapsed = time.perf_counter() - start
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    return len(payloads) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (tests)")
    args = parser.parse_args()
    records = 400 if args.smoke else args.records
    per = 50
    transactions = max(1, records // (2 * per))
    with tempfile.TemporaryDirectory(prefix="nearfab-bench-repl-") as tmp:
        root = Path(tmp)
        site, control = _nodes(root)
        assert site.replication is not None and control.replication is not None
        site_id = site.replication.site_id
        # not under the 0700 temporary folder: mosquitto started as root drops to its own user
        broker_dir = Path(tempfile.mkdtemp(prefix="nearfab-bench-broker-"))
        proc, port = _broker(broker_dir)
        try:
            address = BrokerAddress("127.0.0.1", port)
            # the capture's cost per transaction: the same writes without it, then with it
            n = 50 if args.smoke else 300
            plain = build_app(Settings(data_dir=root / "control"), clock=ManualClock())
            without = _overhead_ms(plain, n)
            plain.engine.dispose()
            with site.uow() as uow:
                site.replication.capture_now(uow)  # the seed's rows: not part of the timing
            with_capture = _overhead_ms(site, n)
            _work(site, site_id, transactions, per)
            with site.uow() as uow:
                site.replication.capture_now(uow)
                backlog = site.replication.outbox(uow).pending
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
            start = time.perf_counter()
            publisher = OutboxPublisher(address, "bench-site")
            sent = site.replication.replicate_once(site.uow, publisher, timeout_s=60)
            publisher.close()
            deadline = time.monotonic() + 300
            while sum(a for _, a in applied_at) < backlog and time.monotonic() < deadline:
                time.sleep(0.01)
            end = time.perf_counter()
            inbox.stop()
            lags: list[float] = []
            for at, count in applied_at:
                lags.extend([at - start] * count)
            lags.sort()
            with control.uow() as uow:
                t0 = time.perf_counter()
                (status,) = service.inbox_status(uow)
                verify_s = time.perf_counter() - t0
            # the same payloads, sizes and count, straight through the broker
            with site.uow() as uow:
                payloads = [
                    (r.kind, r.payload.encode())
                    for r in uow.session.scalars(select(OutboxRecord).limit(backlog))
                ]
            raw = _raw_rate(port, payloads)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
            shutil.rmtree(broker_dir, ignore_errors=True)
            site.engine.dispose()
            control.engine.dispose()
    out = {
        "records": backlog,
        "acknowledged": sent.acknowledged,
        "applied": status.records,
        "chain_ok": status.ok,
        "capture_overhead_ms": round(with_capture - without, 3),
        "transaction_ms_without_capture": round(without, 3),
        "replicate_records_per_s": round(backlog / (end - start), 1),
        "lag_p50_s": round(lags[len(lags) // 2], 3) if lags else 0.0,
        "lag_p99_s": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))], 3) if lags else 0.0,
        "raw_publish_per_s": round(raw, 1),
        "ratio_to_raw": round(backlog / (end - start) / raw, 3),
        "verify_per_s": round(status.records / verify_s, 1),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:34} {value}")


if __name__ == "__main__":
    main()
