"""Request bodies of the API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from nearfab.identity.schemas import ESignatureIn
from nearfab.orders import PresentedIdentifiers


class TokenIn(BaseModel):
    username: str
    password: str
    # the authenticator code, for accounts with TOTP enabled
    totp: str | None = None


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    user_id: str
    roles: list[str]


class SiteIn(BaseModel):
    code: str
    name: str
    kind: str


class SiteStatusIn(BaseModel):
    status: str
    reason: str
    regulatory_reference: str | None = None


class MachineIn(BaseModel):
    site_id: str
    name: str
    # one of the machine types a registered product family runs (its `machines` part)
    machine_type: str = Field(min_length=1, max_length=64)
    firmware: str
    serial_number: str
    adapter: str = "simulated"


class QualificationIn(BaseModel):
    master_file_code: str
    valid_until: datetime | None = None


class TrainingIn(BaseModel):
    master_file_code: str
    valid_until: datetime | None = None


class FaultIn(BaseModel):
    # one of the fault kinds of the machine's product family (checked by the family)
    kind: str = Field(min_length=1, max_length=64)
    severity: float = Field(default=0.3, ge=0, le=100)
    from_unit: int = Field(default=0, ge=0, le=100_000)


# the one e-signature input (password, meaning, username, totp); kept under its old name here
SignIn = ESignatureIn


class LotIn(BaseModel):
    lot_number: str
    material_code: str
    description: str
    site_id: str
    supplier: str
    expiry: date
    quantity_g: float
    # the lot's properties, in the schema of the family of its products (422 names the key)
    attributes: dict[str, Any]
    assay_pct: float = 100.0
    # the family the lot is for, when no master file names its material (materials.services)
    product_family: str | None = None

    @field_validator(
        "lot_number", "material_code", "description", "site_id", "supplier", "product_family"
    )
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # PostgreSQL text cannot hold NUL: refused as bad input naming the field, not a 500
        if value is not None and "\x00" in value:
            raise ValueError("text cannot hold a NUL character")
        return value


class LotStatusIn(BaseModel):
    status: str
    reason: str


class DecisionIn(ESignatureIn):
    """A QP's release or rejection: the decision, and the e-signature (`ESignatureIn`)."""

    decision: Literal["release", "reject"]
    reason: str | None = None
    # the record hash the client showed the QP (from GET /release/pending): signs only that
    record_hash: str | None = None


class PatientIdentifiersIn(BaseModel):
    """The patient at the hand-over, as the hospital knows them (docs/patient-identification.md):
    at least one of these besides `birth_date`; each one given must match. A refusal
    (409 `wrong_patient`) names the identifier that did not match, never whose it is."""

    patient_ref: str | None = Field(
        default=None, max_length=64, description="nearfab's pseudonym (PT-…)"
    )
    patient: str | None = Field(
        default=None,
        max_length=200,
        description="one identifier typed or scanned, told apart by its form: PT-… pseudonym, "
        "wristband barcode, NHS number (10 digits), else the site's hospital number",
    )
    nhs_number: str | None = Field(
        default=None, max_length=20, description="10 digits, modulus-11 check digit"
    )
    mrn: str | None = Field(
        default=None, max_length=64, description="hospital number at the order's site"
    )
    wristband: str | None = Field(
        default=None,
        max_length=200,
        description="scanned wristband: GS1 GSRN (AI 8018), or a plain NHS-number barcode",
    )
    birth_date: date | None = Field(
        default=None, description="second identifier; required where the site says so"
    )
    prescription_id: str | None = Field(
        default=None, max_length=255, description="MedicationRequest.identifier value"
    )

    def presented(self) -> PresentedIdentifiers:
        return PresentedIdentifiers(
            patient_ref=self.patient_ref,
            patient=self.patient,
            nhs_number=self.nhs_number,
            mrn=self.mrn,
            wristband=self.wristband,
            birth_date=self.birth_date,
            prescription_id=self.prescription_id,
        )


class DispenseIn(PatientIdentifiersIn):
    scan: str


class RunIn(BaseModel):
    until_idle: bool = True


Json = dict[str, Any]


class SigningPolicyIn(BaseModel):
    totp_for_signing: bool
    reason: str


class PatientIdentificationPolicyIn(BaseModel):
    """A site's positive patient identification rule (docs/patient-identification.md)."""

    birth_date_required: bool
    mrn_system: str | None = Field(
        default=None, max_length=255, description="FHIR identifier system of its MRNs"
    )
    reason: str


class ReasonIn(BaseModel):
    reason: str


class MachineStatusIn(BaseModel):
    status: str
    reason: str
