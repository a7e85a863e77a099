"""Release reviews (RTRT proposal + QP decision) and deviations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
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
