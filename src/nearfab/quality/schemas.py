"""Response schemas of quality: release reviews and the QP's release queue."""

from __future__ import annotations

from typing import Any

from nearfab.common.schemas import Out, Timestamp


class ReviewOut(Out):
    """A release review: the system's proposal and the QP's signed decision."""

    id: str
    batch_id: str
    order_id: str
    status: str
    proposed_decision: str
    reasons: list[Any]
    checks: list[Any]
    decision: str | None
    reason: str | None
    decided_by: str | None
    decided_at: Timestamp | None
    signature_id: str | None
    signature_valid: bool | None
    evaluated_record_hash: str | None


class PendingReviewOut(ReviewOut):
    """A batch waiting for a QP, as the release queue shows it."""

    batch_number: str
    site: str
    medication: str
    dose_value: float
    dose_unit: str
    units: int
    created_at: Timestamp
    record_hash: str | None
