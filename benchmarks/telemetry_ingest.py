"""How fast telemetry goes in, end to end: bus -> checks -> storage -> SPC/MSPC scoring.

Embedded path: a machine gateway publishes messages of 50 points through the in-process bus into
the ingestor, which parses and checks each message, deduplicates it, stores the points with one
executemany per batch, and runs every point through the approved SPC and MSPC models of the run's
product, all in one transaction per batch. The raw baseline, measured in the same run, is a plain
`executemany` of the same rows into the same table in batches of the same size, with a commit
each. With `--mqtt`, the same messages also go through the Mosquitto broker (QoS 1 both ways,
acknowledged only after commit).

    .venv/bin/python benchmarks/telemetry_ingest.py [--points 200000] [--mqtt URL] [--json]
        [--smoke]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select, text

from nearfab.bootstrap import App, build_app
from nearfab.common.clock import ManualClock
from nearfab.common.ids import new_id
from nearfab.config import Settings
from nearfab.demo import prescription_bundle, seed
from nearfab.families.solid_dose.machines import DEFAULT_PROCESS_PARAMETERS, METRICS
from nearfab.identity import actor_of
from nearfab.monitoring import ModelStatus, MonitoringModel
from nearfab.monitoring.training import TrainingData, fit_mspc, fit_spc
from nearfab.production import BatchRecord, TelemetryReading
from nearfab.telemetry import (
    BrokerAddress,
    MachineGateway,
    MqttPublisher,
    MqttSubscriber,
)
from nearfab.telemetry.models import readings

BATCH = 5_000
PASSWORD = "bench-password-1"


def one_batch(app: App) -> BatchRecord:
    """A real order made on the demo network, so its run has a product and a machine type."""
    with app.uow() as uow:
        user = app.users.by_username(uow, "clinician")
        assert user is not None
        actor = actor_of(user, uow.session)
    bundle = prescription_bundle(random.Random(1), today=app.clock.now().date(), dose_mg=2.0)
    with app.uow() as uow:
        app.orders.submit(uow, actor, bundle)
    app.runner.run_until_idle()
    with app.uow() as uow:
        batch = uow.session.scalars(select(BatchRecord)).first()
    assert batch is not None
    return batch


def approve_models(app: App, batch: BatchRecord, machine_type: str) -> None:
    """Models fitted on synthetic healthy data and put in force directly (benchmark set-up)."""
    rng = np.random.default_rng(1)
    metrics = sorted(METRICS)
    per_run = {
        f"r{r}": {
            m: list(
                DEFAULT_PROCESS_PARAMETERS[m]["target"]
                + rng.normal(0, 1, 60)
                * (DEFAULT_PROCESS_PARAMETERS[m]["high"] - DEFAULT_PROCESS_PARAMETERS[m]["target"])
                / 6
            )
            for m in metrics
        }
        for r in range(3)
    }
    matrix = np.asarray([[per_run[r][m][i] for m in metrics] for r in per_run for i in range(60)])
    data = TrainingData(metrics, per_run, matrix, [60, 60, 60])
    with app.uow() as uow:
        for kind, params in (
            ("spc", fit_spc(data, alpha=0.99)),
            ("mspc", fit_mspc(data, alpha=0.99)),
        ):
            uow.session.add(
                MonitoringModel(
                    id=new_id("mon"),
                    kind=kind,
                    master_file_code=batch.master_file_code,
                    machine_type=machine_type,
                    version=1,
                    status=ModelStatus.APPROVED.value,
                    metrics=metrics,
                    params=params,
                    training={"runs": [], "samples": len(matrix)},
                    created_at=uow.clock.now(),
                    created_by="bench",
                    approved_at=uow.clock.now(),
                    approved_by="bench",
                    approval_signature_id=None,
                )
            )
        uow.commit()
    app.monitor.models_changed()


def readings_for(app: App, n_points: int) -> list[TelemetryReading]:
    rng = np.random.default_rng(2)
    out: list[TelemetryReading] = []
    samples = n_points // len(METRICS)
    noise = rng.normal(0, 1, (samples, len(METRICS)))
    for i in range(samples):
        app.clock.sleep(0.5)  # type: ignore[attr-defined]
        at = app.clock.now()
        for j, metric in enumerate(METRICS):
            spec = DEFAULT_PROCESS_PARAMETERS[metric]
            value = spec["target"] + noise[i, j] * (spec["high"] - spec["target"]) / 6
            out.append(TelemetryReading(at, metric, round(float(value), 3), spec["unit"]))
    return out


def stored(app: App) -> int:
    with app.uow() as uow:
        return int(uow.session.execute(select(text("count(*)")).select_from(readings)).scalar_one())


class Wire:
    """Keeps what the machine side sends, so only the platform's work is timed."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, payload))

    def close(self) -> None:
        return None


def encoded(
    app: App, batch: BatchRecord, points: list[TelemetryReading]
) -> list[tuple[str, bytes]]:
    wire = Wire()
    gw = MachineGateway(batch.site_id, batch.machine_id, wire, app.clock)
    for i in range(0, len(points), 1000):
        gw.readings(batch.job_id, points[i : i + 1000])
    return wire.sent


def embedded(app: App, messages: list[tuple[str, bytes]], n_points: int) -> float:
    """In-process bus -> ingestor (parse, check, dedupe, store, score), batches of 5,000."""
    app.ingestor._batch_points = BATCH
    before = stored(app)
    submit = app.ingestor.submit
    start = time.perf_counter()
    for topic, payload in messages:
        submit(topic, payload)
    app.ingestor.flush()
    elapsed = time.perf_counter() - start
    assert stored(app) - before == n_points, "not every point was stored"
    return n_points / elapsed


def raw(app: App, n: int) -> float:
    """The driver's own executemany of ready-made tuples into the same table (same indexes),
    same batch size, one commit per batch: the floor nearfab's ingest is compared with."""
    rows = [(999_999, i, 1.0 + i) for i in range(n)]
    raw_conn = app.engine.raw_connection()
    try:
        cursor = raw_conn.cursor()
        start = time.perf_counter()
        for i in range(0, n, BATCH):
            cursor.executemany(
                f"INSERT INTO {readings.name} (series_id, ts_us, value) VALUES (?, ?, ?)",
                rows[i : i + BATCH],
            )
            raw_conn.commit()
        elapsed = time.perf_counter() - start
    finally:
        raw_conn.close()
    return n / elapsed


def _machine_process(
    url: str, messages: list[tuple[str, bytes]], stored: Any, go: Any, per_message: int
) -> None:
    """The machine side in its own process (as on a real network): publishes QoS 1, staying
    within the broker's per-client queue (Debian's default max_queued_messages is 1000; beyond
    it the broker drops QoS 1 messages and nearfab records a gap)."""
    publisher = MqttPublisher(BrokerAddress.parse(url), f"bench-machine-{new_id('m')}")
    go.wait()
    for i, (topic, payload) in enumerate(messages):
        publisher.publish(topic, payload)
        while (i + 1) * per_message - stored.value > 500 * per_message:
            time.sleep(0.0005)
    publisher.wait_published(60)
    publisher.close()


def over_mqtt(app: App, messages: list[tuple[str, bytes]], n_points: int, url: str) -> float:
    """Machine process -> Mosquitto -> the platform's subscriber (manual ack after commit)."""
    ctx = multiprocessing.get_context("spawn")
    stored_points = ctx.Value("q", 0)
    go = ctx.Event()
    machine = ctx.Process(
        target=_machine_process, args=(url, messages, stored_points, go, 50), daemon=True
    )
    machine.start()
    subscriber = MqttSubscriber(
        BrokerAddress.parse(url), app.ingestor.ingest, client_id=f"bench-{new_id('s')}"
    )
    subscriber.start()
    totals = app.ingestor.totals
    base = totals.points
    time.sleep(1.0)  # the machine process is connected
    start = time.perf_counter()
    go.set()
    while totals.points - base < n_points:
        stored_points.value = totals.points - base
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    machine.join(timeout=30)
    subscriber.stop()
    return n_points / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--mqtt", default=None, help="e.g. mqtt://127.0.0.1:1883")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny run (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.points = 400
    with tempfile.TemporaryDirectory() as tmp:
        app = build_app(Settings(data_dir=Path(tmp) / "data"), clock=ManualClock())
        seed(app, PASSWORD)
        batch = one_batch(app)
        with app.uow() as uow:
            machine_type = app.network.get_machine(uow, batch.machine_id).machine_type
        approve_models(app, batch, machine_type)
        points = readings_for(app, args.points)
        raw_rate = raw(app, len(points))
        rate = embedded(app, encoded(app, batch, points), len(points))
        result: dict[str, float | int | None] = {
            "points": len(points),
            "points_per_message": 50,
            "points_per_s": round(rate),
            "raw_points_per_s": round(raw_rate),
            "ratio": round(rate / raw_rate, 3),
            "mqtt_points_per_s": None,
        }
        if args.mqtt:
            later = readings_for(app, args.points)
            messages = encoded(app, batch, later)
            result["mqtt_points_per_s"] = round(over_mqtt(app, messages, len(later), args.mqtt))
        app.engine.dispose()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
