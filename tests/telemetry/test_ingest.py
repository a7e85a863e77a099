"""The ingest path on a database (SQLite and PostgreSQL): stored once, gaps found, bad messages
dead-lettered while ingest goes on; queries, CSV export and retention."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import ValidationFailed
from nearfab.identity import AuditEntry
from nearfab.production import TelemetryReading
from nearfab.telemetry import (
    DeadLetter,
    LocalPublisher,
    MachineGateway,
    TelemetryGap,
    TelemetryMachine,
    TelemetryRun,
    epoch_ms,
    topic_for,
)
from nearfab.telemetry.models import readings

seeded = fh.seeded

PRINTER = "GSTT printer A"


class Wire:
    """A publisher that keeps what the gateway sent, so tests can replay, drop or reorder it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, payload))

    def close(self) -> None:
        return None


def gateway(app: App, publisher: object, bd_seq: int = 1) -> MachineGateway:
    machine = fh.machine(app, fh.machine_id(app, PRINTER))
    return MachineGateway(machine.site_id, machine.id, publisher, app.clock, bd_seq=bd_seq)  # type: ignore[arg-type]


def readings_for(app: App, n: int, metric: str = "nozzle_temperature_c") -> list[TelemetryReading]:
    out = []
    for i in range(n):
        app.clock.sleep(10)  # type: ignore[attr-defined]
        out.append(TelemetryReading(app.clock.now(), metric, 180.0 + i * 0.01, "°C"))
    return out


def stored(app: App) -> int:
    with app.uow() as uow:
        return int(uow.session.execute(select(func.count()).select_from(readings)).scalar_one())


def dead_letters(app: App) -> list[DeadLetter]:
    with app.uow() as uow:
        return app.telemetry.dead_letters(uow)


def test_a_run_goes_in_once_and_can_be_queried_and_exported(seeded: App) -> None:
    gw = gateway(seeded, LocalPublisher(seeded.ingestor.submit))
    gw.run_started("job-1")
    gw.readings("job-1", readings_for(seeded, 120))  # 3 messages of at most 50 points
    gw.run_ended("job-1", True)

    assert stored(seeded) == 120
    with seeded.uow() as uow:
        data = seeded.telemetry.query(uow, metric="nozzle_temperature_c", run="job-1")
        run = seeded.telemetry.run(uow, "job-1")
        small = seeded.telemetry.query(
            uow, metric="nozzle_temperature_c", run="job-1", max_points=10
        )
        out = io.StringIO()
        rows = seeded.telemetry.export_csv(uow, out, run="job-1")
    assert [p.value for p in data.points] == pytest.approx([180.0 + i * 0.01 for i in range(120)])
    assert data.unit == "°C" and not data.downsampled
    assert run is not None and run.end_state == "COMPLETE" and run.points == 120
    assert small.downsampled and len(small.points) <= 10
    assert sum(p.n for p in small.points) == 120
    assert min(p.low for p in small.points) == data.points[0].value
    assert rows == 120
    lines = out.getvalue().splitlines()
    assert lines[0] == "time_utc,machine_id,run,metric,value,unit"
    assert len(lines) == 121 and lines[1].endswith(",°C")


def test_redelivered_messages_are_stored_once(seeded: App) -> None:
    wire = Wire()
    gw = gateway(seeded, wire)
    gw.run_started("job-2")
    gw.readings("job-2", readings_for(seeded, 100))
    gw.run_ended("job-2", True)

    seeded.ingestor.ingest(wire.sent)
    report = seeded.ingestor.ingest(wire.sent)  # the broker delivers all of it again
    seeded.ingestor.ingest(wire.sent[2:4])  # and some once more, in a later batch

    assert stored(seeded) == 100
    assert report.duplicates == len(wire.sent) and report.accepted == 0
    assert dead_letters(seeded) == []


def test_a_gap_is_recorded_and_closed_by_the_late_message(seeded: App) -> None:
    wire = Wire()
    gw = gateway(seeded, wire)
    gw.run_started("job-3")
    gw.readings("job-3", readings_for(seeded, 150))
    late = wire.sent[3]  # second data message
    first = seeded.ingestor.ingest(wire.sent[:3] + wire.sent[4:])
    assert first.gaps == 1
    with seeded.uow() as uow:
        gap = seeded.telemetry.gaps(uow, run="job-3")
    assert [(g.from_seq, g.to_seq, g.missing, g.closed_at) for g in gap] == [(3, 3, [3], None)]

    seeded.ingestor.ingest([late])

    with seeded.uow() as uow:
        (gap,) = seeded.telemetry.gaps(uow, run="job-3")
    assert gap.missing == [] and gap.closed_at is not None
    assert stored(seeded) == 150


def test_malformed_messages_go_to_dead_letters_and_ingest_goes_on(seeded: App) -> None:
    wire = Wire()
    gw = gateway(seeded, wire)
    gw.readings("job-4", readings_for(seeded, 5))
    birth, good = wire.sent
    site, machine = gw.site_id, gw.machine_id
    topic = topic_for(site, machine, "data")

    def msg(seq: int, **extra: object) -> bytes:
        body = {"bdSeq": 1, "seq": seq, "timestamp": 5, "run": "job-4", "metrics": []}
        body.update(extra)
        return json.dumps(body).encode()

    bad = [
        (topic, b"{oops"),
        (topic, msg(2, metrics=[{"name": "laser_power_w", "value": 3.0}])),
        (topic, msg(3, metrics=[{"name": "nozzle_temperature_c", "value": "warm"}])),
        (topic_for(site, "no-such-machine", "data"), msg(4)),
        (topic_for("another-site", machine, "data"), msg(5)),
    ]
    report = seeded.ingestor.ingest([birth, *bad, good])

    assert report.dead_letters == 5
    assert stored(seeded) == 5  # the good message after the bad ones is in
    reasons = {d.code for d in dead_letters(seeded)}
    assert reasons == {"bad_json", "unknown_metric", "type", "unknown_machine", "wrong_site"}
    assert all(d.reason and d.payload for d in dead_letters(seeded))

    # a number reused with other content, and a message of an older session
    later = seeded.ingestor.ingest(
        [(topic, msg(1, metrics=[{"name": "nozzle_temperature_c", "value": 1.0}]))]
    )
    gw2 = gateway(seeded, wire, bd_seq=0)
    gw2.readings("job-4", readings_for(seeded, 1))
    older = seeded.ingestor.ingest(wire.sent[-2:])
    assert later.dead_letters == 1 and older.dead_letters == 2
    assert sum("from the past" in d.reason for d in dead_letters(seeded)) == 3
    assert stored(seeded) == 5


def test_retention_thins_old_raw_data_into_buckets_with_an_audit_row(seeded: App) -> None:
    gw = gateway(seeded, LocalPublisher(seeded.ingestor.submit))
    gw.readings("job-5", readings_for(seeded, 60))  # 10 minutes, one every 10 s
    seeded.ingestor.flush()
    admin = fh.actor(seeded, "admin")
    seeded.clock.advance(timedelta(days=31).total_seconds())  # type: ignore[attr-defined]
    gw.readings("job-5", readings_for(seeded, 6))
    seeded.ingestor.flush()

    with seeded.uow() as uow, pytest.raises(ValidationFailed, match="at least 30 days"):
        seeded.telemetry.apply_retention(uow, admin, older_than=timedelta(days=7), reason="disk")
    with seeded.uow() as uow:
        result = seeded.telemetry.apply_retention(
            uow, admin, older_than=timedelta(days=30), reason="retention policy SOP-12"
        )

    assert result["readings_thinned"] == 60
    assert 10 <= result["buckets_written"] <= 11
    assert stored(seeded) == 6
    with seeded.uow() as uow:
        data = seeded.telemetry.query(uow, metric="nozzle_temperature_c", run="job-5")
        entries = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.entity_type == "telemetry")
        ).all()
    assert data.downsampled
    assert sum(p.n for p in data.points) == 66
    assert len(entries) == 1 and entries[0].reason == "retention policy SOP-12"


def test_simulated_machines_publish_through_the_same_path(seeded: App) -> None:
    batch_id = fh.make_batch(seeded)
    batch = fh.batch(seeded, batch_id)
    with seeded.uow() as uow:
        run = seeded.telemetry.run(uow, batch.job_id)
        series = seeded.telemetry.series(uow, run=batch.job_id)
        machine = uow.session.get(TelemetryMachine, batch.machine_id)
    assert run is not None and run.end_state == "COMPLETE"
    assert run.points == len(batch.telemetry or [])
    assert sorted(s.metric for s in series) == sorted({r[1] for r in batch.telemetry or []})
    assert machine is not None and machine.online and machine.state == "COMPLETE"
    assert dead_letters(seeded) == []
    assert epoch_ms(run.first_at) <= epoch_ms(run.last_at)  # type: ignore[arg-type]
    with seeded.uow() as uow:
        assert uow.session.scalars(select(TelemetryGap)).all() == []
        assert uow.session.get(TelemetryRun, (batch.machine_id, batch.job_id)) is not None
