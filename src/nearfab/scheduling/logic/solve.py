"""Plan a network: greedy first (always a plan, at once), then CP-SAT within a time limit."""

from __future__ import annotations

import time
from dataclasses import dataclass

from nearfab.scheduling.logic.cpsat import solve_cp_sat
from nearfab.scheduling.logic.greedy import edd, rebuild
from nearfab.scheduling.logic.lns import improve
from nearfab.scheduling.logic.model import Instance, Schedule, Score, evaluate

# above this many (job, machine) options the whole model only gives a bound and a first try;
# the time left goes to large-neighbourhood search (`logic.lns`)
LARGE_MODEL = 4000


@dataclass(frozen=True)
class SolveResult:
    schedule: Schedule
    score: Score
    solver: str  # edd | cp_sat | cp_sat_lns: whose plan this is
    status: str  # optimal | feasible | fallback (CP-SAT found nothing, EDD used)
    bound: int  # a lower bound on the objective
    greedy: Score
    greedy_s: float  # time to the first (greedy) plan
    cp_first_solution_s: float | None
    wall_s: float
    exact_changeover: bool = True
    lns_steps: int = 0

    @property
    def gap(self) -> float:
        """Relative distance to the bound: 0 means proven optimal."""
        if self.score.objective <= 0:
            return 0.0
        return max(0.0, (self.score.objective - self.bound) / self.score.objective)


def lower_bound(instance: Instance) -> int:
    """Each job alone, on its best machine at its earliest start: no plan can cost less."""
    total = 0
    for job in instance.jobs:
        options = [o for o in job.options if o.starts]
        if not options:
            total += instance.skip_penalty(job)
            continue
        best: int | None = None
        for o in options:
            late = max(0, o.starts[0][0] + job.processing + o.transport - job.due)
            cost = job.weight * late + instance.transport_weight * o.transport
            if job.current_machine is not None and o.machine_id != job.current_machine:
                cost += instance.move_penalty
            best = cost if best is None else min(best, cost)
        total += best or 0
    return total


def solve(
    instance: Instance,
    *,
    time_limit_s: float = 2.0,
    workers: int = 2,
    seed: int = 0,
    keep_current: bool = True,
) -> SolveResult:
    """The greedy plan (the current plan repaired: CP-SAT's warm start), improved by CP-SAT
    when it is not provably optimal. Never returns worse than the greedy plan."""
    started = time.perf_counter()
    greedy = edd(instance, keep_current=keep_current)
    greedy_score = evaluate(instance, greedy)
    greedy_s = time.perf_counter() - started
    bound = lower_bound(instance)
    if greedy_score.objective <= bound or time_limit_s <= 0:
        status = "optimal" if greedy_score.objective <= bound else "feasible"
        return SolveResult(
            greedy, greedy_score, "edd", status, bound, greedy_score, greedy_s, None, greedy_s
        )
    options = sum(len(j.options) for j in instance.jobs)
    small = options <= LARGE_MODEL
    cp = solve_cp_sat(
        instance,
        hint=greedy,
        time_limit_s=time_limit_s if small else min(3.0, 0.15 * time_limit_s),
        workers=workers,
        seed=seed,
        probing=small,
    )
    bound = max(bound, cp.bound)
    best, score, solver, status = greedy, greedy_score, "edd", "fallback"
    if cp.starts is not None:
        status = "feasible"
        rebuilt = rebuild(instance, cp.starts)
        rebuilt_score = evaluate(instance, rebuilt)
        # re-timing adds the changeovers a relaxed model did not see: keep the better plan
        if rebuilt_score.objective <= score.objective:
            best, score, solver = rebuilt, rebuilt_score, "cp_sat"
    steps = 0
    remaining = time_limit_s - (time.perf_counter() - started)
    if score.objective > bound and remaining > 0.2 and not (small and cp.status == "OPTIMAL"):
        improved, steps = improve(
            instance, best, time_limit_s=remaining, workers=workers, seed=seed
        )
        improved_score = evaluate(instance, improved)
        if improved_score.objective < score.objective:
            best, score, solver, status = improved, improved_score, "cp_sat_lns", "feasible"
    if score.objective <= bound:
        status = "optimal"
    return SolveResult(
        best,
        score,
        solver,
        status,
        bound,
        greedy_score,
        greedy_s,
        cp.first_solution_s,
        time.perf_counter() - started,
        cp.exact_changeover,
        steps,
    )
