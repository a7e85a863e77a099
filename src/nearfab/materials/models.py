"""Material lots held at sites."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class MaterialLot(Base):
    __tablename__ = "material_lots"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # optimistic locking: an update that lost a race raises instead of overwriting
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    lot_number: Mapped[str] = mapped_column(String(64), unique=True)
    material_code: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(200))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    supplier: Mapped[str] = mapped_column(String(200))
    expiry: Mapped[date]
    status: Mapped[str] = mapped_column(String(32))
    quantity_g: Mapped[float]
    # the lot's properties as its product family defines and checks them (materials.services)
    attributes: Mapped[dict[str, Any]]
    assay_pct: Mapped[float]
    received_at: Mapped[datetime]
