"""Comparability statistics: pure functions, no database.

- `tost`: two one-sided tests (Schuirmann 1987) of a group against the rest, pooled-variance t
  (statsmodels `ttost_ind`), with the (1 - 2α) confidence interval of the difference.
- `site_capability`: Cpk with Bissell's (1990) interval (monitoring's capability indices).
- `algorithm_a`: ISO 13528:2015 Annex C.3 (ISO 5725-5 §6.2) robust mean and sd, and `z_scores`.
- `means_chart`: a Shewhart chart of group means against the network's centre line, limits
  centre ± 3 s_pooled / √nᵢ for a group of nᵢ values (Montgomery §6.4, unequal sample sizes).
- `run_rule`: Western Electric rule 4 (8 successive points on one side of the centre line).
- `hotelling_two_sample`: the two-sample Hotelling T² of a group's summary vectors against the
  rest's (Montgomery §11.3; Johnson & Wichern §6.3), with its F p-value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nearfab.common.errors import ValidationFailed
from nearfab.monitoring.logic.capability import Interval, cpk_interval, indices

MIN_VALUES = 2
RUN_LENGTH = 8  # Western Electric rule 4


def _values(values: Sequence[float], field: str, minimum: int = MIN_VALUES) -> np.ndarray:
    data = np.asarray(list(values), dtype=np.float64)
    if data.ndim != 1 or data.size < minimum:
        raise ValidationFailed(f"{field} needs at least {minimum} values", field=field)
    if not np.all(np.isfinite(data)):
        raise ValidationFailed(f"{field} has a value that is not a finite number", field=field)
    return data


@dataclass(frozen=True, slots=True)
class TostResult:
    """TOST of mean(x1) - mean(x2) within (-margin, +margin)."""

    n1: int
    n2: int
    difference: float
    margin: float
    alpha: float
    df: float
    t_lower: float
    p_lower: float
    t_upper: float
    p_upper: float
    p_value: float
    ci_low: float  # the (1 - 2α) confidence interval of the difference
    ci_high: float
    equivalent: bool


def tost(
    x1: Sequence[float], x2: Sequence[float], margin: float, alpha: float = 0.05
) -> TostResult:
    """Equivalence of two independent samples' means within ±margin (pooled variance).

    H0: |μ1 - μ2| ≥ margin is rejected (equivalent) when both one-sided p-values are below α,
    i.e. when the (1 - 2α) interval of the difference lies inside (-margin, margin)."""
    from scipy import stats
    from statsmodels.stats.weightstats import ttost_ind

    a, b = _values(x1, "x1"), _values(x2, "x2")
    if not (math.isfinite(margin) and margin > 0):
        raise ValidationFailed(f"margin must be above 0, got {margin!r}", field="margin")
    if not 0 < alpha < 0.5:
        raise ValidationFailed(f"alpha must be in (0, 0.5), got {alpha!r}", field="alpha")
    p, (t1, p1, df), (t2, p2, _df2) = ttost_ind(a, b, -margin, margin, usevar="pooled")
    diff = float(a.mean() - b.mean())
    n1, n2 = a.size, b.size
    pooled = ((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2)
    se = math.sqrt(pooled * (1 / n1 + 1 / n2))
    half = float(stats.t.ppf(1 - alpha, n1 + n2 - 2)) * se
    return TostResult(
        n1=int(n1),
        n2=int(n2),
        difference=diff,
        margin=float(margin),
        alpha=float(alpha),
        df=float(df),
        t_lower=float(t1),
        p_lower=float(p1),
        t_upper=float(t2),
        p_upper=float(p2),
        p_value=float(p),
        ci_low=diff - half,
        ci_high=diff + half,
        equivalent=bool(float(p) < alpha),
    )


@dataclass(frozen=True, slots=True)
class Capability:
    n: int
    mean: float
    sd: float
    cpk: float
    interval: Interval


def site_capability(
    values: Sequence[float],
    *,
    lsl: float | None,
    usl: float | None,
    confidence: float = 0.95,
) -> Capability:
    """Cpk = min(USL - x̄, x̄ - LSL) / 3s of the values (s their sample sd), with Bissell's
    interval Ĉpk ± z sqrt(1/(9n) + Ĉpk²/(2(n-1)))."""
    data = _values(values, "values", 3)
    mean, sd = float(data.mean()), float(data.std(ddof=1))
    if sd <= 0:
        raise ValidationFailed("the values show no variation: no Cpk", field="values")
    found = indices(mean, sd, lsl=lsl, usl=usl)
    return Capability(
        int(data.size), mean, sd, found.cpk, cpk_interval(found.cpk, int(data.size), confidence)
    )


@dataclass(frozen=True, slots=True)
class RobustEstimate:
    """Algorithm A's robust mean x* and sd s*; `trace` holds (x*, s*) from the start values
    (median, 1.483 MAD) through each iteration."""

    mean: float
    sd: float
    iterations: int
    trace: tuple[tuple[float, float], ...]


def algorithm_a(
    values: Sequence[float], *, tol: float = 1e-6, max_iter: int = 100
) -> RobustEstimate:
    """ISO 13528:2015 Annex C.3: x* = median, s* = 1.483 median|xᵢ - x*|; then repeatedly
    δ = 1.5 s*, xᵢ winsorised to [x* - δ, x* + δ], x* = mean, s* = 1.134 sd of the winsorised
    values; until neither changes by more than `tol` relative (the standard asks at least the
    third significant figure)."""
    data = _values(values, "results", 3)
    mean = float(np.median(data))
    sd = 1.483 * float(np.median(np.abs(data - mean)))
    if sd <= 0:
        raise ValidationFailed(
            "more than half the results are equal: Algorithm A has no starting spread",
            field="results",
        )
    trace = [(mean, sd)]
    for iteration in range(1, max_iter + 1):
        delta = 1.5 * sd
        clipped = np.clip(data, mean - delta, mean + delta)
        new_mean = float(clipped.mean())
        new_sd = 1.134 * float(clipped.std(ddof=1))
        trace.append((new_mean, new_sd))
        done = abs(new_sd - sd) <= tol * sd and abs(new_mean - mean) <= tol * max(sd, 1e-300)
        mean, sd = new_mean, new_sd
        if done:
            return RobustEstimate(mean, sd, iteration, tuple(trace))
    return RobustEstimate(mean, sd, max_iter, tuple(trace))


def z_scores(results: Sequence[float], assigned: float, sd_pt: float) -> list[float]:
    """ISO 13528 §9.4: z = (x - x_pt) / σ_pt."""
    if not (math.isfinite(sd_pt) and sd_pt > 0):
        raise ValidationFailed(f"σ_pt must be above 0, got {sd_pt!r}", field="sd_pt")
    return [(float(x) - assigned) / sd_pt for x in results]


def z_verdict(z: float) -> str:
    """ISO 13528 §9.4.1: |z| ≤ 2 satisfactory, 2 < |z| < 3 questionable, |z| ≥ 3 action
    (nearfab suspends on |z| > 3; exactly 3 is an action signal reported, not a suspension)."""
    size = abs(z)
    if size <= 2.0:
        return "satisfactory"
    if size < 3.0:
        return "questionable"
    return "unsatisfactory"


@dataclass(frozen=True, slots=True)
class MeanPoint:
    group: str
    n: int
    mean: float
    lcl: float
    ucl: float
    outside: bool


@dataclass(frozen=True, slots=True)
class MeansChart:
    centre: float
    sigma: float  # pooled within-group sd
    points: tuple[MeanPoint, ...]


def means_chart(groups: Mapping[str, Sequence[float]]) -> MeansChart:
    """The chart of group means: centre = grand mean of every value, σ = pooled within-group sd
    sqrt(Σ(nᵢ-1)sᵢ² / Σ(nᵢ-1)), limits centre ± 3σ/√nᵢ."""
    data = {g: _values(v, f"groups.{g}", 1) for g, v in groups.items()}
    if len(data) < 2:
        raise ValidationFailed("a chart of group means needs at least 2 groups", field="groups")
    every = np.concatenate(list(data.values()))
    dof = sum(v.size - 1 for v in data.values())
    if dof < 1:
        raise ValidationFailed("the groups have no within-group spread", field="groups")
    pooled = math.sqrt(sum(float(((v - v.mean()) ** 2).sum()) for v in data.values()) / dof)
    centre = float(every.mean())
    points = []
    for name, v in data.items():
        half = 3.0 * pooled / math.sqrt(v.size)
        mean = float(v.mean())
        points.append(
            MeanPoint(
                name,
                int(v.size),
                mean,
                centre - half,
                centre + half,
                not (centre - half <= mean <= centre + half),
            )
        )
    return MeansChart(centre, pooled, tuple(points))


def run_rule(values: Sequence[float], centre: float, length: int = RUN_LENGTH) -> int | None:
    """The index at which `length` successive values first lie on one side of `centre`
    (Western Electric rule 4), or None."""
    run, side = 0, 0
    for i, value in enumerate(values):
        now = (value > centre) - (value < centre)
        run = run + 1 if now != 0 and now == side else (1 if now != 0 else 0)
        side = now
        if run >= length:
            return i
    return None


@dataclass(frozen=True, slots=True)
class Hotelling:
    t2: float
    f: float
    df1: int
    df2: int
    p_value: float


def hotelling_two_sample(
    group: Sequence[Sequence[float]], rest: Sequence[Sequence[float]]
) -> Hotelling | None:
    """T² = n₁n₂/(n₁+n₂) d' S_p⁻¹ d of two sets of p-variate vectors, S_p the pooled covariance;
    F = (n₁+n₂-p-1) / (p(n₁+n₂-2)) T² on (p, n₁+n₂-p-1) degrees of freedom. None when there
    are too few vectors or S_p is singular."""
    from scipy import stats

    a, b = np.asarray(group, dtype=np.float64), np.asarray(rest, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValidationFailed("both sets need vectors of the same length", field="vectors")
    n1, n2, p = a.shape[0], b.shape[0], a.shape[1]
    if n1 < 2 or n2 < 2 or n1 + n2 - p - 1 < 1:
        return None
    pooled = ((n1 - 1) * np.cov(a, rowvar=False) + (n2 - 1) * np.cov(b, rowvar=False)) / (
        n1 + n2 - 2
    )
    pooled = np.atleast_2d(pooled)
    if np.linalg.matrix_rank(pooled) < p:
        return None
    d = a.mean(axis=0) - b.mean(axis=0)
    t2 = float(n1 * n2 / (n1 + n2) * d @ np.linalg.solve(pooled, d))
    df2 = n1 + n2 - p - 1
    f = df2 / (p * (n1 + n2 - 2)) * t2
    return Hotelling(t2, f, p, df2, float(stats.f.sf(f, p, df2)))


__all__ = [
    "Capability",
    "Hotelling",
    "MeanPoint",
    "MeansChart",
    "RobustEstimate",
    "TostResult",
    "algorithm_a",
    "hotelling_two_sample",
    "means_chart",
    "run_rule",
    "site_capability",
    "tost",
    "z_scores",
    "z_verdict",
]
