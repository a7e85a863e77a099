"""Summaries over replications: mean, standard deviation and Student-t confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Estimate:
    mean: float
    sd: float
    n: int
    half_width: float
    level: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def as_dict(self) -> dict[str, float]:
        return {
            "mean": self.mean,
            "sd": self.sd,
            "n": float(self.n),
            "ci_low": self.low,
            "ci_high": self.high,
            "level": self.level,
        }


def estimate(values: Sequence[float], level: float = 0.95) -> Estimate:
    """Mean and the two-sided Student-t `level` confidence interval of independent
    replications (NaNs ignored)."""
    xs = [float(v) for v in values if not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return Estimate(math.nan, math.nan, 0, math.nan, level)
    mean = sum(xs) / n
    if n == 1:
        return Estimate(mean, 0.0, 1, math.inf, level)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    q = float(stats.t.ppf(0.5 + level / 2.0, n - 1))
    return Estimate(mean, sd, n, q * sd / math.sqrt(n), level)
