"""Telemetry queries, CSV export and retention (the ingest path is in `ingest.py`)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

from sqlalchemy import ColumnElement, and_, delete, func, insert, select

from nearfab.common.errors import NotFound, ValidationFailed, require_reason
from nearfab.identity import Actor, AuditAction, Permission, audit, authorize_network
from nearfab.telemetry.models import (
    DeadLetter,
    TelemetryGap,
    TelemetryMachine,
    TelemetryRun,
    TelemetrySeries,
    readings,
    rollups,
)
from nearfab.uow import UnitOfWork

MIN_RETENTION = timedelta(days=30)  # raw data younger than this is never thinned


def to_us(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValidationFailed("times must carry a timezone", field="time")
    return round(at.timestamp() * 1_000_000)


def from_us(ts_us: int) -> datetime:
    return datetime.fromtimestamp(ts_us / 1_000_000, UTC)


@dataclass(frozen=True)
class SeriesPoint:
    """One point of a query answer: raw (n = 1) or a bucket's mean with its min and max."""

    at: datetime
    value: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class SeriesData:
    machine_id: str
    run: str
    metric: str
    unit: str
    downsampled: bool
    points: list[SeriesPoint]


class TelemetryService:
    """Read what machines reported: by machine, run, metric and time, raw or downsampled."""

    def series(
        self, uow: UnitOfWork, *, machine_id: str | None = None, run: str | None = None
    ) -> list[TelemetrySeries]:
        stmt = select(TelemetrySeries).order_by(TelemetrySeries.metric, TelemetrySeries.id)
        if machine_id is not None:
            stmt = stmt.where(TelemetrySeries.machine_id == machine_id)
        if run is not None:
            stmt = stmt.where(TelemetrySeries.run == run)
        return list(uow.session.scalars(stmt))

    def _series_ids(
        self, uow: UnitOfWork, machine_id: str | None, run: str | None, metric: str
    ) -> list[TelemetrySeries]:
        if machine_id is None and run is None:
            raise ValidationFailed("give a machine, a run or both", field="machine_id")
        found = [s for s in self.series(uow, machine_id=machine_id, run=run) if s.metric == metric]
        if not found:
            where = ", ".join(
                f"{k} {v!r}" for k, v in (("machine", machine_id), ("run", run)) if v is not None
            )
            raise NotFound(f"no telemetry for metric {metric!r} ({where})", field="metric")
        return found

    def query(
        self,
        uow: UnitOfWork,
        *,
        metric: str,
        machine_id: str | None = None,
        run: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        max_points: int | None = None,
    ) -> SeriesData:
        """Readings of one metric, oldest first. With `max_points`, a longer answer is cut into
        time buckets (mean, min, max per bucket) so a chart gets its shape, not every point;
        readings already thinned by retention come back as their stored buckets."""
        if max_points is not None and max_points < 2:
            raise ValidationFailed("max_points must be at least 2", field="max_points")
        if start is not None and end is not None and end < start:
            raise ValidationFailed("end is before start", field="end")
        series = self._series_ids(uow, machine_id, run, metric)
        ids = [s.id for s in series]
        lo = to_us(start) if start else None
        hi = to_us(end) if end else None
        cond: list[ColumnElement[bool]] = [readings.c.series_id.in_(ids)]
        if lo is not None:
            cond.append(readings.c.ts_us >= lo)
        if hi is not None:
            cond.append(readings.c.ts_us <= hi)
        where = and_(*cond)
        session = uow.session
        count, first, last = session.execute(
            select(func.count(), func.min(readings.c.ts_us), func.max(readings.c.ts_us)).where(
                where
            )
        ).one()
        points: list[SeriesPoint] = []
        downsampled = False
        if count and max_points is not None and count > max_points:
            downsampled = True
            width = max(1, -(-(last - first + 1) // max_points))
            bucket = (readings.c.ts_us - first) // width  # floor division on every backend
            rows = session.execute(
                select(
                    func.min(readings.c.ts_us),
                    func.avg(readings.c.value),
                    func.min(readings.c.value),
                    func.max(readings.c.value),
                    func.count(),
                )
                .where(where)
                .group_by(bucket)
                .order_by(func.min(readings.c.ts_us))
            )
            points = [
                SeriesPoint(from_us(ts), float(avg), float(lo_), float(hi_), int(n))
                for ts, avg, lo_, hi_, n in rows
            ]
        elif count:
            rows = session.execute(
                select(readings.c.ts_us, readings.c.value).where(where).order_by(readings.c.ts_us)
            )
            points = [SeriesPoint(from_us(ts), v, v, v, 1) for ts, v in rows]
        points = self._rolled_up(uow, ids, lo, hi) + points
        head = series[0]
        return SeriesData(
            machine_id=head.machine_id if machine_id is None else machine_id,
            run=head.run if run is None else run,
            metric=metric,
            unit=head.unit,
            downsampled=downsampled or any(p.n > 1 for p in points),
            points=points,
        )

    @staticmethod
    def _rolled_up(
        uow: UnitOfWork, ids: list[int], lo: int | None, hi: int | None
    ) -> list[SeriesPoint]:
        stmt = (
            select(rollups.c.bucket_us, rollups.c.mean, rollups.c.min, rollups.c.max, rollups.c.n)
            .where(rollups.c.series_id.in_(ids))
            .order_by(rollups.c.bucket_us)
        )
        if lo is not None:
            stmt = stmt.where(rollups.c.bucket_us >= lo)
        if hi is not None:
            stmt = stmt.where(rollups.c.bucket_us <= hi)
        rows = uow.session.execute(stmt).all()
        return [SeriesPoint(from_us(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    def export_csv(
        self,
        uow: UnitOfWork,
        out: TextIO,
        *,
        machine_id: str | None = None,
        run: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> int:
        """Raw readings as CSV (time UTC ISO 8601, machine, run, metric, value, unit); returns
        the number of rows written. Streams, so a long history does not sit in memory."""
        if machine_id is None and run is None:
            raise ValidationFailed("give a machine, a run or both", field="machine_id")
        series = {s.id: s for s in self.series(uow, machine_id=machine_id, run=run)}
        writer = csv.writer(out)
        writer.writerow(["time_utc", "machine_id", "run", "metric", "value", "unit"])
        if not series:
            return 0
        cond: list[ColumnElement[bool]] = [readings.c.series_id.in_(list(series))]
        if start is not None:
            cond.append(readings.c.ts_us >= to_us(start))
        if end is not None:
            cond.append(readings.c.ts_us <= to_us(end))
        stmt = (
            select(readings.c.series_id, readings.c.ts_us, readings.c.value)
            .where(and_(*cond))
            .order_by(readings.c.ts_us, readings.c.series_id)
            .execution_options(yield_per=5000)
        )
        n = 0
        for series_id, ts, value in uow.session.execute(stmt):
            s = series[series_id]
            writer.writerow([from_us(ts).isoformat(), s.machine_id, s.run, s.metric, value, s.unit])
            n += 1
        return n

    def apply_retention(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        older_than: timedelta,
        bucket_s: int = 60,
        reason: str,
    ) -> dict[str, int]:
        """Replace raw readings older than `older_than` by per-minute (or `bucket_s`) mean, min
        and max, in one audited transaction. Raw data younger than 30 days is never thinned."""
        authorize_network(actor, Permission.TELEMETRY_RETENTION)  # every site's raw data
        require_reason(reason, "thinning raw telemetry")
        if older_than < MIN_RETENTION:
            raise ValidationFailed(
                f"raw telemetry is kept at least {MIN_RETENTION.days} days", field="older_than"
            )
        if bucket_s < 1:
            raise ValidationFailed("bucket_s must be at least 1 second", field="bucket_s")
        cutoff = to_us(uow.clock.now() - older_than)
        width = bucket_s * 1_000_000
        old = readings.c.ts_us < cutoff
        bucket = (readings.c.ts_us // width) * width
        thinned = uow.session.execute(select(func.count()).where(old)).scalar_one()
        summary = (
            select(
                readings.c.series_id,
                bucket.label("bucket_us"),
                func.count().label("n"),
                func.avg(readings.c.value).label("mean"),
                func.min(readings.c.value).label("min"),
                func.max(readings.c.value).label("max"),
            )
            .where(old)
            .group_by(readings.c.series_id, bucket)
        )
        buckets = [
            {
                "series_id": sid,
                "bucket_us": int(b),
                "width_s": bucket_s,
                "n": int(n),
                "mean": float(m),
                "min": float(lo),
                "max": float(hi),
            }
            for sid, b, n, m, lo, hi in uow.session.execute(summary)
        ]
        if buckets:
            uow.session.execute(insert(rollups), buckets)
        uow.session.execute(delete(readings).where(old))
        result = {"readings_thinned": int(thinned), "buckets_written": len(buckets)}
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            "telemetry",
            "retention",
            new={"before": from_us(cutoff).isoformat(), "bucket_s": bucket_s, **result},
            reason=reason,
        )
        uow.commit()
        return result

    # --- health of the path --------------------------------------------------------------------

    def machines(self, uow: UnitOfWork) -> list[TelemetryMachine]:
        return list(
            uow.session.scalars(select(TelemetryMachine).order_by(TelemetryMachine.site_id))
        )

    def runs(self, uow: UnitOfWork, *, machine_id: str | None = None) -> list[TelemetryRun]:
        stmt = select(TelemetryRun).order_by(TelemetryRun.first_at.desc())
        if machine_id is not None:
            stmt = stmt.where(TelemetryRun.machine_id == machine_id)
        return list(uow.session.scalars(stmt))

    def run(self, uow: UnitOfWork, run: str) -> TelemetryRun | None:
        return uow.session.scalar(select(TelemetryRun).where(TelemetryRun.run == run))

    def gaps(
        self, uow: UnitOfWork, *, machine_id: str | None = None, run: str | None = None
    ) -> list[TelemetryGap]:
        stmt = select(TelemetryGap).order_by(TelemetryGap.id)
        if machine_id is not None:
            stmt = stmt.where(TelemetryGap.machine_id == machine_id)
        if run is not None:
            stmt = stmt.where(TelemetryGap.run == run)
        return list(uow.session.scalars(stmt))

    def dead_letters(self, uow: UnitOfWork, *, limit: int = 100) -> list[DeadLetter]:
        return list(
            uow.session.scalars(select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit))
        )

    def iter_points(
        self, uow: UnitOfWork, run: str, metrics: list[str]
    ) -> Iterator[tuple[str, int, float]]:
        """(metric, ts_us, value) of a run, in time order (model training reads these)."""
        series = {s.id: s.metric for s in self.series(uow, run=run) if s.metric in metrics}
        if not series:
            return
        stmt = (
            select(readings.c.series_id, readings.c.ts_us, readings.c.value)
            .where(readings.c.series_id.in_(list(series)))
            .order_by(readings.c.ts_us, readings.c.series_id)
        )
        for sid, ts, value in uow.session.execute(stmt):
            yield series[sid], ts, value

    def run_points(
        self, uow: UnitOfWork, run: str, metrics: list[str]
    ) -> dict[str, list[tuple[int, float]]]:
        """(ts_us, value) of each metric of a run, in time order, read in one query."""
        out: dict[str, list[tuple[int, float]]] = {m: [] for m in metrics}
        for metric, ts, value in self.iter_points(uow, run, metrics):
            out[metric].append((ts, value))
        return out


def complete_samples(
    points: dict[str, list[tuple[int, float]]], metrics: list[str]
) -> list[tuple[int, list[float]]]:
    """The times at which every metric has a reading, with the values in `metrics` order:
    the samples a multivariate model scores."""
    by_time: dict[int, dict[str, float]] = {}
    for metric in metrics:
        for ts, value in points.get(metric, []):
            by_time.setdefault(ts, {})[metric] = value
    return [
        (ts, [sample[m] for m in metrics])
        for ts, sample in sorted(by_time.items())
        if len(sample) == len(metrics)
    ]
