"""Large-neighbourhood search: CP-SAT re-optimises a few machines around a late job at a time.

On a thousand orders the whole model is too big for CP-SAT to improve within seconds on two
cores; a neighbourhood (the jobs of up to four machines in a window of hours) is small enough to
solve exactly, changeovers included. Everything outside it stays fixed, and a neighbourhood's
cost is the plan's cost restricted to its jobs, so every accepted step improves the plan.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from itertools import pairwise

from nearfab.scheduling.logic.cpsat import solve_cp_sat
from nearfab.scheduling.logic.model import (
    Instance,
    Option,
    Placement,
    PlanJob,
    Range,
    Schedule,
    evaluate,
    tardiness,
)

NEIGHBOURHOOD_JOBS = 40
NEIGHBOURHOOD_MACHINES = 4


def _gaps(
    instance: Instance, fixed: list[tuple[int, int, str]], job: PlanJob, ranges: tuple[Range, ...]
) -> tuple[Range, ...]:
    """Allowed starts of `job` between the fixed jobs of a machine (start, busy end, product),
    with the changeover to each neighbour."""
    occupy = instance.occupy(job)
    out: list[Range] = []
    bounds = [(-(10**9), -(10**9), ""), *sorted(fixed), (10**9, 10**9, "")]
    for (_, prev_end, prev_product), (next_start, _, next_product) in pairwise(bounds):
        lo_gap = prev_end + instance.setup(prev_product or None, job.product)
        hi_gap = next_start - occupy - instance.setup(job.product, next_product or None)
        for lo, hi in ranges:
            a, b = max(lo, lo_gap), min(hi, hi_gap)
            if a <= b:
                out.append((a, b))
    return tuple(sorted(out))


def _neighbourhood(
    instance: Instance, schedule: Schedule, jobs: dict[str, PlanJob], rng: random.Random
) -> tuple[list[str], list[str]]:
    """Machines and free jobs: around a late job (heavier lateness drawn more often)."""
    placed = list(schedule.placements.values())
    late = [(p, jobs[p.job_id].weight * tardiness(jobs[p.job_id], p)) for p in placed]
    late = [(p, w) for p, w in late if w > 0]
    if late and rng.random() < 0.8:
        seed = rng.choices([p for p, _ in late], weights=[w for _, w in late])[0]
    else:
        seed = rng.choice(placed)
    others = [o.machine_id for o in jobs[seed.job_id].options if o.machine_id != seed.machine_id]
    rng.shuffle(others)
    machines = [seed.machine_id, *others[: rng.randint(0, NEIGHBOURHOOD_MACHINES - 1)]]
    candidates = [p for p in placed if p.machine_id in machines]
    candidates.sort(key=lambda p: abs(p.start - seed.start))
    return machines, [p.job_id for p in candidates[:NEIGHBOURHOOD_JOBS]]


def improve(
    instance: Instance,
    schedule: Schedule,
    *,
    time_limit_s: float,
    workers: int = 2,
    seed: int = 0,
    step_limit_s: float = 0.5,
) -> tuple[Schedule, int]:
    """Improve a feasible schedule until the time limit; returns it and the accepted steps."""
    deadline = time.perf_counter() + time_limit_s
    rng = random.Random(seed)
    jobs = {j.id: j for j in instance.jobs}
    machine_of = instance.machine_index()
    best = Schedule(dict(schedule.placements), list(schedule.unplaced))
    best_cost = evaluate(instance, best).objective
    accepted = 0
    while best.placements and time.perf_counter() + 0.05 < deadline:
        machines, free = _neighbourhood(instance, best, jobs, rng)
        free_set = set(free)
        fixed: dict[str, list[tuple[int, int, str]]] = {m: [] for m in machines}
        for p in best.placements.values():
            if p.machine_id in fixed and p.job_id not in free_set:
                job = jobs[p.job_id]
                fixed[p.machine_id].append((p.start, p.start + instance.occupy(job), job.product))
        budget = dict(instance.material_budget)
        for p in best.placements.values():
            key = (machine_of[p.machine_id].site_id, jobs[p.job_id].material)
            if p.job_id not in free_set and key in budget:
                budget[key] -= jobs[p.job_id].grams
        sub_jobs = []
        for job_id in free:
            job = jobs[job_id]
            options: list[Option] = []
            for o in job.options:
                if o.machine_id in fixed:
                    starts = _gaps(instance, fixed[o.machine_id], job, o.starts)
                    if starts:
                        options.append(replace(o, starts=starts))
            sub_jobs.append(replace(job, options=tuple(options)))
        sub = replace(
            instance,
            jobs=tuple(sub_jobs),
            machines=tuple(machine_of[m] for m in machines),
            material_budget=budget,
        )
        hint = Schedule({j: best.placements[j] for j in free})
        remaining = deadline - time.perf_counter()
        result = solve_cp_sat(
            sub,
            hint=hint,
            time_limit_s=min(step_limit_s, remaining),
            workers=workers,
            seed=rng.randrange(1 << 16),
            circuit_limit=NEIGHBOURHOOD_JOBS,
        )
        if result.starts is None or len(result.starts) < len(free):
            continue
        trial = Schedule(dict(best.placements), list(best.unplaced))
        for job_id, (machine_id, start) in result.starts.items():
            job = jobs[job_id]
            option = job.option(machine_id)
            assert option is not None
            trial.placements[job_id] = Placement(
                job_id, machine_id, start, start + job.processing, option.transport, option.lot_id
            )
        cost = evaluate(instance, trial).objective
        if cost < best_cost:
            best, best_cost = trial, cost
            accepted += 1
    return best, accepted
