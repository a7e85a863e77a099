"""Monitoring models (versioned, approved before use) and alarms."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class MonitoringModel(Base):
    """An SPC or MSPC model for one product (master-file code) on one machine type."""

    __tablename__ = "monitoring_models"
    __table_args__ = (
        UniqueConstraint(
            "kind", "master_file_code", "machine_type", "version", name="uq_mon_model"
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    master_file_code: Mapped[str] = mapped_column(String(64), index=True)
    machine_type: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    metrics: Mapped[list[Any]]  # variable order the model expects
    params: Mapped[dict[str, Any]]  # the fitted model (JSON), hashed into the approval
    training: Mapped[dict[str, Any]]  # runs used, sample count, fingerprint
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    approved_at: Mapped[datetime | None]
    approved_by: Mapped[str | None] = mapped_column(String(64))
    approval_signature_id: Mapped[str | None] = mapped_column(String(32))
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012

    def content(self) -> dict[str, Any]:
        """What an approval signature is bound to."""
        return {
            "id": self.id,
            "kind": self.kind,
            "master_file_code": self.master_file_code,
            "machine_type": self.machine_type,
            "version": self.version,
            "metrics": self.metrics,
            "params": self.params,
            "training": self.training,
        }


class Alarm(Base):
    """A rule violation on a machine, linked to its run and batch. Repeats of the same rule on
    the same run raise the count instead of a new alarm, so one fault is one thing to handle."""

    __tablename__ = "alarms"
    __table_args__ = (Index("ix_alarms_run_status", "run", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # spc | mspc | telemetry
    rule: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    site_id: Mapped[str] = mapped_column(String(32), index=True)
    machine_id: Mapped[str] = mapped_column(String(32), index=True)
    run: Mapped[str | None] = mapped_column(String(64))
    batch_id: Mapped[str | None] = mapped_column(String(32), index=True)
    metric: Mapped[str | None] = mapped_column(String(64))
    model_id: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    limit: Mapped[float | None] = mapped_column(Float)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]
    count: Mapped[int] = mapped_column(Integer)
    details: Mapped[dict[str, Any]]  # e.g. variable contributions of an MSPC alarm
    raised_at: Mapped[datetime]
    disposition: Mapped[str | None] = mapped_column(String(32))
    disposition_note: Mapped[str | None] = mapped_column(Text)
    closed_by: Mapped[str | None] = mapped_column(String(64))
    closed_at: Mapped[datetime | None]
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012

    def describe(self) -> str:
        return f"{self.severity} {self.source} {self.rule}: {self.message}"
