"""Simulation speed: one year of a national network (200+ sites) on one core, in simulated
events per second, against a bare SimPy timeout loop of the same size in the same run.

    .venv/bin/python benchmarks/simulation.py [--sites 200] [--days 365] [--json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import simpy

from nearfab.simulation.logic.engine import simulate
from nearfab.simulation.logic.spec import Disruption, Dist, Leg, Product, Region, ScenarioSpec, Site


def national(sites: int, days: float) -> ScenarioSpec:
    """A national redistributed network: every site one or two printers, a local delivery leg,
    breakdowns, 8-hour shifts, a regional outage and a courier failure."""
    product = Product(
        "printlet",
        target_lead_time_days=2.0,
        pre_process=Dist("exponential", 0.08),
        cycle=Dist("normal", 0.03, 0.003),
        qp_release=Dist("exponential", 0.17),
        shelf_life_days=28,
        batch_failure_probability=0.02,
        materials_per_batch=12,
        qc_per_batch=8,
        labour_hours_per_batch=0.75,
    )
    return ScenarioSpec(
        name=f"national-{sites}",
        horizon_days=days,
        products=(product,),
        sites=tuple(
            Site(
                f"S{i:03d}",
                slots=1 + i % 2,
                setup=Dist("fixed", 0.01),
                hours_per_day=8.0,
                mtbf_days=120.0,
                mttr=Dist("lognormal", 1.0, 0.5),
                capital_per_day=60.0,
                fixed_per_day=120.0,
                labour_rate_per_hour=35.0,
                backup=f"S{(i + 1) % sites:03d}",
            )
            for i in range(sites)
        ),
        legs=(Leg("local", time=Dist("uniform", low=0.1, high=0.3), cost_per_shipment=8.0),),
        regions=tuple(
            Region(f"R{i:03d}", f"S{i:03d}", rate_per_day=2.5, outbound="local")
            for i in range(sites)
        ),
        disruptions=(
            Disruption("site_outage", "S000", start=100, duration=7),
            Disruption("transport_failure", "local", start=200, duration=2),
        ),
        seed=1,
    )


def raw_simpy(events: int) -> float:
    """Seconds for a bare SimPy loop of `events` timeouts (processes of 1,000 timeouts each)."""
    env = simpy.Environment()

    def loop(n: int):  # type: ignore[no-untyped-def]
        for _ in range(n):
            yield env.timeout(1.0)

    per = 1000
    for _ in range(max(1, events // per)):
        env.process(loop(per))
    start = time.perf_counter()
    env.run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--days", type=float, default=365.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny run (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.sites, args.days = 3, 5.0
    spec = national(args.sites, args.days)
    start = time.perf_counter()
    result = simulate(spec, 0)
    sim_s = time.perf_counter() - start
    raw_events = result.events
    raw_s = raw_simpy(raw_events)
    out = {
        "scenario": spec.name,
        "sites": args.sites,
        "simulated_days": args.days,
        "orders": result.orders,
        "delivered": result.delivered,
        "events": result.events,
        "seconds": round(sim_s, 3),
        "events_per_s": round(result.events / sim_s),
        "raw_simpy_events_per_s": round(raw_events / raw_s),
        "ratio": round((result.events / sim_s) / (raw_events / raw_s), 3),
        "goal_seconds": 60,
        "goal_ratio": 0.2,
        "python": platform.python_version(),
        "simpy": simpy.__version__,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:>24}: {v}")


if __name__ == "__main__":
    main()
