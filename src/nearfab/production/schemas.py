"""Response schemas of production: the electronic batch record and the batch routes' answers."""

from __future__ import annotations

from typing import Any

from nearfab.common.schemas import Out, Timestamp


class BatchSiteOut(Out):
    id: str
    code: str
    name: str


class BatchMachineOut(Out):
    id: str
    name: str
    firmware: str


class BatchLotOut(Out):
    id: str
    lot_number: str
    used_g: float


class BatchOperatorOut(Out):
    id: str
    name: str


class BatchStepOut(Out):
    seq: int
    name: str
    at: Timestamp
    actor: str
    detail: dict[str, Any] | None


class DeviationOut(Out):
    id: str
    kind: str
    description: str
    status: str
    closure_note: str | None


class BatchStartedOut(Out):
    id: str
    batch_number: str
    status: str
    machine_id: str
    material_lot_number: str


class BatchAbandonedOut(Out):
    id: str
    batch_number: str
    status: str
    failure_reason: str | None


class SignedTicketOut(Out):
    """A job ticket signed by the control site (Ed25519 over the canonical JSON payload)."""

    payload: dict[str, Any]
    signature: str
    key_id: str


class BuildAwaitingOut(Out):
    """A planned build waiting for the control site's approval (production.services
    ticketing): what will be made where, and the role that approves it."""

    job_id: str
    order_id: str
    site_code: str
    site_kind: str
    machine_name: str
    master_file: str
    design: str
    approver: str
    planned_start: Timestamp | None
    may_approve: bool


class RunSummaryOut(Out):
    """What one run of the simulated network moved on, and what waits for people (and why)."""

    rounds: int
    scheduled: list[str]
    tickets: list[str]
    batches_completed: list[str]
    batches_failed: list[str]
    batches_orphaned: list[str]
    blocked: dict[str, str]
