"""Growth kinetics of a cell expansion culture: pure functions, no I/O.

Viable cells N follow logistic growth in a vessel of carrying capacity K (the validated maximum
density times the culture volume), with the net rate r = ln 2 / Td of the population doubling
time Td the master file validates:

    dN/dt = r N (1 - N/K)                  N(t) = K / (1 + (K/N0 - 1) e^(-r t))

so the time to grow from N0 to N (N0 < N < K) is t = ln[N (K - N0) / (N0 (K - N))] / r.

Td: expanded human T cells double about every 24-48 h in their log phase (the range issue 15
gives; closed bioreactors reach 10^9-10^10 cells in 10 days, e.g. Jones et al., Curr Stem Cell
Rep 2018, doi:10.1007/s40778-018-0116-x); the master file states its own figure.

A culture with a fault is stepped with the exact solution of the Bernoulli equation
dN/dt = b N - a N^2 over a step where the rates are constant (b = g - d: growth g less extra
death d; a = g / K), so a healthy run stepped in pieces is exactly the closed form. Cells that
die are counted from the integral of N over the step (dead = death rate x integral).

Donor-to-donor variation: the run's doubling time is log-normal around the validated median
with the master file's coefficient of variation; a run fails its growth when the culture cannot
reach the harvest count within the longest validated culture, and since the time needed is
proportional to Td that chance has a closed form (`growth_failure_probability`).
"""

from __future__ import annotations

import math

LN2 = math.log(2.0)
HOURS_PER_DAY = 24.0


def growth_rate_per_day(doubling_time_h: float) -> float:
    """The net growth rate r = ln 2 / Td, per day, of a population doubling every Td hours."""
    if not doubling_time_h > 0:
        raise ValueError(f"doubling time must be positive, not {doubling_time_h}")
    return LN2 * HOURS_PER_DAY / doubling_time_h


def logistic_cells(n0: float, capacity: float, rate: float, days: float) -> float:
    """N(t) = K / (1 + (K/N0 - 1) e^(-r t)): logistic growth from N0 for `days`."""
    if not 0 < n0 <= capacity:
        raise ValueError(f"start {n0} must be positive and at most the capacity {capacity}")
    return capacity / (1.0 + (capacity / n0 - 1.0) * math.exp(-rate * days))


def days_to_reach(n0: float, capacity: float, rate: float, cells: float) -> float:
    """The time (days) logistic growth from N0 takes to reach `cells`:
    t = ln[N (K - N0) / (N0 (K - N))] / r; 0 when N0 already holds them. ValueError when the
    vessel cannot hold them (N >= K)."""
    if cells <= n0:
        return 0.0
    if cells >= capacity:
        raise ValueError(f"{cells:g} cells is not below the capacity {capacity:g}")
    return math.log(cells * (capacity - n0) / (n0 * (capacity - cells))) / rate


def growth_fold(n0: float, capacity: float, cells: float) -> float:
    """ln[N (K - N0) / (N0 (K - N))]: the logistic time to reach N, in units of 1/r."""
    return math.log(cells * (capacity - n0) / (n0 * (capacity - cells)))


def step(
    n0: float, growth: float, death: float, capacity: float, days: float
) -> tuple[float, float]:
    """(N(t), the integral of N over [0, t]) for dN/dt = (g - d) N - (g / K) N^2 with constant
    growth g and extra death d over `days`: the exact solution of the Bernoulli equation
    N(t) = b N0 e^(bt) / (b + a N0 (e^(bt) - 1)) with b = g - d, a = g / K, and its integral
    ln(1 + a N0 (e^(bt) - 1) / b) / a."""
    if n0 <= 0 or days <= 0:
        return max(n0, 0.0), 0.0
    b = growth - death
    a = growth / capacity
    if a == 0.0:  # no growth: exponential loss
        if b == 0.0:
            return n0, n0 * days
        e = math.exp(b * days)
        return n0 * e, n0 * (e - 1.0) / b
    if abs(b * days) < 1e-12:  # b -> 0: N = N0 / (1 + a N0 t)
        grown = 1.0 + a * n0 * days
        return n0 / grown, math.log(grown) / a
    growth_term = math.expm1(b * days)  # e^(bt) - 1, exact for small bt
    ratio = 1.0 + a * n0 * growth_term / b
    return n0 * (growth_term + 1.0) / ratio, math.log(ratio) / a


def logistic_fraction(c0: float, rate: float, days: float) -> float:
    """A fraction growing logistically to 1 (a contaminant's load): 1 / (1 + (1/c0 - 1) e^(-kt))."""
    if c0 <= 0:
        return 0.0
    if c0 >= 1:
        return 1.0
    return 1.0 / (1.0 + (1.0 / c0 - 1.0) * math.exp(-rate * days))


def log_normal_sigma(cv: float) -> float:
    """sigma of ln X for a log-normal X with coefficient of variation `cv`: sqrt(ln(1 + cv^2))."""
    if cv < 0:
        raise ValueError(f"coefficient of variation must be 0 or more, not {cv}")
    return math.sqrt(math.log1p(cv * cv))


def growth_failure_probability(
    *,
    n0: float,
    capacity: float,
    cells: float,
    doubling_time_h: float,
    cv: float,
    max_days: float,
) -> float:
    """The chance that a run does not grow `cells` from N0 within `max_days` when its doubling
    time is log-normal with median `doubling_time_h` and coefficient of variation `cv`.

    The time needed is ln-fold x Td / (24 ln 2) (module docstring), so the run fails exactly
    when Td > Td* = max_days x 24 ln 2 / ln-fold, and P = 1 - Phi((ln Td* - ln Td) / sigma).
    """
    if cells <= n0:
        return 0.0
    if cells >= capacity:
        return 1.0
    critical_h = max_days * HOURS_PER_DAY * LN2 / growth_fold(n0, capacity, cells)
    sigma = log_normal_sigma(cv)
    if sigma == 0.0:
        return 0.0 if doubling_time_h <= critical_h else 1.0
    z = (math.log(critical_h) - math.log(doubling_time_h)) / sigma
    return 0.5 * math.erfc(z / math.sqrt(2.0))
