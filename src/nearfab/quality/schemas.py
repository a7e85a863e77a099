"""Response schemas of quality: release reviews and the QP's release queue."""

from __future__ import annotations

from typing import Any

from nearfab.common.schemas import Out, Timestamp


class FollowUpResultOut(Out):
    """One signed entry of a result pending at release (a correction names what it corrects)."""

    id: str
    outcome: str
    detail: str
    entered_by: str
    entered_by_name: str
    entered_at: Timestamp
    signature_id: str
    signature_valid: bool
    corrects_id: str | None
    reason: str | None
    in_force: bool


class FollowUpOut(Out):
    """A release test whose result was pending at release: pending, passed or failed."""

    id: str
    batch_id: str
    batch_number: str
    site_id: str
    test: str
    title: str
    status: str
    opened_at: Timestamp
    deviation_id: str | None
    results: list[FollowUpResultOut]


class ExceptionalOut(Out):
    """An exceptional release: the treating physician's signed request, the QP's signature."""

    id: str
    status: str
    circumstances: str
    out_of_specification: list[str]
    requested_by: str
    requested_by_name: str
    requested_at: Timestamp
    physician_signature_id: str
    physician_signature_valid: bool
    qp_signature_id: str | None
    decided_by: str | None
    decided_at: Timestamp | None


class NoticeOut(Out):
    """A notice to the treating prescriber of a patient (e.g. a result failed after release)."""

    id: str
    kind: str
    site_id: str
    order_id: str
    patient_ref: str
    prescriber_reference: str | None
    prescriber_display: str | None
    batch_id: str
    batch_number: str
    followup_id: str | None
    deviation_id: str | None
    message: str
    created_at: Timestamp
    acknowledged_at: Timestamp | None
    acknowledged_by: str | None


class ReviewOut(Out):
    """A release review: the system's proposal and the QP's signed decision; the certificate
    names the results pending at release and says whether the release was exceptional."""

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
    # tests whose result was pending at evaluation, their follow-up after release
    pending_results: list[str]
    followups: list[FollowUpOut]
    # the physician's request (exceptional release of an out-of-specification batch)
    exceptional_release: ExceptionalOut | None


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


class LabResultOut(Out):
    """One result of the batch's laboratory testing, as its analyst entered and e-signed it
    (a correction names the result it supersedes and says why)."""

    id: str
    entry_id: str
    key: str
    version: int
    value: Any
    method: str
    entered_by: str
    entered_by_name: str
    entered_at: Timestamp
    signature_id: str
    signature_valid: bool
    supersedes_id: str | None
    reason: str | None
    in_force: bool


class LabResultsOut(Out):
    """A batch's laboratory results: the keys its product's family takes, the results in
    force, every signed result (corrections too) and the release review they feed."""

    batch_id: str
    batch_number: str
    site_id: str
    status: str
    keys: dict[str, str]
    in_force: dict[str, Any]
    results: list[LabResultOut]
    review: ReviewOut | None
