"""Jobs: an order's work planned on one machine."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
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


class PlanVersion(Base):
    """One stored network plan: every assignment, why late orders are late, what changed."""

    __tablename__ = "plan_versions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    number: Mapped[int] = mapped_column(unique=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    solver: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    objective: Mapped[int]
    weighted_tardiness: Mapped[int]
    bound: Mapped[int]
    gap: Mapped[float]
    solve_s: Mapped[float]
    fingerprint: Mapped[str] = mapped_column(String(64))
    assignments: Mapped[list[Any]]
    explanations: Mapped[list[Any]]
    changes: Mapped[list[Any]]
    inputs: Mapped[dict[str, Any]]


class MachineDowntime(Base):
    """A period a machine cannot run (maintenance window, calibration): its calendar."""

    __tablename__ = "machine_downtimes"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), index=True)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))


class OperatorShift(Base):
    """An operator on shift at a site. A site with no shifts recorded is staffed at all times."""

    __tablename__ = "operator_shifts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]


class TransportTime(Base):
    """Minutes from a site to a delivery location (a site code or a named place)."""

    __tablename__ = "transport_times"
    __table_args__ = (UniqueConstraint("site_id", "destination"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    destination: Mapped[str] = mapped_column(String(64))
    minutes: Mapped[int]


class OrderPlanning(Base):
    """An order's planning attributes: priority and where the patient takes delivery."""

    __tablename__ = "order_planning"

    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), primary_key=True)
    priority: Mapped[str] = mapped_column(String(16))
    deliver_to: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime]


class CollectionAppointment(Base):
    """Starting material collected from the patient for one run (a product whose family needs
    a collection): booked against the machine slot, with the target administration date.
    `booked`: the run is planned; `requested`: a collection date is recorded but no slot is
    booked yet; `run_failed` / `cancelled`: closed (a failed run needs a new collection)."""

    __tablename__ = "collection_appointments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    collection_at: Mapped[datetime]
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"))
    machine_id: Mapped[str | None] = mapped_column(ForeignKey("machines.id"))
    site_id: Mapped[str | None] = mapped_column(ForeignKey("sites.id"))
    run_start: Mapped[datetime | None]
    run_end: Mapped[datetime | None]
    administration_at: Mapped[datetime | None]
    recorded_at: Mapped[datetime | None]  # a person recorded the date (a slip): plan input
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime]
    # the collection happened (0025): when, who recorded it, and the family's chain
    # identifier scanned from the collection's label (None: the family has none)
    collected_at: Mapped[datetime | None]
    collected_by: Mapped[str | None] = mapped_column(String(64))
    chain_identifier: Mapped[str | None] = mapped_column(String(64))


class PreCollectionRecord(Base):
    """A record the order's family requires before its collection (e.g. the patient's
    eligibility, the patient's informed consent), e-signed by a clinician of the ordering site
    with a reference to the document it rests on (the consent form and its version)."""

    __tablename__ = "pre_collection_records"
    __table_args__ = (UniqueConstraint("order_id", "kind", name="uq_pre_collection_kind"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(200))
    statement: Mapped[str] = mapped_column(Text)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(64))
    recorded_by_name: Mapped[str] = mapped_column(String(200))
    signature_id: Mapped[str] = mapped_column(String(32))

    def signed_content(self) -> dict[str, Any]:
        """What the clinician's signature binds."""
        return {
            "id": self.id,
            "order_id": self.order_id,
            "kind": self.kind,
            "reference": self.reference,
            "statement": self.statement,
            "recorded_by": self.recorded_by,
        }
