"""Response schemas of production: the electronic batch record and the batch routes' answers."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from nearfab.common.schemas import Out, Timestamp


class BatchSiteOut(Out):
    model_config = ConfigDict(extra="forbid")
    id: str
    code: str
    name: str


class BatchMachineOut(Out):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    firmware: str


class BatchLotOut(Out):
    model_config = ConfigDict(extra="forbid")
    id: str
    lot_number: str
    used_g: float


class BatchOperatorOut(Out):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str


class BatchStepOut(Out):
    model_config = ConfigDict(extra="forbid")
    seq: int
    name: str
    at: Timestamp
    actor: str
    detail: dict[str, Any] | None


class DeviationOut(Out):
    model_config = ConfigDict(extra="forbid")
    id: str
    kind: str
    description: str
    status: str
    closure_note: str | None


class BatchStartedOut(Out):
    model_config = ConfigDict(extra="forbid")
    id: str
    batch_number: str
    status: str
    machine_id: str
    material_lot_number: str


class BatchAbandonedOut(Out):
    model_config = ConfigDict(extra="forbid")
    id: str
    batch_number: str
    status: str
    failure_reason: str | None


class SignedTicketOut(Out):
    """A job ticket signed by the control site (Ed25519 over the canonical JSON payload)."""

    model_config = ConfigDict(extra="forbid")
    payload: dict[str, Any]
    signature: str
    key_id: str


class RunSummaryOut(Out):
    """What one run of the simulated network moved on, and what waits for people (and why)."""

    model_config = ConfigDict(extra="forbid")
    rounds: int
    scheduled: list[str]
    tickets: list[str]
    batches_completed: list[str]
    batches_failed: list[str]
    batches_orphaned: list[str]
    blocked: dict[str, str]
