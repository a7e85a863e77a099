"""CP-SAT model: one optional interval per (job, eligible machine), weighted tardiness plus
transport plus moves, warm-started from a greedy plan.

Changeovers are modelled exactly (a circuit per machine) when every machine has few candidate
jobs; on large instances they are relaxed (the solver sees processing and cleaning only, which
keeps its bound valid) and `greedy.rebuild` adds them back when it re-times the sequence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from nearfab.scheduling.logic.model import Instance, PlanJob, Range, Schedule, normalise

CIRCUIT_LIMIT = 24  # most candidate jobs on one machine for which changeovers are exact
_GRAM_SCALE = 100  # material in centigrams (CP-SAT is integer)


@dataclass(frozen=True)
class CpResult:
    starts: dict[str, tuple[str, int]] | None  # job -> (machine, start); None: nothing found
    status: str
    objective: int | None
    bound: int
    first_solution_s: float | None
    wall_s: float
    exact_changeover: bool


class _FirstSolution(cp_model.CpSolverSolutionCallback):
    def __init__(self, started: float) -> None:
        super().__init__()
        self.started = started
        self.first: float | None = None
        self.count = 0

    def on_solution_callback(self) -> None:
        self.count += 1
        if self.first is None:
            self.first = time.perf_counter() - self.started


def _domain(ranges: tuple[Range, ...] | list[Range]) -> cp_model.Domain:
    return cp_model.Domain.from_intervals([[lo, hi] for lo, hi in ranges])


def _merged(job: PlanJob) -> list[Range]:
    # closed ranges: merge touching ones by widening to half-open and back
    return [
        (a, b - 1) for a, b in normalise([(lo, hi + 1) for o in job.options for lo, hi in o.starts])
    ]


def solve_cp_sat(
    instance: Instance,
    *,
    hint: Schedule | None = None,
    time_limit_s: float = 2.0,
    workers: int = 2,
    seed: int = 0,
    circuit_limit: int = CIRCUIT_LIMIT,
    probing: bool = True,
) -> CpResult:
    """Minimise sum(weight x tardiness) + transport + move penalties + unplaced penalties."""
    started = time.perf_counter()
    model = cp_model.CpModel()
    machines = instance.machine_index()
    by_machine: dict[str, list[tuple[PlanJob, cp_model.IntVar, cp_model.IntervalVar]]] = {
        m.id: [] for m in instance.machines
    }
    lits: dict[tuple[str, str], cp_model.IntVar] = {}
    starts: dict[str, cp_model.IntVar] = {}
    skips: dict[str, cp_model.IntVar] = {}
    tards: dict[str, cp_model.IntVar] = {}
    objective: list[cp_model.LinearExprT] = []
    constant = 0
    grams: dict[tuple[str, str], list[tuple[int, cp_model.IntVar]]] = {}
    for job in instance.jobs:
        options = [o for o in job.options if o.starts and o.machine_id in machines]
        if not options:
            constant += instance.skip_penalty(job)
            continue
        merged = _merged(job)
        start = model.new_int_var_from_domain(_domain(merged), f"s_{job.id}")
        skip = model.new_bool_var(f"skip_{job.id}")
        starts[job.id], skips[job.id] = start, skip
        objective.append(instance.skip_penalty(job) * skip)
        chosen: list[cp_model.IntVar] = []
        arrival_extra: list[tuple[int, cp_model.IntVar]] = []
        for option in options:
            lit = model.new_bool_var(f"x_{job.id}_{option.machine_id}")
            lits[job.id, option.machine_id] = lit
            chosen.append(lit)
            if list(option.starts) != merged:
                model.add_linear_expression_in_domain(
                    start, _domain(option.starts)
                ).only_enforce_if(lit)
            interval = model.new_optional_fixed_size_interval_var(
                start, instance.occupy(job), lit, f"i_{job.id}_{option.machine_id}"
            )
            by_machine[option.machine_id].append((job, lit, interval))
            cost = instance.transport_weight * option.transport
            if job.current_machine is not None and option.machine_id != job.current_machine:
                cost += instance.move_penalty
            if cost:
                objective.append(cost * lit)
            if option.transport:
                arrival_extra.append((option.transport, lit))
            if job.grams > 0:
                key = (machines[option.machine_id].site_id, job.material)
                if key in instance.material_budget:
                    grams.setdefault(key, []).append((round(job.grams * _GRAM_SCALE), lit))
        model.add_exactly_one([*chosen, skip])
        latest_arrival = merged[-1][1] + job.processing + max(o.transport for o in options)
        if latest_arrival > job.due:  # else it can never be late: no tardiness variable
            tard = model.new_int_var(0, latest_arrival - job.due, f"t_{job.id}")
            tards[job.id] = tard
            arrival = start + job.processing + sum(t * lit for t, lit in arrival_extra)
            model.add(tard >= arrival - job.due).only_enforce_if(~skip)
            objective.append(job.weight * tard)
    for key, uses in grams.items():
        budget = int(instance.material_budget[key] * _GRAM_SCALE + 1e-6)
        if sum(g for g, _ in uses) > budget:
            model.add(sum(g * lit for g, lit in uses) <= budget)
    busiest = max((len(v) for v in by_machine.values()), default=0)
    products = {j.product for j in instance.jobs}
    exact = instance.changeover == 0 or len(products) <= 1 or busiest <= circuit_limit
    for machine_id, entries in by_machine.items():
        if not entries:
            continue
        model.add_no_overlap([iv for _, _, iv in entries])
        if instance.changeover and len(products) > 1 and exact and len(entries) > 1:
            _circuit(model, instance, entries, starts, machine_id)
    model.minimize(sum(objective) + constant)
    if hint is not None:
        _hint(model, instance, hint, lits, starts, skips, tards)

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.05, time_limit_s)
    solver.parameters.num_workers = max(1, workers)
    solver.parameters.random_seed = seed
    if not probing:  # on thousands of optional intervals probing alone takes seconds
        solver.parameters.cp_model_probing_level = 0
    callback = _FirstSolution(started)
    status = solver.solve(model, callback)
    wall = time.perf_counter() - started
    name = solver.status_name(status)
    bound = int(solver.best_objective_bound) if status != cp_model.UNKNOWN else constant
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return CpResult(None, name, None, bound, callback.first, wall, exact)
    result: dict[str, tuple[str, int]] = {}
    for job in instance.jobs:
        if job.id not in starts or solver.boolean_value(skips[job.id]):
            continue
        for option in job.options:
            chosen_lit = lits.get((job.id, option.machine_id))
            if chosen_lit is not None and solver.boolean_value(chosen_lit):
                result[job.id] = (option.machine_id, solver.value(starts[job.id]))
                break
    return CpResult(result, name, int(solver.objective_value), bound, callback.first, wall, exact)


def _circuit(
    model: cp_model.CpModel,
    instance: Instance,
    entries: list[tuple[PlanJob, cp_model.IntVar, cp_model.IntervalVar]],
    starts: dict[str, cp_model.IntVar],
    machine_id: str,
) -> None:
    """Sequence the machine's jobs (node 0 is the machine idle): an arc i -> k means k follows
    i directly, so k starts after i's processing, cleaning and the changeover between them."""
    # the machine may end up with none of them (node 0 then loops on itself)
    arcs: list[tuple[int, int, cp_model.LiteralT]] = [(0, 0, model.new_bool_var("idle"))]
    for i, (job, lit, _) in enumerate(entries, start=1):
        arcs.append((0, i, model.new_bool_var(f"first_{machine_id}_{job.id}")))
        arcs.append((i, 0, model.new_bool_var(f"last_{machine_id}_{job.id}")))
        arcs.append((i, i, ~lit))
        for k, (other, _, _) in enumerate(entries, start=1):
            if k == i:
                continue
            follows = model.new_bool_var(f"seq_{machine_id}_{job.id}_{other.id}")
            gap = instance.occupy(job) + instance.setup(job.product, other.product)
            model.add(starts[other.id] >= starts[job.id] + gap).only_enforce_if(follows)
            arcs.append((i, k, follows))
    model.add_circuit(arcs)


def _hint(
    model: cp_model.CpModel,
    instance: Instance,
    hint: Schedule,
    lits: dict[tuple[str, str], cp_model.IntVar],
    starts: dict[str, cp_model.IntVar],
    skips: dict[str, cp_model.IntVar],
    tards: dict[str, cp_model.IntVar],
) -> None:
    """Warm start from a plan (the greedy repair of the current plan)."""
    for job in instance.jobs:
        if job.id not in starts:
            continue
        placed = hint.placements.get(job.id)
        model.add_hint(skips[job.id], placed is None)
        for option in job.options:
            lit = lits.get((job.id, option.machine_id))
            if lit is not None:
                model.add_hint(lit, placed is not None and placed.machine_id == option.machine_id)
        if placed is not None:
            model.add_hint(starts[job.id], placed.start)
            if job.id in tards:
                model.add_hint(tards[job.id], max(0, placed.arrival - job.due))
