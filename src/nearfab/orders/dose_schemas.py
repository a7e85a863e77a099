"""Typed answers of dose adjustment (API, pages, CLI --json alike); docs/dose-adjustment.md."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from nearfab.common.schemas import Out, Timestamp
from nearfab.identity import ESignatureIn


class ObservationOut(Out):
    id: str
    patient_id: str
    order_id: str
    site_id: str
    system: str
    code: str
    display: str | None
    value: float
    unit: str
    effective_at: Timestamp
    source_id: str | None
    recorded_at: Timestamp
    recorded_by: str


class DoseProposalOut(Out):
    id: str
    order_id: str
    site_id: str
    master_file_id: str
    status: str
    current_value: float
    current_unit: str
    proposed_value: float
    proposed_unit: str
    rule: dict[str, Any]
    working: dict[str, Any]
    observation_ids: list[str]
    created_at: Timestamp
    created_by: str
    decided_at: Timestamp | None
    decided_by: str | None
    decision_reason: str | None
    signature_id: str | None
    new_order_id: str | None


class ObservationsRecordedOut(Out):
    """What recording observations did: the rows kept, and the proposal the master file's rule
    made from them (None, with `note` saying why, when it made none)."""

    observations: list[ObservationOut]
    proposal: DoseProposalOut | None
    note: str | None


class DoseDecisionIn(ESignatureIn):
    """A clinician's e-signed decision on a proposal; a rejection needs its reason."""

    meaning: str = Field(
        default="dose decision", description="What the signature means, e.g. 'dose accepted'"
    )
    reason: str | None = Field(default=None, max_length=2000)
