"""Proficiency rounds, their results and the suspensions they cause."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class ProficiencyRound(Base):
    """Blind reference samples (or reference prints) the control site sent to sites; scored
    with ISO 13528 z-scores once the results are in."""

    __tablename__ = "proficiency_rounds"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    master_file_code: Mapped[str] = mapped_column(String(64), index=True)
    attribute: Mapped[str] = mapped_column(String(64))
    unit: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(Text)  # what was sent (the blind sample's label)
    site_ids: Mapped[list[Any]]
    # a known reference value and a fitness-for-purpose σ_pt, or None: Algorithm A's x*, s*
    assigned_value: Mapped[float | None]
    sd_pt: Mapped[float | None]
    status: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime]
    opened_by: Mapped[str] = mapped_column(String(64))
    scored_at: Mapped[datetime | None]
    scored_by: Mapped[str | None] = mapped_column(String(64))
    robust_mean: Mapped[float | None]
    robust_sd: Mapped[float | None]


class ProficiencyResult(Base):
    __tablename__ = "proficiency_results"
    __table_args__ = (UniqueConstraint("round_id", "site_id", name="uq_proficiency_result_site"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    round_id: Mapped[str] = mapped_column(ForeignKey("proficiency_rounds.id"), index=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    value: Mapped[float]
    entered_at: Mapped[datetime]
    entered_by: Mapped[str] = mapped_column(String(64))
    z: Mapped[float | None]
    verdict: Mapped[str | None] = mapped_column(String(16))


class Suspension(Base):
    """A site may not make a master file until the CAPA of its unsatisfactory result closes."""

    __tablename__ = "proficiency_suspensions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    master_file_code: Mapped[str] = mapped_column(String(64), index=True)
    round_id: Mapped[str] = mapped_column(ForeignKey("proficiency_rounds.id"))
    z: Mapped[float]
    status: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime]
    capa_reference: Mapped[str | None] = mapped_column(String(100))
    capa_summary: Mapped[str | None] = mapped_column(Text)
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(64))
    signature_id: Mapped[str | None] = mapped_column(String(32))
