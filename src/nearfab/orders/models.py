"""Patients (pseudonymised, identity kept apart and encrypted), prescriptions and orders."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.common.quantity import Quantity
from nearfab.db import Base


class Patient(Base):
    """The pseudonymous patient every other record points at."""

    __tablename__ = "patients"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    # keyed hash of the source identifiers: finds the same patient again without storing them
    lookup_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]


class PatientIdentity(Base):
    """Identifying data (name, NHS number, birth date), encrypted, in a table of its own."""

    __tablename__ = "patient_identities"

    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), primary_key=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime]


class PatientIdentifierHash(Base):
    """A keyed hash of one identifier the hospital knows the patient by (NHS number, MRN of a
    site, wristband GSRN, birth date, prescription ID): matched at dispense and at the
    bedside without the identifier ever being stored in clear (docs/patient-identification.md).
    """

    __tablename__ = "patient_identifier_hashes"
    __table_args__ = (Index("ix_patient_identifier_hashes_kind_hash", "kind", "hash"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    # nhs_number, mrn, wristband (GSRN), birth_date, prescription_id (IdentifierKind)
    kind: Mapped[str] = mapped_column(String(16))
    # the site whose hospital number it is (MRN only: an MRN means nothing at another site)
    site_id: Mapped[str | None] = mapped_column(String(32))
    # the prescription it identifies (prescription_id only)
    prescription_id: Mapped[str | None] = mapped_column(String(32))
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class Prescription(Base):
    __tablename__ = "prescriptions"
    # the same prescription (identifier system + value) for the same patient is taken once;
    # a resubmission after its order was cancelled is the next `resubmission` (0013)
    __table_args__ = (
        Index(
            "uq_prescriptions_identifier",
            "patient_id",
            "identifier_system",
            "identifier_value",
            "resubmission",
            unique=True,
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    source_id: Mapped[str | None] = mapped_column(String(128))
    # the MedicationRequest's business identifier (its first identifier with a system)
    identifier_system: Mapped[str | None] = mapped_column(String(255))
    identifier_value: Mapped[str | None] = mapped_column(String(255))
    resubmission: Mapped[int] = mapped_column(default=0, server_default="0")
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"))
    received_at: Mapped[datetime]
    received_by: Mapped[str] = mapped_column(String(64))
    prescriber_reference: Mapped[str | None] = mapped_column(String(200))
    prescriber_display: Mapped[str | None] = mapped_column(String(200))
    authored_on: Mapped[datetime | None]
    medication_codes: Mapped[list[Any]]
    medication_text: Mapped[str | None] = mapped_column(Text)
    dose_value: Mapped[float]
    dose_unit: Mapped[str] = mapped_column(String(32))
    doses_per_day: Mapped[float | None]
    quantity_value: Mapped[float | None]
    quantity_unit: Mapped[str | None] = mapped_column(String(32))
    supply_days: Mapped[float | None]
    # the FHIR resource as received holds identifying data: kept encrypted, with its hash
    raw_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    raw_sha256: Mapped[str] = mapped_column(String(64))


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # optimistic locking: an update that lost a race raises instead of overwriting
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    prescription_id: Mapped[str] = mapped_column(ForeignKey("prescriptions.id"))
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"))
    # the site that ordered it: every order has one (0013); site staff see their own site's
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    # the cancelled order this one submits again (an explicit, audited resubmission)
    resubmit_of: Mapped[str | None] = mapped_column(String(32))
    # a dose adjusted from the patient's observations, accepted by a clinician, is a new version
    # of the order (0027): it supersedes this order for the batches still to come
    supersedes: Mapped[str | None] = mapped_column(String(32))
    prescription_version: Mapped[int] = mapped_column(default=1, server_default="1")
    master_file_id: Mapped[str] = mapped_column(ForeignKey("master_files.id"))
    master_file_code: Mapped[str] = mapped_column(String(64))
    master_file_version: Mapped[int]
    product_family: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), index=True)
    medication: Mapped[str] = mapped_column(String(200))
    # the dose as the product family accepted it (0016): a value with its unit
    dose_value: Mapped[float]
    dose_unit: Mapped[str] = mapped_column(String(32))
    doses_per_day: Mapped[float | None]
    units: Mapped[int]
    patient_group: Mapped[str | None] = mapped_column(String(32))
    design: Mapped[dict[str, Any] | None]
    stop_reason: Mapped[str | None] = mapped_column(Text)
    need_by: Mapped[datetime]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    @property
    def dose(self) -> Quantity:
        """The dose per unit, with its unit, as the product family accepted it."""
        return Quantity(self.dose_value, self.dose_unit)
