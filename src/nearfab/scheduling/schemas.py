"""Plan versions as plain dicts: the one shape the API, the CLI and the web page show."""

from __future__ import annotations

from typing import Any

from nearfab.common.schemas import Out, Timestamp
from nearfab.scheduling.models import PlanVersion


def plan_summary(version: PlanVersion) -> dict[str, Any]:
    return {
        "id": version.id,
        "number": version.number,
        "created_at": version.created_at.isoformat(),
        "created_by": version.created_by,
        "trigger": version.trigger,
        "reason": version.reason,
        "solver": version.solver,
        "status": version.status,
        "objective": version.objective,
        "weighted_tardiness": version.weighted_tardiness,
        "bound": version.bound,
        "gap": version.gap,
        "solve_s": version.solve_s,
        "late": sum(1 for e in version.explanations if e["status"] == "late"),
        "unplaced": sum(1 for e in version.explanations if e["status"] == "unplaced"),
        "changes": len(version.changes),
    }


def plan_dict(version: PlanVersion) -> dict[str, Any]:
    return {
        **plan_summary(version),
        "assignments": version.assignments,
        "explanations": version.explanations,
        "changes": version.changes,
    }


class JobOut(Out):
    """A scheduled job: the order on a machine, with its planned window."""

    id: str
    order_id: str
    machine_id: str
    site_id: str
    planned_start: Timestamp
    planned_finish: Timestamp
    status: str


class _PlanFiguresOut(Out):
    """A plan version's own figures (the network's, shown to every plan reader)."""

    id: str
    number: int
    created_at: Timestamp
    created_by: str
    trigger: str
    reason: str
    solver: str
    status: str
    objective: int
    weighted_tardiness: int
    bound: int
    gap: float
    solve_s: float
    late: int
    unplaced: int


class PlanHistoryEntryOut(_PlanFiguresOut):
    """A plan version in the history: why it was made and what changed (for this reader)."""

    changes: list[dict[str, Any]]


class PlanOut(_PlanFiguresOut):
    """A plan version as the reader may see it (`scoped`: limited to the reader's sites)."""

    assignments: list[dict[str, Any]]
    explanations: list[dict[str, Any]]
    changes: list[dict[str, Any]]
    scoped: bool


class CollectionOut(Out):
    """A collection appointment: starting material from the patient, booked against the run's
    machine slot, with the target administration date and the hours from one to the other."""

    id: str
    order_id: str
    status: str
    collection_at: Timestamp
    machine_id: str | None
    machine: str | None
    site_id: str | None
    job_id: str | None
    run_start: Timestamp | None
    run_end: Timestamp | None
    administration_at: Timestamp | None
    collection_to_administration_h: float | None
    recorded_at: Timestamp | None
    reason: str
    # the collection happened: when, who recorded it, the family's chain identifier bound
    collected_at: Timestamp | None = None
    collected_by: str | None = None
    chain_identifier: str | None = None


class PreCollectionOut(Out):
    """A record the order's family requires before its collection, e-signed by a clinician."""

    id: str
    order_id: str
    kind: str
    reference: str
    statement: str
    recorded_at: Timestamp
    recorded_by: str
    recorded_by_name: str
    signature_id: str


class PreCollectionsOut(Out):
    """What the order's family requires before its collection, what is missing, what is on
    record."""

    order_id: str
    required: list[str]
    missing: list[str]
    records: list[PreCollectionOut]


class CollectionsOut(Out):
    """An order's collection appointments, newest first, and the open one (None: none)."""

    order_id: str
    current: CollectionOut | None
    appointments: list[CollectionOut]
