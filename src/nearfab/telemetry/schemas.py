"""Response schemas of telemetry: machine sessions, series, readings, gaps, dead letters."""

from __future__ import annotations

from typing import Any

from nearfab.common.schemas import Out, Timestamp


class TelemetryMachineOut(Out):
    """A machine's telemetry session: online, PackML state, current run, last message."""

    machine_id: str
    site_id: str
    online: bool
    state: str | None
    run: str | None
    session: int
    last_seq: int | None
    firmware: str | None
    metrics: dict[str, Any]
    birth_at: Timestamp | None
    last_seen_at: Timestamp | None


class SeriesOut(Out):
    machine_id: str
    run: str
    metric: str
    unit: str


class ReadingPointOut(Out):
    """A raw reading (n = 1) or a bucket's mean with its min and max."""

    at: Timestamp
    value: float
    min: float
    max: float
    n: int


class ReadingsOut(Out):
    """One metric over time."""

    machine_id: str | None
    run: str | None
    metric: str
    unit: str
    downsampled: bool
    points: list[ReadingPointOut]


class DeadLetterOut(Out):
    """A message that could not be stored, with the reason."""

    id: int
    received_at: Timestamp
    topic: str
    machine_id: str | None
    code: str
    reason: str
    payload: str


class GapOut(Out):
    """Sequence numbers missing from a machine's session."""

    machine_id: str
    session: int
    from_seq: int
    to_seq: int
    missing: list[int]
    run: str | None
    opened_at: Timestamp
    closed_at: Timestamp | None


class RetentionOut(Out):
    """What thinning old raw readings did (audited)."""

    readings_thinned: int
    buckets_written: int
