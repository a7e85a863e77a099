"""Jobs: an order's work planned on one machine."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # optimistic locking: an update that lost a race raises instead of overwriting
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), index=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    material_lot_id: Mapped[str] = mapped_column(ForeignKey("material_lots.id"))
    planned_start: Mapped[datetime]
    planned_finish: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(32), index=True)
    ticket: Mapped[dict[str, Any] | None]
    ticket_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
