"""Scale-out planner: the least-cost set and timing of manufacturing units that meets a service
level over a multi-year demand forecast, by NPV at a discount rate.

Method (exact for the model it solves). Demand in year t is Poisson at λ_t per day; a unit of
type k adds `slots_k` slots, each making one batch in `cycle_days`. Year t meets the service
level when the pooled slots, seen as an M/M/c queue, give P(wait ≤ slack) ≥ service level
(Erlang C: P(Wq ≤ s) = 1 - C(c, a) e^{-(cμ-λ)s}; Erlang 1917, Kleinrock 1975 §3.5). Units are
never removed. A plan is a non-decreasing vector of unit counts n_t (one entry per type); its
cost is Σ_t d_t [capex(n_t - n_{t-1}) + fixed(n_t)] with d_t = (1 + r)^-t. Because capex is
additive, V_t(n) = d_t [capex(n) + fixed(n)] + min_{m ≤ n} (V_{t-1}(m) - d_t capex(m)), and
the inner minimum over the dominated lattice is a running minimum along each axis; dynamic
programming over every state with capacity up to the largest need plus one unit is exact.
Pooling across sites is optimistic for a redistributed network; simulate the plan to check.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from nearfab.simulation.logic.queueing import mmc_wait_within


@dataclass(frozen=True)
class UnitType:
    name: str
    slots: int
    capital: float  # paid in the year the unit is added
    fixed_per_year: float


@dataclass(frozen=True)
class PlanYear:
    year: int
    demand_per_day: float
    slots_needed: int
    units: dict[str, int]
    added: dict[str, int]
    slots: int
    service_level: float
    cost: float  # undiscounted cost of the year
    discounted: float


@dataclass(frozen=True)
class Plan:
    years: list[PlanYear]
    npv: float
    discount_rate: float


def slots_needed(lam: float, cycle_days: float, slack_days: float, service_level: float) -> int:
    """Least number of slots c with P(Wq ≤ slack) ≥ service_level in M/M/c."""
    mu = 1.0 / cycle_days
    if lam <= 0:
        return 0
    c = max(1, math.floor(lam / mu) + 1)
    while mmc_wait_within(lam, mu, c, slack_days) < service_level:
        c += 1
    return c


def plan_scale_out(
    demand_per_day: Sequence[float],
    types: Sequence[UnitType],
    *,
    cycle_days: float,
    slack_days: float,
    service_level: float = 0.95,
    discount_rate: float = 0.035,
) -> Plan:
    """Least-NPV plan meeting the service level in every year (see module docstring)."""
    if not types:
        raise ValueError("at least one unit type is needed")
    need = [slots_needed(lam, cycle_days, slack_days, service_level) for lam in demand_per_day]
    top = max(need, default=0) + max(t.slots for t in types)
    bounds = [top // t.slots + 1 for t in types]
    states = [
        s
        for s in itertools.product(*(range(b) for b in bounds))
        if sum(n * t.slots for n, t in zip(s, types, strict=True))
        <= top + max(t.slots for t in types)
    ]
    index = {s: i for i, s in enumerate(states)}
    slots = [sum(n * t.slots for n, t in zip(s, types, strict=True)) for s in states]
    capex = [sum(n * t.capital for n, t in zip(s, types, strict=True)) for s in states]
    fixed = [sum(n * t.fixed_per_year for n, t in zip(s, types, strict=True)) for s in states]
    inf = math.inf
    prev = [0.0 if all(n == 0 for n in s) else inf for s in states]
    choice: list[list[int]] = []
    for year, required in enumerate(need):
        d = (1.0 + discount_rate) ** -year
        # best[m] = min over m' ≤ m of prev[m'] - d capex(m'), with its argmin
        best = [prev[i] - d * capex[i] for i in range(len(states))]
        arg = list(range(len(states)))
        for axis in range(len(types)):
            for i, s in enumerate(states):  # product order: predecessors come first
                if s[axis] == 0:
                    continue
                j = index.get((*s[:axis], s[axis] - 1, *s[axis + 1 :]))
                if j is not None and best[j] < best[i]:
                    best[i], arg[i] = best[j], arg[j]
        cur = [inf] * len(states)
        back = [-1] * len(states)
        for i in range(len(states)):
            if slots[i] >= required and best[i] < inf:
                cur[i] = d * (capex[i] + fixed[i]) + best[i]
                back[i] = arg[i]
        choice.append(back)
        prev = cur
    end = min(range(len(states)), key=lambda i: (prev[i], slots[i]))
    npv = prev[end]
    path = [end]
    for back in reversed(choice[1:]):
        path.append(back[path[-1]])
    path.reverse()
    years = []
    before = tuple(0 for _ in types)
    for year, i in enumerate(path):
        s = states[i]
        added = {t.name: s[k] - before[k] for k, t in enumerate(types) if s[k] - before[k]}
        cost = sum(
            (s[k] - before[k]) * t.capital + s[k] * t.fixed_per_year for k, t in enumerate(types)
        )
        lam = demand_per_day[year]
        level = mmc_wait_within(lam, 1.0 / cycle_days, slots[i], slack_days) if lam > 0 else 1.0
        years.append(
            PlanYear(
                year=year,
                demand_per_day=lam,
                slots_needed=need[year],
                units={t.name: s[k] for k, t in enumerate(types)},
                added=added,
                slots=slots[i],
                service_level=level,
                cost=cost,
                discounted=cost * (1.0 + discount_rate) ** -year,
            )
        )
        before = s
    return Plan(years=years, npv=npv, discount_rate=discount_rate)
