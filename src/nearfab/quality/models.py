"""Release reviews (RTRT proposal + QP decision) and deviations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class ReleaseReview(Base):
    __tablename__ = "release_reviews"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # optimistic locking: an update that lost a race raises instead of overwriting
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    batch_id: Mapped[str] = mapped_column(ForeignKey("batch_records.id"), unique=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    proposed_decision: Mapped[str] = mapped_column(String(32))
    proposal: Mapped[dict[str, Any]]
    # hash of the batch record the RTRT rule evaluated: a QP decision on anything else is refused
    record_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime]
    decision: Mapped[str | None] = mapped_column(String(32))
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    signature_id: Mapped[str | None] = mapped_column(String(32))


class Deviation(Base):
    __tablename__ = "deviations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batch_records.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))
    opened_at: Mapped[datetime]
    opened_by: Mapped[str] = mapped_column(String(64))
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(64))
    closure_note: Mapped[str | None] = mapped_column(Text)
    # the master-file step this deviation lets be skipped (signed out of sequence), if any
    step_code: Mapped[str | None] = mapped_column(String(32))


class AuditTrailReview(Base):
    """A QP's signed "audit trail reviewed" for one batch, bound to the hash of the batch's
    audit rows (the batch, its job, order, release review, steps and deviations) up to
    `last_audit_id`. A later change to those rows makes it stale (quality-and-release.md)."""

    __tablename__ = "audit_trail_reviews"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batch_records.id"), index=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    reviewed_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    reviewed_by_name: Mapped[str] = mapped_column(String(200))
    reviewed_at: Mapped[datetime]
    last_audit_id: Mapped[int]
    row_count: Mapped[int]
    trail_hash: Mapped[str] = mapped_column(String(64))
    signature_id: Mapped[str] = mapped_column(String(32))


class ReleaseFollowUp(Base):
    """A release test whose result was pending when the QP certified the batch: followed up
    until its result is entered (e-signed). A pass closes it; a fail opens an investigation
    (a deviation) and notifies the prescriber of every patient who received the batch."""

    __tablename__ = "release_followups"
    __table_args__ = (UniqueConstraint("batch_id", "test", name="uq_release_followups_test"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # optimistic locking: two results entered at once cannot both win
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    batch_id: Mapped[str] = mapped_column(ForeignKey("batch_records.id"), index=True)
    review_id: Mapped[str] = mapped_column(ForeignKey("release_reviews.id"))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    test: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | passed | failed
    opened_at: Mapped[datetime]
    # the result now in force (the latest entry or correction), and the investigation a fail
    # opened
    result_id: Mapped[str | None] = mapped_column(String(32))
    deviation_id: Mapped[str | None] = mapped_column(String(32))


class FollowUpResult(Base):
    """One signed entry of a followed-up result: the first, or a correction of the one before
    (with its reason). Never updated: a correction is a new row."""

    __tablename__ = "release_followup_results"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    followup_id: Mapped[str] = mapped_column(ForeignKey("release_followups.id"), index=True)
    outcome: Mapped[str] = mapped_column(String(8))  # pass | fail
    detail: Mapped[str] = mapped_column(Text)
    entered_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    entered_by_name: Mapped[str] = mapped_column(String(200))
    entered_at: Mapped[datetime]
    signature_id: Mapped[str] = mapped_column(String(32))
    corrects_id: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)

    def content(self) -> dict[str, Any]:
        """What the person entering the result signs."""
        return {
            "followup_id": self.followup_id,
            "outcome": self.outcome,
            "detail": self.detail,
            "corrects_id": self.corrects_id,
            "reason": self.reason,
        }


class PrescriberNotice(Base):
    """A notice to the treating prescriber of a patient (the clinicians of the ordering site
    read it on their dashboard and through the API, and acknowledge it)."""

    __tablename__ = "prescriber_notices"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    kind: Mapped[str] = mapped_column(String(32))
    # the ordering site: its clinicians see the notice
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"))
    patient_ref: Mapped[str] = mapped_column(String(32))
    prescriber_reference: Mapped[str | None] = mapped_column(String(200))
    prescriber_display: Mapped[str | None] = mapped_column(String(200))
    batch_id: Mapped[str] = mapped_column(ForeignKey("batch_records.id"))
    batch_number: Mapped[str] = mapped_column(String(64))
    followup_id: Mapped[str | None] = mapped_column(String(32))
    deviation_id: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))


class ExceptionalRelease(Base):
    """The release of an out-of-specification batch at the treating physician's request under
    exceptional circumstances: the physician's signed request, then the QP's signed release.
    Without both, no release."""

    __tablename__ = "exceptional_releases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    batch_id: Mapped[str] = mapped_column(ForeignKey("batch_records.id"), unique=True)
    review_id: Mapped[str] = mapped_column(ForeignKey("release_reviews.id"))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))  # the batch's
    order_site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))  # the patient's
    status: Mapped[str] = mapped_column(String(16))  # requested | released | closed
    circumstances: Mapped[str] = mapped_column(Text)
    out_of_specification: Mapped[list[Any]]  # the failed tests' names
    requested_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    requested_by_name: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime]
    physician_signature_id: Mapped[str] = mapped_column(String(32))
    qp_signature_id: Mapped[str | None] = mapped_column(String(32))
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]

    def request_content(self) -> dict[str, Any]:
        """What the physician signs: the batch, its failed tests and the circumstances."""
        return {
            "batch_id": self.batch_id,
            "review_id": self.review_id,
            "out_of_specification": list(self.out_of_specification),
            "circumstances": self.circumstances,
        }


class LabResult(Base):
    """One result of a batch's laboratory testing (test key -> value, as the product's family
    validated it), entered and e-signed by the analyst (one signature per entry, which may hold
    several results: `entry_id`). Never updated: a correction is a new row naming the one it
    supersedes, with its reason; the batch record's measurement document is never touched."""

    __tablename__ = "lab_results"
    __table_args__ = (
        # one row per version of a key: two entries of the same key at once cannot both win
        UniqueConstraint("batch_id", "key", "version", name="uq_lab_results_version"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    entry_id: Mapped[str] = mapped_column(String(32), index=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batch_records.id"), index=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    key: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]  # 1 for the first result of the key, +1 per correction
    value: Mapped[Any] = mapped_column(JSON, nullable=False)
    method: Mapped[str] = mapped_column(Text)  # the method or reference the analyst names
    entered_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    entered_by_name: Mapped[str] = mapped_column(String(200))
    entered_at: Mapped[datetime]
    signature_id: Mapped[str] = mapped_column(String(32))
    supersedes_id: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
