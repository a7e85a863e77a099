"""Greedy planning: earliest due date (EDD) list scheduling with gap insertion.

It is the fast fallback (a plan in well under a second for a thousand orders), the warm start
for CP-SAT, and the repair step of a replan: jobs that can stay where the current plan has them
stay, the rest are placed by due date.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nearfab.scheduling.logic.model import (
    Instance,
    Option,
    Placement,
    PlanJob,
    Range,
    Schedule,
    earliest_in,
)

_FAR_PAST = -(10**9)


@dataclass(frozen=True, order=True)
class _Slot:
    start: int
    busy_end: int  # processing and cleaning done
    product: str
    job_id: str


class _Timeline:
    """The jobs on one machine, by start."""

    def __init__(self) -> None:
        self.slots: list[_Slot] = []
        self._starts: list[int] = []

    def earliest(self, instance: Instance, ranges: tuple[Range, ...], job: PlanJob) -> int | None:
        """The earliest start in `ranges` that fits between the jobs already here, with the
        changeover to the job before and after it."""
        if not ranges:
            return None
        occupy = instance.occupy(job)
        slots = self.slots
        # gaps wholly before the first allowed start cannot hold the job
        first = max(0, bisect_left(self._starts, ranges[0][0]))
        for i in range(first, len(slots) + 1):
            if i > 0:
                prev = slots[i - 1]
                lo = prev.busy_end + instance.setup(prev.product, job.product)
            else:
                lo = _FAR_PAST
            hi: int | None = None
            if i < len(slots):
                nxt = slots[i]
                hi = nxt.start - occupy - instance.setup(job.product, nxt.product)
                if hi < lo:
                    continue
            s = earliest_in(ranges, lo, hi)
            if s is not None:
                return s
            if hi is None or hi >= ranges[-1][1]:
                return None
        return None

    def add(self, slot: _Slot) -> None:
        i = bisect_left(self._starts, slot.start)
        self._starts.insert(i, slot.start)
        self.slots.insert(i, slot)


class Builder:
    """A schedule under construction: machine timelines and material still unallocated."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.machines = instance.machine_index()
        self.timelines = {m.id: _Timeline() for m in instance.machines}
        self.budget: dict[tuple[str, str], float] = dict(instance.material_budget)
        self.schedule = Schedule()

    def _budget_key(self, job: PlanJob, option: Option) -> tuple[str, str] | None:
        key = (self.machines[option.machine_id].site_id, job.material)
        return key if key in self.budget else None

    def material_ok(self, job: PlanJob, option: Option) -> bool:
        key = self._budget_key(job, option)
        # a small tolerance: grams are floats summed in different orders
        return key is None or self.budget[key] + 1e-9 >= job.grams

    def earliest(self, job: PlanJob, option: Option, not_before: int | None = None) -> int | None:
        if not self.material_ok(job, option):
            return None
        ranges = option.starts
        if not_before is not None:
            ranges = tuple((max(lo, not_before), hi) for lo, hi in ranges if hi >= not_before)
        return self.timelines[option.machine_id].earliest(self.instance, ranges, job)

    def place(self, job: PlanJob, option: Option, start: int) -> Placement:
        key = self._budget_key(job, option)
        if key is not None:
            self.budget[key] -= job.grams
        self.timelines[option.machine_id].add(
            _Slot(start, start + self.instance.occupy(job), job.product, job.id)
        )
        placement = Placement(
            job_id=job.id,
            machine_id=option.machine_id,
            start=start,
            end=start + job.processing,
            transport=option.transport,
            lot_id=option.lot_id,
        )
        self.schedule.placements[job.id] = placement
        return placement

    def cost(self, job: PlanJob, option: Option, start: int) -> int:
        late = max(0, start + job.processing + option.transport - job.due)
        return job.weight * late + self.instance.transport_weight * option.transport

    def place_best(self, job: PlanJob, options: Iterable[Option] | None = None) -> bool:
        """Put the job where it costs least (lateness and transport), then finishes first;
        ties go to the machine name, so plans repeat."""
        best: tuple[tuple[int, int, str, str], Option, int] | None = None
        for option in job.options if options is None else options:
            start = self.earliest(job, option)
            if start is None:
                continue
            name = self.machines[option.machine_id].name
            key = (self.cost(job, option, start), start + job.processing, name, option.machine_id)
            if best is None or key < best[0]:
                best = (key, option, start)
        if best is None:
            self.schedule.unplaced.append(job.id)
            return False
        self.place(job, best[1], best[2])
        return True


def edd_order(jobs: Iterable[PlanJob]) -> list[PlanJob]:
    """Earliest due date first; on a tie the heavier (urgent) job first, then by id."""
    return sorted(jobs, key=lambda j: (j.due, -j.weight, j.id))


def edd(instance: Instance, *, keep_current: bool = True) -> Schedule:
    """EDD list schedule. With `keep_current`, a job that can stay on its current machine
    stays (at its current start if that is still free): a replan changes as little as it can."""
    builder = Builder(instance)
    rest: list[PlanJob] = []
    kept: list[tuple[PlanJob, Option]] = []
    for job in instance.jobs:
        option = job.option(job.current_machine) if job.current_machine else None
        if keep_current and option is not None:
            kept.append((job, option))
        else:
            rest.append(job)
    kept.sort(key=lambda jo: (jo[0].current_start or 0, jo[0].id))
    for job, option in kept:
        start = None
        if job.current_start is not None:
            at = builder.earliest(job, option, not_before=job.current_start)
            start = at if at == job.current_start else None
        if start is None:
            start = builder.earliest(job, option)
        if start is None:
            rest.append(job)  # its machine cannot hold it any more: it moves
            continue
        builder.place(job, option, start)
    for job in edd_order(rest):
        builder.place_best(job)
    return builder.schedule


def rebuild(instance: Instance, starts: Mapping[str, tuple[str, int]]) -> Schedule:
    """Turn a solver's (machine, start) per job into a schedule that is exactly feasible:
    jobs are placed in start order at their earliest feasible start on the same machine
    (never later than the solver's start when the solver modelled every rule); a job its
    machine cannot hold any more is placed greedily."""
    builder = Builder(instance)
    jobs = {j.id: j for j in instance.jobs}
    leftover: list[PlanJob] = []
    for job_id, (machine_id, _start) in sorted(starts.items(), key=lambda kv: (kv[1][1], kv[0])):
        job = jobs[job_id]
        option = job.option(machine_id)
        start = builder.earliest(job, option) if option is not None else None
        if option is None or start is None:
            leftover.append(job)
            continue
        builder.place(job, option, start)
    placed = set(starts)
    leftover += [j for j in instance.jobs if j.id not in placed]
    for job in edd_order(leftover):
        builder.place_best(job)
    return builder.schedule
