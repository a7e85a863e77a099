"""An adverse event reported against a pack (migration 0029)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class AdverseEvent(Base):
    __tablename__ = "adverse_events"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    unit_id: Mapped[str] = mapped_column(String(32), index=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"))
    # the site that ordered the pack (the reporting clinician's or pharmacist's)
    site_id: Mapped[str] = mapped_column(String(32), index=True)
    batch_id: Mapped[str] = mapped_column(String(32), index=True)
    description: Mapped[str] = mapped_column(Text)
    # FHIR AdverseEvent.seriousness code (serious, non-serious), when given
    seriousness: Mapped[str | None] = mapped_column(String(32))
    # actual or potential (a near miss), FHIR AdverseEvent.actuality
    actuality: Mapped[str] = mapped_column(String(16))
    onset_at: Mapped[datetime | None]
    source: Mapped[str] = mapped_column(String(16))  # fhir | form
    source_id: Mapped[str | None] = mapped_column(String(128))
    raw_sha256: Mapped[str] = mapped_column(String(64))
    reported_at: Mapped[datetime]
    reported_by: Mapped[str] = mapped_column(String(64))
