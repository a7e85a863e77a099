"""Scale-out planner exactness, and identical results on every executor."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from nearfab.simulation import UnitType, load_scenario, plan_scale_out, run_replications
from nearfab.simulation.logic.planner import slots_needed
from nearfab.simulation.logic.queueing import mmc_wait_within

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenarios"


def test_slots_needed_is_the_least_meeting_the_service_level() -> None:
    c = slots_needed(4.0, 0.5, 0.25, 0.95)
    assert mmc_wait_within(4.0, 2.0, c, 0.25) >= 0.95
    assert c == 3 or mmc_wait_within(4.0, 2.0, c - 1, 0.25) < 0.95


def test_planner_finds_the_brute_force_optimum() -> None:
    types = [UnitType("printer", 1, 60_000, 20_000), UnitType("hub", 4, 150_000, 60_000)]
    demand = [1.0, 3.0, 5.0, 7.0]
    rate = 0.05
    plan = plan_scale_out(
        demand, types, cycle_days=0.5, slack_days=0.5, service_level=0.95, discount_rate=rate
    )
    need = [slots_needed(lam, 0.5, 0.5, 0.95) for lam in demand]
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
    assert all(y.slots >= y.slots_needed for y in plan.years)
    assert all(y.service_level >= 0.95 for y in plan.years)
    assert sum(y.discounted for y in plan.years) == pytest.approx(plan.npv)


def test_local_pool_and_dask_give_identical_results() -> None:
    from distributed import Client, LocalCluster

    spec = load_scenario(DOCS / "hub-and-spoke.yaml").to_spec()
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
