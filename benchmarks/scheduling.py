"""Network planning: CP-SAT against the earliest-due-date (EDD) baseline on seeded instances.

Generates instances (default 1,000 orders, 50 machines at 10 sites, each machine eligible for
about 30 % of the orders, processing 10-120 min, 8 products with changeovers, cleaning, release
and due times, transport from site to patient, 10 % urgent, some downtime) and prints for both
solvers in the same run: first_feasible_s, weighted_tardiness, cp_sat_bound, gap and improvement
(1 - CP-SAT / EDD weighted tardiness). Then it fails the busiest machine and times the replan.

    .venv/bin/python benchmarks/scheduling.py [--orders 1000] [--time-limit 30] [--workers 2]
        [--seed 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace

from nearfab.scheduling.logic import (
    ROUTINE_WEIGHT,
    URGENT_WEIGHT,
    Instance,
    Option,
    PlanJob,
    PlanMachine,
    allowed_starts,
    edd,
    evaluate,
    solve,
    subtract,
)


def generate(
    seed: int = 7,
    *,
    orders: int = 1000,
    machines: int = 50,
    sites: int = 10,
    eligibility: float = 0.3,
    products: int = 8,
    destinations: int = 20,
) -> Instance:
    rng = random.Random(seed)
    changeover, cleaning = 15, 5
    horizon = 4 * 24 * 60
    plan_machines = tuple(
        PlanMachine(f"m{i:02d}", f"machine {i:02d}", f"site{i % sites}") for i in range(machines)
    )
    windows: dict[str, list[tuple[int, int]]] = {}
    for m in plan_machines:
        blocks = []
        if rng.random() < 0.2:  # planned downtime on one machine in five
            at = rng.randrange(0, 24 * 60)
            blocks.append((at, at + rng.randrange(60, 240)))
        windows[m.id] = subtract([(0, horizon)], blocks)
    transport = {
        (f"site{s}", d): rng.choice([0, 15, 30, 45, 60, 90])
        for s in range(sites)
        for d in range(destinations)
    }
    # total machine time is about the capacity of the first day: a tight, realistic day
    release_span = 20 * 60
    jobs = []
    for j in range(orders):
        processing = rng.randint(10, 120)
        release = rng.randrange(0, release_span)
        due = release + processing + rng.randint(30, 600)
        urgent = rng.random() < 0.1
        dest = rng.randrange(destinations)
        eligible = [m for m in plan_machines if rng.random() < eligibility] or [
            rng.choice(plan_machines)
        ]
        options = []
        for m in eligible:
            starts = allowed_starts(
                windows[m.id],
                release=release,
                occupy=processing + cleaning,
                processing=processing,
            )
            if starts:
                options.append(Option(m.id, starts, transport[m.site_id, dest]))
        jobs.append(
            PlanJob(
                id=f"o{j:04d}",
                product=f"p{rng.randrange(products)}",
                processing=processing,
                release=release,
                due=due,
                weight=URGENT_WEIGHT if urgent else ROUTINE_WEIGHT,
                options=tuple(options),
            )
        )
    return Instance(
        jobs=tuple(jobs),
        machines=plan_machines,
        horizon=horizon,
        changeover=changeover,
        cleaning=cleaning,
    )


def fail_machine(
    instance: Instance, current: dict[str, tuple[str, int]], machine_id: str
) -> Instance:
    """The plan after `machine_id` breaks down: every job keeps its current place as a
    preference, and no job may use the broken machine."""
    jobs = []
    for job in instance.jobs:
        machine, start = current.get(job.id, (None, None))
        jobs.append(
            replace(
                job,
                options=tuple(o for o in job.options if o.machine_id != machine_id),
                current_machine=machine,
                current_start=start,
            )
        )
    return replace(instance, jobs=tuple(jobs))


def run(orders: int, time_limit: float, workers: int, seed: int) -> dict[str, object]:
    instance = generate(seed, orders=orders)
    started = time.perf_counter()
    baseline = edd(instance, keep_current=False)
    edd_s = time.perf_counter() - started
    edd_score = evaluate(instance, baseline)

    result = solve(instance, time_limit_s=time_limit, workers=workers, seed=seed)
    cp_wt = result.score.weighted_tardiness
    improvement = 1 - cp_wt / edd_score.weighted_tardiness if edd_score.weighted_tardiness else 0.0

    current = {p.job_id: (p.machine_id, p.start) for p in result.schedule.placements.values()}
    load: dict[str, int] = {}
    for p in result.schedule.placements.values():
        load[p.machine_id] = load.get(p.machine_id, 0) + 1
    broken = max(sorted(load), key=lambda m: load[m])
    failed = fail_machine(instance, current, broken)
    replan_limit = 4.0
    replan = solve(failed, time_limit_s=replan_limit, workers=workers, seed=seed)
    displaced = load[broken]
    return {
        "instance": {
            "orders": orders,
            "machines": len(instance.machines),
            "sites": len({m.site_id for m in instance.machines}),
            "eligibility": round(
                sum(len(j.options) for j in instance.jobs)
                / (len(instance.jobs) * len(instance.machines)),
                3,
            ),
            "changeover_min": instance.changeover,
            "cleaning_min": instance.cleaning,
            "seed": seed,
        },
        "time_limit_s": time_limit,
        "workers": workers,
        "edd": {
            "first_feasible_s": round(edd_s, 3),
            "weighted_tardiness": edd_score.weighted_tardiness,
            "objective": edd_score.objective,
            "late_orders": edd_score.late,
            "unplaced": edd_score.unplaced,
        },
        "cp_sat": {
            "first_feasible_s": round(result.greedy_s, 3),
            "cp_sat_first_solution_s": (
                round(result.cp_first_solution_s, 3) if result.cp_first_solution_s else None
            ),
            "weighted_tardiness": cp_wt,
            "objective": result.score.objective,
            "cp_sat_bound": result.bound,
            "gap": round(result.gap, 4),
            "status": result.status,
            "plan_from": result.solver,
            "exact_changeover_in_model": result.exact_changeover,
            "late_orders": result.score.late,
            "unplaced": result.score.unplaced,
            "wall_s": round(result.wall_s, 2),
        },
        "improvement": round(improvement, 4),
        "replan_after_machine_failure": {
            "machine": broken,
            "displaced_orders": displaced,
            "first_feasible_s": round(replan.greedy_s, 3),
            "time_limit_s": replan_limit,
            "wall_s": round(replan.wall_s, 2),
            "moves": replan.score.moves,
            "weighted_tardiness": replan.score.weighted_tardiness,
            "gap": round(replan.gap, 4),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--time-limit", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = run(args.orders, args.time_limit, args.workers, args.seed)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
