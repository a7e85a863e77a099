"""The planning model: jobs, their eligible machines (options), calendars, and a schedule's score.

Time is in whole minutes from the plan's origin (the moment of planning). Pure data, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Range = tuple[int, int]
"""Closed range [lo, hi] of minutes (allowed start times) or half-open window [a, b)."""

ROUTINE_WEIGHT = 10  # cost of one minute late for a routine order
URGENT_WEIGHT = 50  # ... and for an urgent one


@dataclass(frozen=True)
class Option:
    """One machine a job may run on, with the start times its calendar, the site's operator
    shifts and the material lot's expiry allow, and the transport from that site to the patient."""

    machine_id: str
    starts: tuple[Range, ...]
    transport: int = 0
    lot_id: str = ""


@dataclass(frozen=True)
class Exclusion:
    """A machine that cannot make the job, and why (code is one of `logic.explain.REASONS`)."""

    machine: str
    code: str
    message: str


@dataclass(frozen=True)
class PlanJob:
    """One order to make. `due` is the patient's need-by time; arrival = end + transport."""

    id: str
    product: str
    processing: int
    release: int = 0
    due: int = 0
    weight: int = ROUTINE_WEIGHT
    options: tuple[Option, ...] = ()
    material: str = ""
    grams: float = 0.0
    current_machine: str | None = None  # where the current plan has it (moves are penalised)
    current_start: int | None = None
    excluded: tuple[Exclusion, ...] = ()
    label: str = ""

    def option(self, machine_id: str) -> Option | None:
        return next((o for o in self.options if o.machine_id == machine_id), None)


@dataclass(frozen=True)
class PlanMachine:
    id: str
    name: str
    site_id: str


@dataclass(frozen=True)
class Instance:
    jobs: tuple[PlanJob, ...]
    machines: tuple[PlanMachine, ...]
    horizon: int
    changeover: int = 0  # minutes between two different products on one machine
    cleaning: int = 0  # minutes after every job before the machine is free again
    move_penalty: int = 30  # cost of moving a planned job to another machine
    transport_weight: int = 1  # cost per minute of transport
    # grams usable per (site id, material code): lots are shared by every job at the site
    material_budget: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def machine_index(self) -> dict[str, PlanMachine]:
        return {m.id: m for m in self.machines}

    def setup(self, before: str | None, after: str | None) -> int:
        """Changeover between two consecutive products on one machine."""
        if before is None or after is None or before == after:
            return 0
        return self.changeover

    def occupy(self, job: PlanJob) -> int:
        """How long the job holds its machine (processing, then cleaning)."""
        return job.processing + self.cleaning

    def skip_penalty(self, job: PlanJob) -> int:
        """Cost of leaving a job unplaced: worse than any lateness it could have in the horizon."""
        worst_transport = max((o.transport for o in job.options), default=0)
        return job.weight * 2 * (self.horizon + worst_transport) + self.move_penalty + 1


@dataclass(frozen=True)
class Placement:
    job_id: str
    machine_id: str
    start: int
    end: int  # processing done (cleaning follows)
    transport: int
    lot_id: str

    @property
    def arrival(self) -> int:
        return self.end + self.transport


@dataclass
class Schedule:
    placements: dict[str, Placement] = field(default_factory=dict)
    unplaced: list[str] = field(default_factory=list)

    def on_machine(self, machine_id: str) -> list[Placement]:
        return sorted(
            (p for p in self.placements.values() if p.machine_id == machine_id),
            key=lambda p: (p.start, p.job_id),
        )


@dataclass(frozen=True)
class Score:
    objective: int
    weighted_tardiness: int
    transport: int
    moves: int
    late: int
    unplaced: int


def tardiness(job: PlanJob, placement: Placement) -> int:
    return max(0, placement.arrival - job.due)


def evaluate(instance: Instance, schedule: Schedule) -> Score:
    """The one scoring rule used for every plan (greedy, CP-SAT, stored versions)."""
    wt = transport = moves = late = 0
    skipped = 0
    for job in instance.jobs:
        p = schedule.placements.get(job.id)
        if p is None:
            skipped += instance.skip_penalty(job)
            continue
        t = tardiness(job, p)
        wt += job.weight * t
        late += t > 0
        transport += p.transport
        moves += job.current_machine is not None and p.machine_id != job.current_machine
    objective = wt + instance.transport_weight * transport + instance.move_penalty * moves + skipped
    return Score(
        objective=objective,
        weighted_tardiness=wt,
        transport=transport,
        moves=moves,
        late=late,
        unplaced=len(instance.jobs) - len(schedule.placements),
    )


# --- calendars ----------------------------------------------------------------------------------


def normalise(windows: Sequence[Range]) -> list[Range]:
    """Sort and merge half-open windows; drop empty ones."""
    out: list[Range] = []
    for a, b in sorted(w for w in windows if w[1] > w[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def subtract(windows: Sequence[Range], blocks: Sequence[Range]) -> list[Range]:
    """Windows minus blocked periods (downtime, a running job)."""
    result = normalise(windows)
    for ba, bb in normalise(blocks):
        nxt: list[Range] = []
        for a, b in result:
            if bb <= a or ba >= b:
                nxt.append((a, b))
                continue
            if a < ba:
                nxt.append((a, ba))
            if bb < b:
                nxt.append((bb, b))
        result = nxt
    return result


def intersect(first: Sequence[Range], second: Sequence[Range]) -> list[Range]:
    out: list[Range] = []
    for a, b in normalise(first):
        for c, d in normalise(second):
            lo, hi = max(a, c), min(b, d)
            if lo < hi:
                out.append((lo, hi))
    return normalise(out)


def allowed_starts(
    windows: Sequence[Range],
    *,
    release: int,
    occupy: int,
    processing: int,
    latest_end: int | None = None,
) -> tuple[Range, ...]:
    """Start times s (closed ranges) with [s, s + occupy) inside one window, s >= release and
    s + processing <= latest_end (the material lot's expiry)."""
    out: list[Range] = []
    for a, b in normalise(windows):
        lo = max(a, release)
        hi = b - occupy
        if latest_end is not None:
            hi = min(hi, latest_end - processing)
        if lo <= hi:
            out.append((lo, hi))
    return tuple(out)


def earliest_in(
    ranges: Sequence[Range], not_before: int, not_after: int | None = None
) -> int | None:
    """The earliest allowed start at or after `not_before` (and at or before `not_after`)."""
    for lo, hi in ranges:
        s = max(lo, not_before)
        if s <= hi and (not_after is None or s <= not_after):
            return s
        if not_after is not None and lo > not_after:
            return None
    return None
