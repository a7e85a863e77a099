"""Sites, machines, machine qualification and operator training per master file."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # optimistic locking: an update that lost a race raises instead of overwriting
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    regulatory_reference: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    # e-signatures on this site's records need a TOTP code as well (accounts-and-signatures.md)
    totp_for_signing: Mapped[bool] = mapped_column(default=False, server_default=false())
    # positive patient identification (docs/patient-identification.md): the birth date must
    # agree as well as the identifier at dispense and at the bedside; the FHIR identifier
    # system of this site's hospital numbers (MRN), besides identifiers typed MR
    birth_date_required: Mapped[bool] = mapped_column(default=False, server_default=false())
    mrn_system: Mapped[str | None] = mapped_column(String(255))


class Machine(Base):
    __tablename__ = "machines"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # optimistic locking: an update that lost a race raises instead of overwriting
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    name: Mapped[str] = mapped_column(String(200))
    machine_type: Mapped[str] = mapped_column(String(64))
    firmware: Mapped[str] = mapped_column(String(64))
    serial_number: Mapped[str] = mapped_column(String(64))
    # "simulated" for a digital twin; "mqtt" for a real machine behind a site gateway
    adapter: Mapped[str] = mapped_column(String(32), default="simulated")
    status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]


class Qualification(Base):
    """A machine qualified (IQ/OQ/PQ) to make the product of one master file code."""

    __tablename__ = "machine_qualifications"
    __table_args__ = (UniqueConstraint("machine_id", "master_file_code"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"))
    master_file_code: Mapped[str] = mapped_column(String(64))
    qualified_at: Mapped[datetime]
    qualified_by: Mapped[str] = mapped_column(String(64))
    valid_until: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(default=False)


class Training(Base):
    """An operator's competency on one master file code."""

    __tablename__ = "operator_training"
    __table_args__ = (UniqueConstraint("user_id", "master_file_code"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    master_file_code: Mapped[str] = mapped_column(String(64))
    trained_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(64))
    valid_until: Mapped[datetime | None]
