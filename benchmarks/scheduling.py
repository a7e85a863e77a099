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
import statistics
import time
from dataclasses import replace
from typing import Any

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
    rebuild,
    solve,
    solve_cp_sat,
    subtract,
)
from nearfab.scheduling.logic.solve import LARGE_MODEL


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


def _edd_alone(instance: Instance) -> dict[str, object]:
    started = time.perf_counter()
    plan = edd(instance, keep_current=False)
    elapsed = time.perf_counter() - started
    score = evaluate(instance, plan)
    return {
        "first_feasible_s": round(elapsed, 3),  # EDD's one plan is its first
        "weighted_tardiness": score.weighted_tardiness,
        "objective": score.objective,
        "late_orders": score.late,
        "unplaced": score.unplaced,
    }


def _cp_sat_alone(
    instance: Instance, time_limit: float, workers: int, seed: int
) -> dict[str, object]:
    """CP-SAT on its own: no greedy hint, no LNS; its first solution is its own. Its plan is
    re-timed by `rebuild` (changeovers a relaxed model did not see) before it is scored."""
    small = sum(len(j.options) for j in instance.jobs) <= LARGE_MODEL
    cp = solve_cp_sat(
        instance, hint=None, time_limit_s=time_limit, workers=workers, seed=seed, probing=small
    )
    out: dict[str, object] = {
        "first_feasible_s": round(cp.first_solution_s, 3) if cp.first_solution_s else None,
        "status": cp.status,
        "cp_sat_bound": cp.bound,
        "cp_sat_objective": cp.objective,
        "exact_changeover_in_model": cp.exact_changeover,
        "weighted_tardiness": None,
        "objective": None,
        "late_orders": None,
        "unplaced": None,
        "wall_s": round(cp.wall_s, 2),
    }
    if cp.starts is not None:
        score = evaluate(instance, rebuild(instance, cp.starts))
        out.update(
            weighted_tardiness=score.weighted_tardiness,
            objective=score.objective,
            late_orders=score.late,
            unplaced=score.unplaced,
        )
    return out


def run(orders: int, time_limit: float, workers: int, seed: int) -> dict[str, object]:
    """One seeded instance: EDD alone, CP-SAT alone, and the product's planner (EDD warm start,
    CP-SAT, then large-neighbourhood search), each with its own figures; then the busiest
    machine fails and the product replans."""
    instance = generate(seed, orders=orders)
    edd_figures = _edd_alone(instance)
    cp_figures = _cp_sat_alone(instance, time_limit, workers, seed)

    result = solve(instance, time_limit_s=time_limit, workers=workers, seed=seed)
    edd_wt = edd_figures["weighted_tardiness"]
    assert isinstance(edd_wt, int)
    improvement = 1 - result.score.weighted_tardiness / edd_wt if edd_wt else 0.0

    current = {p.job_id: (p.machine_id, p.start) for p in result.schedule.placements.values()}
    load: dict[str, int] = {}
    for p in result.schedule.placements.values():
        load[p.machine_id] = load.get(p.machine_id, 0) + 1
    broken = max(sorted(load), key=lambda m: load[m])
    failed = fail_machine(instance, current, broken)
    replan_limit = min(4.0, time_limit)
    replan = solve(failed, time_limit_s=replan_limit, workers=workers, seed=seed)
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
        "edd": edd_figures,
        "cp_sat": cp_figures,
        "planner": {  # nearfab's solve(): EDD warm start -> CP-SAT -> LNS
            "first_plan_s": round(result.greedy_s, 3),  # the EDD warm start
            "cp_sat_first_solution_s": (
                round(result.cp_first_solution_s, 3) if result.cp_first_solution_s else None
            ),
            "weighted_tardiness": result.score.weighted_tardiness,
            "objective": result.score.objective,
            "bound": result.bound,
            "gap": round(result.gap, 4),
            "status": result.status,
            "plan_from": result.solver,
            "lns_steps": result.lns_steps,
            "late_orders": result.score.late,
            "unplaced": result.score.unplaced,
            "wall_s": round(result.wall_s, 2),
            "improvement_over_edd": round(improvement, 4),
        },
        "replan_after_machine_failure": {
            "machine": broken,
            "displaced_orders": load[broken],
            "first_plan_s": round(replan.greedy_s, 3),
            "time_limit_s": replan_limit,
            "wall_s": round(replan.wall_s, 2),
            "moves": replan.score.moves,
            "weighted_tardiness": replan.score.weighted_tardiness,
            "gap": round(replan.gap, 4),
        },
    }


SUMMARISED = [
    ("edd", "first_feasible_s"),
    ("edd", "weighted_tardiness"),
    ("cp_sat", "first_feasible_s"),
    ("cp_sat", "weighted_tardiness"),
    ("planner", "first_plan_s"),
    ("planner", "weighted_tardiness"),
    ("planner", "improvement_over_edd"),
    ("planner", "gap"),
    ("replan_after_machine_failure", "wall_s"),
]


def summary(runs: list[dict[str, Any]]) -> dict[str, object]:
    """Median, min and max over the seeds of each headline figure (None: CP-SAT alone found
    no plan for that seed; counted in `cp_sat_no_plan`)."""
    out: dict[str, object] = {"seeds": [r["instance"]["seed"] for r in runs]}
    for block, key in SUMMARISED:
        values = [r[block][key] for r in runs if r[block][key] is not None]
        out[f"{block}.{key}"] = (
            {"median": statistics.median(values), "min": min(values), "max": max(values)}
            if values
            else None
        )
    out["cp_sat_no_plan"] = sum(1 for r in runs if r["cp_sat"]["weighted_tardiness"] is None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--time-limit", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny run (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.orders, args.time_limit, args.seeds = 40, 0.5, [7]
    runs = [run(args.orders, args.time_limit, args.workers, seed) for seed in args.seeds]
    figures = {"runs": runs, "summary": summary(runs)}
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for r in runs:
        print(f"seed {r['instance']['seed']}:")
        for key, value in r.items():
            print(f"  {key}: {value}")
    print(f"summary: {figures['summary']}")


if __name__ == "__main__":
    main()
