"""Univariate control charts: I-MR, X̄-R, X̄-S, EWMA and tabular CUSUM.

References: NIST/SEMATECH e-Handbook of Statistical Methods §6.3.2 (Shewhart charts, pmc321/322),
§6.3.2.3 (CUSUM, pmc323), §6.3.2.4 (EWMA, pmc324); D. C. Montgomery, *Introduction to
Statistical Quality Control*, ch. 6 (Shewhart charts for variables) and ch. 9 (CUSUM, EWMA).

Every chart is a pure function of its data and returns a frozen dataclass holding the plotted
statistic, the centre line, the control limits and the indexes (0-based) of the points beyond
them. Arrays in results are read-only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from nearfab.common.errors import ValidationFailed

FloatArray = npt.NDArray[np.float64]

# The printed d2(2) and D4(2) that the NIST handbook (§6.3.2.2) and Montgomery use for the
# individuals chart; most software (and every published worked example) uses these rounded
# values, so the I-MR chart does too. Subgroup charts use constants computed to full precision.
IMR_D2: Final = 1.128
IMR_D4: Final = 3.267

# d2/d3 come from numerical integration, checked against printed tables up to n = 25 and
# against simulation; above this size a range chart is a poor estimator anyway (use X̄-S).
MAX_SUBGROUP_SIZE: Final = 100

_SQRT2: Final = math.sqrt(2.0)
_INV_SQRT_2PI: Final = 1.0 / math.sqrt(2.0 * math.pi)


# --- input checks -----------------------------------------------------------------------------


def as_series(values: npt.ArrayLike, field: str, *, min_length: int = 1) -> FloatArray:
    """`values` as a 1-D float array, or ValidationFailed naming `field` (empty, NaN, 2-D...)."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(
            f"{field} must be a sequence of numbers ({exc})", field=field
        ) from exc
    if array.ndim != 1:
        raise ValidationFailed(
            f"{field} must be a one-dimensional series, got shape {array.shape}", field=field
        )
    if array.size < min_length:
        raise ValidationFailed(
            f"{field} needs at least {min_length} value(s), got {array.size}", field=field
        )
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValidationFailed(
            f"{field}[{int(bad[0])}] is {array[bad[0]]}; a finite number is needed", field=field
        )
    return array


def as_subgroups(subgroups: npt.ArrayLike, field: str = "subgroups") -> FloatArray:
    """Rational subgroups as an m x n float array (m ≥ 1 subgroups of equal size n ≥ 2)."""
    try:
        array = np.asarray(subgroups, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        # numpy refuses ragged input; say so in the words of the domain.
        raise ValidationFailed(
            f"{field} must all have the same size (subgroup size mismatch)", field=field
        ) from exc
    if array.ndim != 2:
        raise ValidationFailed(
            f"{field} must be a list of equal-size subgroups, got shape {array.shape}", field=field
        )
    m, n = array.shape
    if m < 1:
        raise ValidationFailed(f"{field} is empty", field=field)
    if n < 2:
        raise ValidationFailed(f"{field} need at least 2 values each, got n = {n}", field=field)
    if n > MAX_SUBGROUP_SIZE:
        raise ValidationFailed(
            f"subgroup size {n} is above {MAX_SUBGROUP_SIZE}; split the subgroups", field=field
        )
    bad = np.argwhere(~np.isfinite(array))
    if bad.size:
        i, j = (int(v) for v in bad[0])
        raise ValidationFailed(
            f"{field}[{i}][{j}] is {array[i, j]}; a finite number is needed", field=field
        )
    return array


def require_positive(value: float, field: str) -> float:
    """`value` as a float if finite and > 0, else ValidationFailed naming `field`."""
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValidationFailed(f"{field} must be a positive number, got {value!r}", field=field)
    return number


def require_finite(value: float, field: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValidationFailed(f"{field} must be a finite number, got {value!r}", field=field)
    return number


def _frozen(array: FloatArray) -> FloatArray:
    array.setflags(write=False)
    return array


def _indexes(mask: npt.NDArray[np.bool_], offset: int = 0) -> tuple[int, ...]:
    return tuple(int(i) + offset for i in np.flatnonzero(mask))


# --- control chart constants ------------------------------------------------------------------


def _check_size(n: int, *, bounded: bool = True) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise ValidationFailed(f"subgroup size must be an integer, got {n!r}", field="n")
    size = int(n)
    if size < 2:
        raise ValidationFailed(f"subgroup size must be at least 2, got {size}", field="n")
    if bounded and size > MAX_SUBGROUP_SIZE:
        raise ValidationFailed(
            f"subgroup size {size} is above the supported maximum {MAX_SUBGROUP_SIZE}", field="n"
        )
    return size


def _phi_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / _SQRT2)


@cache
def _d2(n: int) -> float:
    from scipy import integrate  # lazy: scipy takes a second to import

    # E[range] = ∫ 1 - Φ(x)^n - (1 - Φ(x))^n dx (Tippett 1925).
    def integrand(x: float) -> float:
        return 1.0 - _phi_cdf(x) ** n - _phi_cdf(-x) ** n

    value, _ = integrate.quad(integrand, -math.inf, math.inf, epsabs=1e-12, epsrel=1e-12)
    return float(value)


@cache
def _d3(n: int) -> float:
    from scipy import integrate  # lazy: scipy takes a second to import

    # E[W²] = 2 ∫₀^∞ w P(W > w) dw with P(W ≤ w) = n ∫ φ(x) [Φ(x+w) - Φ(x)]^(n-1) dx.
    def range_tail(w: float) -> float:
        def density(x: float) -> float:
            return (
                _INV_SQRT_2PI * math.exp(-0.5 * x * x) * (_phi_cdf(x + w) - _phi_cdf(x)) ** (n - 1)
            )

        cdf, _ = integrate.quad(density, -math.inf, math.inf, epsabs=1e-13, epsrel=1e-12)
        return 1.0 - n * float(cdf)

    second_moment, _ = integrate.quad(
        lambda w: w * range_tail(w), 0.0, math.inf, epsabs=1e-12, epsrel=1e-11, limit=200
    )
    return math.sqrt(2.0 * float(second_moment) - _d2(n) ** 2)


def d2(n: int) -> float:
    """Mean of the range of n standard normal values (relative range), by numerical integration."""
    return _d2(_check_size(n))


def d3(n: int) -> float:
    """Standard deviation of the range of n standard normal values, by numerical integration."""
    return _d3(_check_size(n))


def c4(n: int) -> float:
    """E[s]/σ for samples of n ≥ 2 normal values: sqrt(2/(n-1)) Γ(n/2) / Γ((n-1)/2)."""
    from scipy.special import gammaln  # lazy: scipy takes a second to import

    size = _check_size(n, bounded=False)
    return math.sqrt(2.0 / (size - 1)) * math.exp(gammaln(size / 2) - gammaln((size - 1) / 2))


@dataclass(frozen=True, slots=True)
class ControlConstants:
    """Shewhart 3-sigma constants for subgroups of size n (Montgomery Appendix VI).

    Phase I (limits from the data): A2, D3, D4 (X̄-R) and A3, B3, B4 (X̄-S).
    Phase II (σ given): A, D1, D2 (R chart) and B5, B6 (S chart).
    """

    n: int
    d2: float
    d3: float
    c4: float
    A: float
    A2: float
    A3: float
    D1: float
    D2: float
    D3: float
    D4: float
    B3: float
    B4: float
    B5: float
    B6: float


@cache
def _constants(n: int) -> ControlConstants:
    rd2, rd3, rc4 = _d2(n), _d3(n), c4(n)
    root = math.sqrt(n)
    spread_c4 = 3.0 * math.sqrt(1.0 - rc4 * rc4)
    return ControlConstants(
        n=n,
        d2=rd2,
        d3=rd3,
        c4=rc4,
        A=3.0 / root,
        A2=3.0 / (rd2 * root),
        A3=3.0 / (rc4 * root),
        D1=max(0.0, rd2 - 3.0 * rd3),
        D2=rd2 + 3.0 * rd3,
        D3=max(0.0, 1.0 - 3.0 * rd3 / rd2),
        D4=1.0 + 3.0 * rd3 / rd2,
        B3=max(0.0, 1.0 - spread_c4 / rc4),
        B4=1.0 + spread_c4 / rc4,
        B5=max(0.0, rc4 - spread_c4),
        B6=rc4 + spread_c4,
    )


def control_constants(n: int) -> ControlConstants:
    """All control chart constants for subgroup size 2 ≤ n ≤ MAX_SUBGROUP_SIZE (cached)."""
    return _constants(_check_size(n))


# --- Shewhart charts --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShewhartChart:
    """One Shewhart chart with constant limits.

    `statistic[j]` belongs to observation `j + first_index` (the moving range chart starts at
    the second observation); `out_of_control` holds observation indexes strictly beyond a limit.
    """

    statistic: FloatArray
    center: float
    lcl: float
    ucl: float
    out_of_control: tuple[int, ...]
    first_index: int = 0


def _shewhart(
    statistic: FloatArray, center: float, lcl: float, ucl: float, first: int = 0
) -> ShewhartChart:
    beyond = (statistic > ucl) | (statistic < lcl)
    return ShewhartChart(
        statistic=_frozen(statistic),
        center=center,
        lcl=lcl,
        ucl=ucl,
        out_of_control=_indexes(beyond, first),
        first_index=first,
    )


@dataclass(frozen=True, slots=True)
class IMRChart:
    """Individuals and moving-range charts (NIST §6.3.2.2, Montgomery §6.4).

    `sigma` is the σ the limits use: MR̄/d2 in phase I, the given σ in phase II.
    """

    individuals: ShewhartChart
    moving_range: ShewhartChart
    mean: float
    sigma: float

    @property
    def out_of_control(self) -> tuple[int, ...]:
        """Observations flagged on either chart."""
        both = set(self.individuals.out_of_control) | set(self.moving_range.out_of_control)
        return tuple(sorted(both))


def moving_ranges(x: npt.ArrayLike) -> FloatArray:
    """|x[i] - x[i-1]| for i = 1..n-1 (span-2 moving ranges)."""
    series = as_series(x, "x", min_length=2)
    return np.abs(np.diff(series))


def sigma_from_moving_range(x: npt.ArrayLike) -> float:
    """Short-term σ estimate MR̄/d2 with d2 = 1.128 (NIST §6.3.2.2); ValidationFailed if 0."""
    mrbar = float(moving_ranges(x).mean())
    if mrbar <= 0:
        raise ValidationFailed(
            "the moving ranges are all zero, so sigma cannot be estimated", field="x"
        )
    return mrbar / IMR_D2


def imr_chart(
    x: npt.ArrayLike, *, mean: float | None = None, sigma: float | None = None
) -> IMRChart:
    """Individuals / moving-range chart.

    Phase I (nothing given): CL = x̄, limits x̄ ± 3 MR̄/d2, MR chart CL = MR̄, UCL = D4 MR̄, LCL = 0.
    Phase II: a given `mean` replaces x̄; a given `sigma` gives limits mean ± 3σ and an MR chart
    with CL = d2 σ, UCL = D4 d2 σ.
    """
    series = as_series(x, "x", min_length=2)
    mr = np.abs(np.diff(series))
    centre = float(series.mean()) if mean is None else require_finite(mean, "mean")
    process_sigma = (
        sigma_from_moving_range(series) if sigma is None else require_positive(sigma, "sigma")
    )
    mr_centre = IMR_D2 * process_sigma  # = MR̄ in phase I
    individuals = _shewhart(
        series, centre, centre - 3.0 * process_sigma, centre + 3.0 * process_sigma
    )
    ranges = _shewhart(mr, mr_centre, 0.0, IMR_D4 * mr_centre, first=1)
    return IMRChart(individuals=individuals, moving_range=ranges, mean=centre, sigma=process_sigma)


@dataclass(frozen=True, slots=True)
class SubgroupChart:
    """X̄ chart with its spread chart (R or S) for m subgroups of size n (NIST §6.3.2.1)."""

    xbar: ShewhartChart
    spread: ShewhartChart
    kind: Literal["R", "S"]
    subgroup_size: int
    sigma: float

    @property
    def out_of_control(self) -> tuple[int, ...]:
        """Subgroups flagged on either chart."""
        return tuple(sorted(set(self.xbar.out_of_control) | set(self.spread.out_of_control)))


def _subgroup_chart(
    kind: Literal["R", "S"],
    subgroups: npt.ArrayLike,
    mean: float | None,
    sigma: float | None,
) -> SubgroupChart:
    data = as_subgroups(subgroups)
    n = data.shape[1]
    k = _constants(n)
    means = data.mean(axis=1)
    if kind == "R":
        spread = data.max(axis=1) - data.min(axis=1)
        unbias, phase1_width = k.d2, k.A2
        lower, upper, lower_given, upper_given = k.D3, k.D4, k.D1, k.D2
    else:
        spread = data.std(axis=1, ddof=1)
        unbias, phase1_width = k.c4, k.A3
        lower, upper, lower_given, upper_given = k.B3, k.B4, k.B5, k.B6
    centre = float(means.mean()) if mean is None else require_finite(mean, "mean")
    if sigma is None:
        spread_bar = float(spread.mean())
        if spread_bar <= 0:
            raise ValidationFailed(
                "every subgroup has zero spread, so sigma cannot be estimated", field="subgroups"
            )
        process_sigma = spread_bar / unbias
        half_width = phase1_width * spread_bar
        spread_chart = _shewhart(spread, spread_bar, lower * spread_bar, upper * spread_bar)
    else:
        process_sigma = require_positive(sigma, "sigma")
        half_width = k.A * process_sigma
        spread_chart = _shewhart(
            spread, unbias * process_sigma, lower_given * process_sigma, upper_given * process_sigma
        )
    xbar = _shewhart(means, centre, centre - half_width, centre + half_width)
    return SubgroupChart(
        xbar=xbar, spread=spread_chart, kind=kind, subgroup_size=n, sigma=process_sigma
    )


def xbar_r_chart(
    subgroups: npt.ArrayLike, *, mean: float | None = None, sigma: float | None = None
) -> SubgroupChart:
    """X̄-R chart. Phase I: x̿ ± A2 R̄, R chart D3 R̄..D4 R̄, σ̂ = R̄/d2.
    Phase II (σ given): μ ± 3σ/√n, R chart CL d2 σ, limits D1 σ..D2 σ (Montgomery §6.2)."""
    return _subgroup_chart("R", subgroups, mean, sigma)


def xbar_s_chart(
    subgroups: npt.ArrayLike, *, mean: float | None = None, sigma: float | None = None
) -> SubgroupChart:
    """X̄-S chart. Phase I: x̿ ± A3 S̄, S chart B3 S̄..B4 S̄, σ̂ = S̄/c4.
    Phase II (σ given): μ ± 3σ/√n, S chart CL c4 σ, limits B5 σ..B6 σ (Montgomery §6.3)."""
    return _subgroup_chart("S", subgroups, mean, sigma)


# --- EWMA -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EWMAChart:
    """EWMA chart (NIST §6.3.2.4, Montgomery §9.2).

    `statistic[i]` is EWMA after observation i; `lcl`/`ucl` are the exact limits for each point,
    `lcl_asymptotic`/`ucl_asymptotic` their limit for large i. `out_of_control` uses the exact
    limits when `exact_limits`, else the asymptotic ones.
    """

    statistic: FloatArray
    center: float
    lcl: FloatArray
    ucl: FloatArray
    lcl_asymptotic: float
    ucl_asymptotic: float
    out_of_control: tuple[int, ...]
    sigma: float
    lam: float
    L: float
    exact_limits: bool


def check_lambda(lam: float) -> float:
    value = float(lam)
    if not (math.isfinite(value) and 0 < value <= 1):
        raise ValidationFailed(f"lambda must be in (0, 1], got {lam!r}", field="lam")
    return value


def ewma_chart(
    x: npt.ArrayLike,
    *,
    target: float | None = None,
    sigma: float | None = None,
    lam: float = 0.2,
    L: float = 3.0,
    start: float | None = None,
    exact_limits: bool = True,
) -> EWMAChart:
    """EWMA_t = λ x_t + (1-λ) EWMA_{t-1}, EWMA_0 = `start` (default the target).

    Limits: target ± L σ sqrt(λ/(2-λ) [1 - (1-λ)^(2t)]). Without a target or σ they are estimated
    from the data (mean, MR̄/d2) — phase I use only.
    """
    series = as_series(x, "x", min_length=1 if target is not None and sigma is not None else 2)
    weight = check_lambda(lam)
    width = require_positive(L, "L")
    centre = float(series.mean()) if target is None else require_finite(target, "target")
    process_sigma = (
        sigma_from_moving_range(series) if sigma is None else require_positive(sigma, "sigma")
    )
    level = centre if start is None else require_finite(start, "start")
    statistic = np.empty_like(series)
    keep = 1.0 - weight
    for i, value in enumerate(series):
        level = weight * float(value) + keep * level
        statistic[i] = level
    steps = np.arange(1, series.size + 1, dtype=np.float64)
    asymptotic = weight / (2.0 - weight)
    half = width * process_sigma * np.sqrt(asymptotic * (1.0 - keep ** (2.0 * steps)))
    half_asymptotic = width * process_sigma * math.sqrt(asymptotic)
    lcl, ucl = centre - half, centre + half
    if exact_limits:
        beyond = (statistic > ucl) | (statistic < lcl)
    else:
        beyond = (statistic > centre + half_asymptotic) | (statistic < centre - half_asymptotic)
    return EWMAChart(
        statistic=_frozen(statistic),
        center=centre,
        lcl=_frozen(lcl),
        ucl=_frozen(ucl),
        lcl_asymptotic=centre - half_asymptotic,
        ucl_asymptotic=centre + half_asymptotic,
        out_of_control=_indexes(beyond),
        sigma=process_sigma,
        lam=weight,
        L=width,
        exact_limits=exact_limits,
    )


# --- CUSUM ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CUSUMChart:
    """Tabular CUSUM (NIST §6.3.2.3, Montgomery §9.1.2), in data units.

    upper_t = max(0, upper_{t-1} + x_t - target - kσ), lower_t = max(0, lower_{t-1} + target - kσ
    - x_t); the centre line is 0 and the single limit is `decision_interval` = hσ for both sums.
    Sums are not reset after a signal (as in the NIST table), so every point past it is flagged
    until the sum falls back under the limit.
    """

    upper: FloatArray
    lower: FloatArray
    target: float
    sigma: float
    k: float
    h: float
    decision_interval: float
    upper_signals: tuple[int, ...]
    lower_signals: tuple[int, ...]
    out_of_control: tuple[int, ...]
    first_signal: int | None


def cusum_chart(
    x: npt.ArrayLike,
    *,
    target: float,
    sigma: float,
    k: float = 0.5,
    h: float = 5.0,
    headstart: float = 0.0,
) -> CUSUMChart:
    """Tabular CUSUM with reference value `k` and decision interval `h`, both in σ units.

    `headstart` (σ units, 0 ≤ headstart < h) starts both sums there: the fast initial response
    of Lucas & Crosier (1982).
    """
    series = as_series(x, "x")
    mu = require_finite(target, "target")
    process_sigma = require_positive(sigma, "sigma")
    ref = require_finite(k, "k")
    if ref < 0:
        raise ValidationFailed(f"k must not be negative, got {k!r}", field="k")
    interval = require_positive(h, "h")
    head = require_finite(headstart, "headstart")
    if not 0 <= head < interval:
        raise ValidationFailed(
            f"headstart must be in [0, h = {interval:g}), got {headstart!r}", field="headstart"
        )
    slack = ref * process_sigma
    limit = interval * process_sigma
    upper = np.empty_like(series)
    lower = np.empty_like(series)
    hi = lo = head * process_sigma
    for i, value in enumerate(series):
        deviation = float(value) - mu
        hi = max(0.0, hi + deviation - slack)
        lo = max(0.0, lo - deviation - slack)
        upper[i] = hi
        lower[i] = lo
    high, low = upper > limit, lower > limit
    flagged = _indexes(high | low)
    return CUSUMChart(
        upper=_frozen(upper),
        lower=_frozen(lower),
        target=mu,
        sigma=process_sigma,
        k=ref,
        h=interval,
        decision_interval=limit,
        upper_signals=_indexes(high),
        lower_signals=_indexes(low),
        out_of_control=flagged,
        first_signal=flagged[0] if flagged else None,
    )


__all__ = [
    "IMR_D2",
    "IMR_D4",
    "MAX_SUBGROUP_SIZE",
    "CUSUMChart",
    "ControlConstants",
    "EWMAChart",
    "IMRChart",
    "ShewhartChart",
    "SubgroupChart",
    "as_series",
    "as_subgroups",
    "c4",
    "check_lambda",
    "control_constants",
    "cusum_chart",
    "d2",
    "d3",
    "ewma_chart",
    "imr_chart",
    "moving_ranges",
    "require_finite",
    "require_positive",
    "sigma_from_moving_range",
    "xbar_r_chart",
    "xbar_s_chart",
]
