"""Observations of a patient over time, and the dose proposals made from them (0027)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class PatientObservation(Base):
    """One measurement of the pseudonymous patient (FHIR Observation), recorded against one of
    their orders (whose site's staff recorded it)."""

    __tablename__ = "patient_observations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    site_id: Mapped[str] = mapped_column(String(32))
    system: Mapped[str] = mapped_column(String(255))
    code: Mapped[str] = mapped_column(String(64))
    display: Mapped[str | None] = mapped_column(String(200))
    value: Mapped[float]
    unit: Mapped[str] = mapped_column(String(32))
    effective_at: Mapped[datetime]
    source_id: Mapped[str | None] = mapped_column(String(128))
    raw_sha256: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(64))


class DoseProposal(Base):
    """A dose the master file's rule gives from the patient's observations. It changes
    nothing by itself: a clinician accepts it (e-signed: a new version of the order) or rejects
    it (e-signed, with the reason)."""

    __tablename__ = "dose_proposals"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"))
    site_id: Mapped[str] = mapped_column(String(32), index=True)
    master_file_id: Mapped[str] = mapped_column(String(32))
    # proposed -> accepted | rejected | superseded (a newer proposal for the same order)
    status: Mapped[str] = mapped_column(String(16), index=True)
    current_value: Mapped[float]
    current_unit: Mapped[str] = mapped_column(String(32))
    proposed_value: Mapped[float]
    proposed_unit: Mapped[str] = mapped_column(String(32))
    rule: Mapped[dict[str, Any]]
    working: Mapped[dict[str, Any]]
    observation_ids: Mapped[list[Any]]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    signature_id: Mapped[str | None] = mapped_column(String(32))
    # the order's new version, made when the proposal was accepted
    new_order_id: Mapped[str | None] = mapped_column(String(32))
