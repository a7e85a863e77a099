"""Telemetry's read views for other domains (docs/architecture.md, "who reads whose tables"):
a finished run summarised, for a site node's outbox (replication/capture.py)."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import Connection, func, select

from nearfab.telemetry.models import TelemetryRun, TelemetrySeries, readings


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def finished_run_summaries(connection: Connection, runs: list[str]) -> dict[str, dict[str, Any]]:
    """Of these runs (a job's id is its run), those whose machine reported their end, each
    summarised in two statements for all: the machine, first, last and end times, end state,
    point count, and per metric its unit, readings, minimum, maximum, mean and sample standard
    deviation (None below two readings). Read from the raw readings, so call it when the run
    ends, before retention rolls them up. A run not ended yet is absent."""
    if not runs:
        return {}
    ended = {
        r.run: r
        for r in connection.execute(
            select(TelemetryRun).where(
                TelemetryRun.run.in_(sorted(set(runs))), TelemetryRun.ended_at.is_not(None)
            )
        )
    }
    if not ended:
        return {}
    stats = connection.execute(
        select(
            TelemetrySeries.run,
            TelemetrySeries.machine_id,
            TelemetrySeries.metric,
            TelemetrySeries.unit,
            func.count(readings.c.value),
            func.min(readings.c.value),
            func.max(readings.c.value),
            func.sum(readings.c.value),
            func.sum(readings.c.value * readings.c.value),
        )
        .join(readings, readings.c.series_id == TelemetrySeries.id)
        .where(TelemetrySeries.run.in_(sorted(ended)))
        .group_by(
            TelemetrySeries.run,
            TelemetrySeries.machine_id,
            TelemetrySeries.metric,
            TelemetrySeries.unit,
        )
        .order_by(TelemetrySeries.metric)
    ).all()
    metrics: dict[str, dict[str, Any]] = {run: {} for run in ended}
    for run, machine_id, metric, unit, n, low, high, total, squares in stats:
        if machine_id != ended[run].machine_id:
            continue
        n = int(n)
        mean = float(total) / n
        # sample variance from the sums; clamped at 0 against rounding on a flat series
        var = max(0.0, (float(squares) - n * mean * mean) / (n - 1)) if n > 1 else None
        metrics[run][metric] = {
            "unit": unit,
            "n": n,
            "min": float(low),
            "max": float(high),
            "mean": mean,
            "sd": math.sqrt(var) if var is not None else None,
        }
    return {
        run: {
            "run": run,
            "machine_id": r.machine_id,
            "first_at": _iso(r.first_at),
            "last_at": _iso(r.last_at),
            "ended_at": _iso(r.ended_at),
            "end_state": r.end_state,
            "points": int(r.points),
            "metrics": metrics[run],
        }
        for run, r in ended.items()
    }
