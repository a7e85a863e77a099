"""Serialised units (one patient pack each) and dispense records."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class SerialUnit(Base):
    """A pack with its GS1 identity: GTIN (01), serial (21), batch (10), expiry (17)."""

    __tablename__ = "serial_units"
    __table_args__ = (
        UniqueConstraint("gtin", "serial"),
        # a batch is serialised once, even if two workers try at the same moment
        UniqueConstraint("batch_id", "pack_index"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # optimistic locking: an update that lost a race raises instead of overwriting
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    batch_id: Mapped[str] = mapped_column(ForeignKey("batch_records.id"), index=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"))
    pack_index: Mapped[int]
    tablets: Mapped[int]
    gtin: Mapped[str] = mapped_column(String(14))
    serial: Mapped[str] = mapped_column(String(20))
    batch_number: Mapped[str] = mapped_column(String(20))
    expiry: Mapped[date]
    status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]


class Dispense(Base):
    __tablename__ = "dispenses"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("serial_units.id"), unique=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"))
    dispensed_at: Mapped[datetime]
    dispensed_by: Mapped[str] = mapped_column(String(64))
    site_id: Mapped[str | None] = mapped_column(String(32))
