"""Pure rules of production: telemetry summaries against the critical process parameters."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def summarise_telemetry(
    readings: Iterable[tuple[str, float]], limits: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, dict[str, float | int]], list[str]]:
    """Per-metric n, mean, sd, min, max and the count outside the CPP limits, with excursions."""
    values: dict[str, list[float]] = {}
    for metric, value in readings:
        values.setdefault(metric, []).append(value)
    summary: dict[str, dict[str, float | int]] = {}
    excursions: list[str] = []
    for metric, vals in sorted(values.items()):
        n = len(vals)
        mean = sum(vals) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
        entry: dict[str, float | int] = {
            "n": n,
            "mean": round(mean, 4),
            "sd": round(sd, 4),
            "min": round(min(vals), 4),
            "max": round(max(vals), 4),
        }
        limit = limits.get(metric)
        if limit is not None:
            low, high = float(limit["low"]), float(limit["high"])
            outside = sum(1 for v in vals if v < low or v > high)
            entry.update({"low": low, "high": high, "outside": outside})
            if outside:
                excursions.append(
                    f"{metric}: {outside} of {n} readings outside {low:g}–{high:g} "
                    f"(min {min(vals):.1f}, max {max(vals):.1f})"
                )
        summary[metric] = entry
    return summary, excursions


def batch_number(product_code: str, date_part: str, random_part: str) -> str:
    """A GS1-safe batch number (AI 10: at most 20 characters)."""
    prefix = "".join(ch for ch in product_code.upper() if ch.isalnum())[:4]
    return f"{prefix}{date_part}{random_part}"[:20]
