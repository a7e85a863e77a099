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


class RunSummaryOut(Out):
    """What one run of the simulated network moved on, and what waits for people (and why)."""

    rounds: int
    scheduled: list[str]
    tickets: list[str]
    batches_completed: list[str]
    batches_failed: list[str]
    batches_orphaned: list[str]
    blocked: dict[str, str]
