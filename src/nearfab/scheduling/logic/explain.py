"""Why an order is late or has no place in the plan; what changed between two plans."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nearfab.scheduling.logic.model import Instance, Option, PlanJob, Schedule

# Exclusion codes, in the order the eligibility rules are checked: the reason given for an
# order no machine can make is the rule that stopped the machine that got furthest.
EXCLUSION_ORDER = (
    "no_qualified_machine",  # wrong machine type, site not in the master file, not qualified
    "site_unavailable",  # site paused, ceased, suspended
    "machine_unavailable",  # maintenance, retired
    "no_trained_operator",
    "material_missing",
    "material_expiring",
    "calendar",  # downtime or no operator on shift within the horizon
)
REASONS = {
    "no_qualified_machine": "no qualified machine",
    "site_unavailable": "no site that may make it is active",
    "machine_unavailable": "every qualified machine is out of service",
    "no_trained_operator": "no operator trained on it at a site with a qualified machine",
    "material_missing": "material missing",
    "material_expiring": "the material lot expires before the job could finish",
    "calendar": "machine downtime or operator shifts leave no time for it",
    "capacity": "capacity: the eligible machines are taken by other orders",
    "transport_time": "transport time from the site to the patient",
    "lead_time": "it cannot be made between its release and its need-by time",
}


@dataclass(frozen=True)
class Explanation:
    job_id: str
    status: str  # late | unplaced
    reason: str  # a key of REASONS
    message: str
    minutes_late: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "order_id": self.job_id,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "minutes_late": self.minutes_late,
        }


def _why_no_machine(job: PlanJob) -> Explanation:
    if not job.excluded:
        return Explanation(job.id, "unplaced", "no_qualified_machine", "no machines in the network")
    rank = {code: i for i, code in enumerate(EXCLUSION_ORDER)}
    code = max((e.code for e in job.excluded), key=lambda c: rank.get(c, 0))
    detail = "; ".join(f"{e.machine}: {e.message}" for e in job.excluded if e.code == code)
    return Explanation(job.id, "unplaced", code, f"{REASONS[code]} ({detail})")


def explain(instance: Instance, schedule: Schedule) -> list[Explanation]:
    """One explanation per late or unplaced job, in job order."""
    machines = instance.machine_index()
    used: dict[tuple[str, str], float] = {}
    for job in instance.jobs:
        p = schedule.placements.get(job.id)
        if p is not None:
            key = (machines[p.machine_id].site_id, job.material)
            used[key] = used.get(key, 0.0) + job.grams
    out: list[Explanation] = []
    for job in instance.jobs:
        options = [o for o in job.options if o.starts]
        p = schedule.placements.get(job.id)
        if p is None:
            if not options:
                out.append(_why_no_machine(job))
                continue
            short = [
                machines[o.machine_id].name
                for o in options
                if (key := (machines[o.machine_id].site_id, job.material))
                in instance.material_budget
                and instance.material_budget[key] - used.get(key, 0.0) < job.grams
            ]
            if len(short) == len(options):
                msg = (
                    f"material missing: {job.grams:.2f} g of {job.material} needed; the lots at "
                    f"the sites of {', '.join(sorted(short))} are planned for other orders"
                )
                out.append(Explanation(job.id, "unplaced", "material_missing", msg))
            else:
                msg = (
                    f"{REASONS['capacity']}: no room on {len(options)} eligible machine(s) "
                    f"within the {instance.horizon // 60} h horizon"
                )
                out.append(Explanation(job.id, "unplaced", "capacity", msg))
            continue
        late = p.arrival - job.due
        if late <= 0:
            continue
        out.append(_why_late(instance, job, options, late, schedule))
    return out


def _why_late(
    instance: Instance, job: PlanJob, options: list[Option], late: int, schedule: Schedule
) -> Explanation:
    machines = instance.machine_index()
    no_transport = job.release + job.processing
    with_transport = min(job.release + job.processing + o.transport for o in options)
    alone = min(o.starts[0][0] + job.processing + o.transport for o in options)
    if with_transport > job.due and no_transport <= job.due:
        best = min(options, key=lambda o: o.transport)
        reason = "transport_time"
        msg = (
            f"late by {late} min: {REASONS[reason]} (at least {best.transport} min from "
            f"{machines[best.machine_id].name}'s site) leaves too little time to make it"
        )
    elif with_transport > job.due:
        reason = "lead_time"
        msg = f"late by {late} min: {REASONS[reason]} ({job.processing} min of work)"
    elif alone > job.due:
        reason = "calendar"
        msg = f"late by {late} min: {REASONS[reason]} before its need-by time"
    else:
        reason = "capacity"
        p = schedule.placements[job.id]
        before = [q.job_id for q in schedule.on_machine(p.machine_id) if q.start < p.start]
        msg = (
            f"late by {late} min: {REASONS[reason]} ({machines[p.machine_id].name} is busy with "
            f"{len(before)} order(s) before it)"
        )
    return Explanation(job.id, "late", reason, msg, late)


def diff_plans(
    old: Mapping[str, tuple[str, str]], new: Mapping[str, tuple[str, str]]
) -> list[dict[str, str | None]]:
    """What changed, per order: (machine, start) before and after. Kinds: added, removed,
    moved (another machine), retimed (same machine, another start)."""
    changes: list[dict[str, str | None]] = []
    for order_id in sorted(set(old) | set(new)):
        before, after = old.get(order_id), new.get(order_id)
        if before == after:
            continue
        if before is None:
            kind = "added"
        elif after is None:
            kind = "removed"
        elif before[0] != after[0]:
            kind = "moved"
        else:
            kind = "retimed"
        changes.append(
            {
                "order_id": order_id,
                "kind": kind,
                "from_machine": before[0] if before else None,
                "from_start": before[1] if before else None,
                "to_machine": after[0] if after else None,
                "to_start": after[1] if after else None,
            }
        )
    return changes
