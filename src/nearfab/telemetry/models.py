"""Telemetry storage.

Readings are stored one row per point in a narrow table (series id, time in epoch microseconds,
value) written with executemany, never as ORM objects: that is what keeps ingest fast. A series is
one metric of one machine during one run (run "" for readings outside a run)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class TelemetryMachine(Base):
    """The platform's view of a machine's telemetry session (its cursor for dedupe and gaps)."""

    __tablename__ = "telemetry_machines"

    machine_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64))
    bd_seq: Mapped[int] = mapped_column(BigInteger)
    high_water: Mapped[int | None] = mapped_column(BigInteger)
    online: Mapped[bool]
    state: Mapped[str | None] = mapped_column(String(16))
    run: Mapped[str | None] = mapped_column(String(64))
    firmware: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]]  # name -> {"unit", "datatype"} from the last birth
    birth_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]


class TelemetrySeries(Base):
    __tablename__ = "telemetry_series"
    __table_args__ = (UniqueConstraint("machine_id", "metric", "run", name="uq_telemetry_series"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    machine_id: Mapped[str] = mapped_column(String(64), index=True)
    metric: Mapped[str] = mapped_column(String(64))
    run: Mapped[str] = mapped_column(String(64), index=True)  # "" outside a run
    unit: Mapped[str] = mapped_column(String(32))


class TelemetryRun(Base):
    """A run as the machine reported it: first and last reading, end state, point count."""

    __tablename__ = "telemetry_runs"

    machine_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64))
    first_at: Mapped[datetime | None]
    last_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    end_state: Mapped[str | None] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(BigInteger, default=0)


class TelemetryGap(Base):
    __tablename__ = "telemetry_gaps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    machine_id: Mapped[str] = mapped_column(String(64), index=True)
    bd_seq: Mapped[int] = mapped_column(BigInteger)
    from_seq: Mapped[int] = mapped_column(BigInteger)
    to_seq: Mapped[int] = mapped_column(BigInteger)
    missing: Mapped[list[Any]]  # seqs still missing (a late message fills its place)
    run: Mapped[str | None] = mapped_column(String(64))
    opened_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]


class DeadLetter(Base):
    __tablename__ = "telemetry_dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(index=True)
    topic: Mapped[str] = mapped_column(String(255))
    machine_id: Mapped[str | None] = mapped_column(String(64), index=True)
    code: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)  # first 4 KiB, for diagnosis


readings = Table(
    "telemetry_readings",
    Base.metadata,
    Column("series_id", Integer, nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("value", Float, nullable=False),
    Index("ix_telemetry_readings_series_ts", "series_id", "ts_us"),
)

# Every accepted or dead-lettered message, by its identity: the duplicate check for QoS 1.
messages = Table(
    "telemetry_messages",
    Base.metadata,
    Column("machine_id", String(64), primary_key=True),
    Column("bd_seq", BigInteger, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("digest", String(32), nullable=False),
)

# Old raw readings after retention: one row per series and time bucket.
rollups = Table(
    "telemetry_rollups",
    Base.metadata,
    Column("series_id", Integer, nullable=False),
    Column("bucket_us", BigInteger, nullable=False),
    Column("width_s", Integer, nullable=False),
    Column("n", Integer, nullable=False),
    Column("mean", Float, nullable=False),
    Column("min", Float, nullable=False),
    Column("max", Float, nullable=False),
    Index("ix_telemetry_rollups_series_bucket", "series_id", "bucket_us"),
)
