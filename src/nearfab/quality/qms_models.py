"""The network's quality system (issue 19 part 3): CAPAs, complaints, and the owner and due
date of any quality item (a deviation, a complaint, a CAPA, a change control) in one table.
States and their transitions beside them (DESIGN.md §2)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class CapaStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"  # effectiveness checked; a QP's e-signature
    CANCELLED = "cancelled"


CAPA_TRANSITIONS: dict[CapaStatus, frozenset[CapaStatus]] = {
    CapaStatus.OPEN: frozenset({CapaStatus.CLOSED, CapaStatus.CANCELLED}),
    CapaStatus.CLOSED: frozenset(),
    CapaStatus.CANCELLED: frozenset(),
}


class CapaSource(StrEnum):
    """What raised the CAPA. A proficiency suspension's CAPA names the suspension
    (comparability/, whose close_capa lifts it)."""

    DEVIATION = "deviation"
    COMPLAINT = "complaint"
    CHANGE_CONTROL = "change_control"
    PROFICIENCY_SUSPENSION = "proficiency_suspension"
    RECALL = "recall"
    AUDIT = "audit"
    OTHER = "other"


class ComplaintStatus(StrEnum):
    RECEIVED = "received"
    INVESTIGATING = "investigating"
    CLOSED = "closed"


COMPLAINT_TRANSITIONS: dict[ComplaintStatus, frozenset[ComplaintStatus]] = {
    ComplaintStatus.RECEIVED: frozenset({ComplaintStatus.INVESTIGATING}),
    ComplaintStatus.INVESTIGATING: frozenset({ComplaintStatus.CLOSED}),
    ComplaintStatus.CLOSED: frozenset(),
}


class Capa(Base):
    """A corrective and preventive action at one site (or the network: site_id None)."""

    __tablename__ = "qa_capas"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[str | None] = mapped_column(String(32), index=True)
    master_file_code: Mapped[str | None] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    source_kind: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    opened_at: Mapped[datetime]
    opened_by: Mapped[str] = mapped_column(String(64))
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(64))
    effectiveness: Mapped[str | None] = mapped_column(Text)
    signature_id: Mapped[str | None] = mapped_column(String(32))


class Complaint(Base):
    """A complaint about a product: who reported it, what, which pack or batch; investigated,
    then closed with its conclusion (and a CAPA when one was needed)."""

    __tablename__ = "qa_complaints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(32), index=True)
    master_file_code: Mapped[str | None] = mapped_column(String(64), index=True)
    batch_id: Mapped[str | None] = mapped_column(String(32))
    batch_number: Mapped[str | None] = mapped_column(String(20))
    pack_serial: Mapped[str | None] = mapped_column(String(20))
    reporter: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    received_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(64))
    investigation: Mapped[str | None] = mapped_column(Text)
    conclusion: Mapped[str | None] = mapped_column(Text)
    capa_id: Mapped[str | None] = mapped_column(String(32))
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(64))


class QaAssignment(Base):
    """Who owns a quality item and by when it is due: deviation, complaint, capa or
    change_control (one row per item; reassigning is audited)."""

    __tablename__ = "qa_assignments"
    __table_args__ = (UniqueConstraint("item_kind", "item_id", name="uq_qa_assignment_item"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    item_kind: Mapped[str] = mapped_column(String(32))
    item_id: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str] = mapped_column(String(64))  # a username
    due_date: Mapped[date]
    assigned_at: Mapped[datetime]
    assigned_by: Mapped[str] = mapped_column(String(64))
