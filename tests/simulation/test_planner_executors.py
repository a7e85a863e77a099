"""Scale-out planner exactness, and identical results on every executor."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from nearfab.bootstrap import product_families
from nearfab.simulation import UnitType, load_scenario, plan_scale_out, run_replications
from nearfab.simulation.logic.planner import slots_needed
from nearfab.simulation.logic.queueing import mmc_wait_within

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenarios"


# Hand calculations (Erlang C, M/M/c; Kleinrock 1975 eq. 3.40 and Gross & Harris, "waiting
# time distribution"): with offered load a = λ/μ,
#   C(c, a) = [a^c/c! · c/(c-a)] / [Σ_{k<c} a^k/k! + a^c/c! · c/(c-a)]
#   P(Wq ≤ t) = 1 - C(c, a) · exp(-(cμ - λ) t)
#
# λ = 4/day, cycle 0.5 day (μ = 2/day, a = 2), slack t = 0.25 day, goal 0.95:
#   c = 3: Σ = 1 + 2 + 2 = 5;       top = 8/6 · 3/1 = 4;    C = 4/9   = 0.44444
#          P = 1 - 4/9 · e^-0.5  = 1 - 0.44444 · 0.60653 = 0.73043   < 0.95
#   c = 4: Σ = 5 + 4/3 = 19/3;      top = 16/24 · 4/2 = 4/3; C = 4/23 = 0.17391
#          P = 1 - 4/23 · e^-1   = 1 - 0.17391 · 0.36788 = 0.93602   < 0.95
#   c = 5: Σ = 19/3 + 2/3 = 7;      top = 32/120 · 5/3 = 4/9; C = 4/67 = 0.05970
#          P = 1 - 4/67 · e^-1.5 = 1 - 0.05970 · 0.22313 = 0.98668   ≥ 0.95  -> 5 slots
HAND_P_WITHIN = {3: 0.73043, 4: 0.93602, 5: 0.98668}
#
# Slots per year for the brute-force test (μ = 2/day, slack t = 0.5 day, goal 0.95):
#   λ = 1 (a = 0.5): c = 1: C = 0.5,  P = 1 - 0.5 · e^-0.5 = 0.69673;
#                    c = 2: Σ = 1.5, top = 0.125 · 2/1.5 = 1/6, C = 0.1,
#                           P = 1 - 0.1 · e^-1.5 = 0.97769                     -> 2
#   λ = 3 (a = 1.5): c = 2: Σ = 2.5, top = 1.125 · 2/0.5 = 4.5, C = 4.5/7 = 0.64286,
#                           P = 1 - 0.64286 · e^-0.5 = 0.61009;
#                    c = 3: Σ = 3.625, top = 0.5625 · 3/1.5 = 1.125, C = 1.125/4.75
#                           = 0.23684, P = 1 - 0.23684 · e^-1.5 = 0.94715 (< 0.95!);
#                    c = 4: Σ = 4.1875, top = 0.2109375 · 4/2.5 = 0.3375, C = 0.07459,
#                           P = 1 - 0.07459 · e^-2.5 = 0.99388                 -> 4
#   λ = 5 (a = 2.5): c = 3: C = 0.70225, P = 0.57407; c = 4: C = 0.31986, P = 0.92863;
#                    c = 5: C = 0.13037, P = 1 - 0.13037 · e^-2.5 = 0.98930     -> 5
#   λ = 7 (a = 3.5): c = 4: C = 0.73786, P = 0.55246; c = 5: C = 0.37784, P = 0.91569;
#                    c = 6: C = 0.17747, P = 1 - 0.17747 · e^-2.5 = 0.98543     -> 6
HAND_NEED = [2, 4, 5, 6]


def test_slots_needed_is_the_least_meeting_the_service_level() -> None:
    assert slots_needed(4.0, 0.5, 0.25, 0.95) == 5
    for c, p in HAND_P_WITHIN.items():
        assert mmc_wait_within(4.0, 2.0, c, 0.25) == pytest.approx(p, abs=1e-5)
    # the λ = 3 case sits just under the goal with 3 slots (0.94715): a loose check fails here
    assert mmc_wait_within(3.0, 2.0, 3, 0.5) == pytest.approx(0.94715, abs=1e-5)
    assert [slots_needed(lam, 0.5, 0.5, 0.95) for lam in (1.0, 3.0, 5.0, 7.0)] == HAND_NEED
    assert slots_needed(0.0, 0.5, 0.5, 0.95) == 0  # no demand, no slot


def test_planner_finds_the_brute_force_optimum() -> None:
    types = [UnitType("printer", 1, 60_000, 20_000), UnitType("hub", 4, 150_000, 60_000)]
    demand = [1.0, 3.0, 5.0, 7.0]
    rate = 0.05
    plan = plan_scale_out(
        demand, types, cycle_days=0.5, slack_days=0.5, service_level=0.95, discount_rate=rate
    )
    need = HAND_NEED  # worked out by hand above
    best = float("inf")
    counts = list(itertools.product(range(9), range(4)))

    # every non-decreasing path of (printers, hubs) counts meeting the need each year
    def search(year: int, prev: tuple[int, int], cost: float) -> None:
        nonlocal best
        if year == len(demand):
            best = min(best, cost)
            return
        d = (1 + rate) ** -year
        for n in counts:
            if n[0] < prev[0] or n[1] < prev[1] or n[0] + 4 * n[1] < need[year]:
                continue
            add = (n[0] - prev[0]) * 60_000 + (n[1] - prev[1]) * 150_000
            search(year + 1, n, cost + d * (add + n[0] * 20_000 + n[1] * 60_000))

    search(0, (0, 0), 0.0)
    assert plan.npv == pytest.approx(best)
    assert [y.slots_needed for y in plan.years] == HAND_NEED
    assert all(y.slots >= y.slots_needed for y in plan.years)
    assert all(y.service_level >= 0.95 for y in plan.years)
    assert sum(y.discounted for y in plan.years) == pytest.approx(plan.npv)


def test_local_pool_and_dask_give_identical_results() -> None:
    from distributed import Client, LocalCluster

    families = product_families()
    spec = load_scenario(DOCS / "hub-and-spoke.yaml", families).to_spec(families)
    spec = type(spec)(**{**spec.__dict__, "horizon_days": 120.0})
    serial = run_replications(spec, 3, "serial")
    local = run_replications(spec, 3, "local")
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        dask = run_replications(spec, 3, client)
    assert serial == local == dask
    assert len({tuple(r.lead_times) for r in serial}) == 3
