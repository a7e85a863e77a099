"""Process capability (Cp, Cpk) and performance (Pp, Ppk) indices with confidence intervals.

References: NIST/SEMATECH e-Handbook §6.1.6 (pmc16); Montgomery ch. 8 (§8.3, eqs. 8.19-8.21);
A. F. Bissell, "How reliable is your capability index?", Appl. Statist. 39 (1990) 331-340.

Cp/Cpk use the within-subgroup (short-term) σ: MR̄/d2 for individual values, the pooled
subgroup standard deviation for subgroups. Pp/Ppk use the overall sample standard deviation.
With one specification limit only, Cp and Pp are undefined (None) and Cpk/Ppk are the one-sided
index that is defined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nearfab.common.errors import ValidationFailed
from nearfab.monitoring.logic.spc import (
    IMR_D2,
    as_series,
    as_subgroups,
    c4,
    require_finite,
    require_positive,
)


@dataclass(frozen=True, slots=True)
class Interval:
    """A two-sided confidence interval."""

    lower: float
    upper: float
    confidence: float


@dataclass(frozen=True, slots=True)
class Indices:
    """Capability indices for one mean and one σ (None where a specification is missing).

    `k` is the off-centre fraction |m - μ| / ((USL - LSL)/2), m the mid-specification, so that
    Cpk = Cp (1 - k) (NIST §6.1.6).
    """

    cp: float | None
    cpu: float | None
    cpl: float | None
    cpk: float
    k: float | None


@dataclass(frozen=True, slots=True)
class CapabilityReport:
    """Capability (within σ) and performance (overall σ) of one data set against its specs."""

    n: int
    mean: float
    sigma_within: float
    sigma_overall: float
    within_method: str
    lsl: float | None
    usl: float | None
    cp: float | None
    cpu: float | None
    cpl: float | None
    cpk: float
    pp: float | None
    ppu: float | None
    ppl: float | None
    ppk: float
    cp_interval: Interval | None
    cpk_interval: Interval
    pp_interval: Interval | None
    ppk_interval: Interval


def _specs(lsl: float | None, usl: float | None) -> tuple[float | None, float | None]:
    low = None if lsl is None else require_finite(lsl, "lsl")
    high = None if usl is None else require_finite(usl, "usl")
    if low is None and high is None:
        raise ValidationFailed("at least one of lsl and usl is needed", field="usl")
    if low is not None and high is not None and low >= high:
        raise ValidationFailed(f"lsl ({low:g}) must be below usl ({high:g})", field="lsl")
    return low, high


def _confidence(value: float) -> float:
    level = float(value)
    if not (math.isfinite(level) and 0 < level < 1):
        raise ValidationFailed(f"confidence must be in (0, 1), got {value!r}", field="confidence")
    return level


def indices(
    mean: float, sigma: float, *, lsl: float | None = None, usl: float | None = None
) -> Indices:
    """Cp = (USL-LSL)/6σ, Cpu = (USL-μ)/3σ, Cpl = (μ-LSL)/3σ, Cpk = min(Cpu, Cpl) (NIST §6.1.6).

    Pass the overall σ to get Pp, Ppu, Ppl, Ppk.
    """
    mu = require_finite(mean, "mean")
    spread = require_positive(sigma, "sigma")
    low, high = _specs(lsl, usl)
    cpu = None if high is None else (high - mu) / (3.0 * spread)
    cpl = None if low is None else (mu - low) / (3.0 * spread)
    if low is not None and high is not None:
        cp: float | None = (high - low) / (6.0 * spread)
        k: float | None = abs((high + low) / 2.0 - mu) / ((high - low) / 2.0)
    else:
        cp = k = None
    cpk = min(v for v in (cpu, cpl) if v is not None)
    return Indices(cp=cp, cpu=cpu, cpl=cpl, cpk=cpk, k=k)


def cp_interval(cp: float, dof: float, confidence: float = 0.95) -> Interval:
    """Cp (or Pp) interval from the chi-square distribution of s² (Montgomery eq. 8.19):

    Ĉp sqrt(χ²_{α/2, ν} / ν) ≤ Cp ≤ Ĉp sqrt(χ²_{1-α/2, ν} / ν), ν the degrees of freedom of σ̂.
    """
    from scipy import stats  # lazy: scipy takes a second to import

    value = require_positive(cp, "cp")
    nu = require_positive(dof, "dof")
    level = _confidence(confidence)
    alpha = 1.0 - level
    low = float(stats.chi2.ppf(alpha / 2.0, nu))
    high = float(stats.chi2.ppf(1.0 - alpha / 2.0, nu))
    return Interval(value * math.sqrt(low / nu), value * math.sqrt(high / nu), level)


def cpk_interval(cpk: float, n: int, confidence: float = 0.95) -> Interval:
    """Cpk (or Ppk, Cpu, Cpl) interval by Bissell's (1990) normal approximation:

    Ĉpk ± z_{1-α/2} sqrt(1/(9n) + Ĉpk² / (2(n-1))),

    equivalently Ĉpk [1 ± z sqrt(1/(9 n Ĉpk²) + 1/(2(n-1)))] (Montgomery eq. 8.21).
    """
    from scipy import stats  # lazy: scipy takes a second to import

    value = require_finite(cpk, "cpk")
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise ValidationFailed(f"n must be an integer of at least 2, got {n!r}", field="n")
    level = _confidence(confidence)
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    half = z * math.sqrt(1.0 / (9.0 * n) + value * value / (2.0 * (n - 1)))
    return Interval(value - half, value + half, level)


def pooled_sigma(subgroups: npt.ArrayLike, *, unbiased: bool = True) -> tuple[float, int]:
    """Pooled within-subgroup σ and its degrees of freedom Σ(nᵢ - 1).

    sp = sqrt(Σ(nᵢ-1)sᵢ² / Σ(nᵢ-1)), divided by c4(Σ(nᵢ-1) + 1) when `unbiased` (as Minitab does).
    """
    data = as_subgroups(subgroups)
    m, n = data.shape
    dof = m * (n - 1)
    pooled = math.sqrt(float(data.var(axis=1, ddof=1).mean()))
    if unbiased:
        pooled /= c4(dof + 1)
    return pooled, dof


def capability(
    data: npt.ArrayLike,
    *,
    lsl: float | None = None,
    usl: float | None = None,
    confidence: float = 0.95,
    unbiased: bool = True,
) -> CapabilityReport:
    """Capability and performance of `data` against the specification limits.

    A 1-D series is individual values (within σ = MR̄/d2, d2 = 1.128); a 2-D array is equal-size
    subgroups, one per row (within σ = pooled subgroup sd, see `pooled_sigma`). Overall σ is the
    sample sd of all values. Intervals: chi-square for Cp/Pp (ν = n - 1 for the moving range,
    which is the usual approximation; Σ(nᵢ - 1) for pooled σ), Bissell for Cpk/Ppk.
    """
    low, high = _specs(lsl, usl)
    level = _confidence(confidence)
    try:
        dimensions = np.ndim(data)
    except ValueError:
        dimensions = 2  # ragged rows: as_subgroups reports the size mismatch
    if dimensions == 2:
        groups = as_subgroups(data, "data")
        values = groups.ravel()
        within, within_dof = pooled_sigma(groups, unbiased=unbiased)
        method = "pooled_sd_unbiased" if unbiased else "pooled_sd"
    else:
        values = as_series(data, "data", min_length=2)
        within = float(np.abs(np.diff(values)).mean()) / IMR_D2
        within_dof = values.size - 1
        method = "moving_range"
    n = int(values.size)
    if n < 2:
        raise ValidationFailed(f"data needs at least 2 values, got {n}", field="data")
    mean = float(values.mean())
    overall = float(values.std(ddof=1))
    if within <= 0 or overall <= 0:
        raise ValidationFailed(
            "the data show no variation, so capability cannot be computed", field="data"
        )
    short = indices(mean, within, lsl=low, usl=high)
    long = indices(mean, overall, lsl=low, usl=high)
    return CapabilityReport(
        n=n,
        mean=mean,
        sigma_within=within,
        sigma_overall=overall,
        within_method=method,
        lsl=low,
        usl=high,
        cp=short.cp,
        cpu=short.cpu,
        cpl=short.cpl,
        cpk=short.cpk,
        pp=long.cp,
        ppu=long.cpu,
        ppl=long.cpl,
        ppk=long.cpk,
        cp_interval=None if short.cp is None else cp_interval(short.cp, within_dof, level),
        cpk_interval=cpk_interval(short.cpk, n, level),
        pp_interval=None if long.cp is None else cp_interval(long.cp, n - 1, level),
        ppk_interval=cpk_interval(long.cpk, n, level),
    )


__all__ = [
    "CapabilityReport",
    "Indices",
    "Interval",
    "capability",
    "cp_interval",
    "cpk_interval",
    "indices",
    "pooled_sigma",
]
