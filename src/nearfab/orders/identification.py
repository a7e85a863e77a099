"""Positive patient identification: the identifiers a hospital knows a patient by, matched
against an order's pseudonymous patient through keyed hashes (docs/patient-identification.md).

At intake (`record`) a keyed hash (the vault's look-up key) of each identifier the prescription
carries is stored: the NHS number, the ordering site's hospital number (MRN), a wristband GSRN,
the birth date (hashed with the patient's id, so equal birth dates do not link patients) and
the MedicationRequest's identifiers. No identifier is stored in clear outside the vault.

At dispense and at the bedside (`match`) the identifiers presented are read and checked
(identifiers.py), hashed the same way, and compared with the order's patient's hashes. A
patient taken in before the hashes existed (migration 0024) is matched from its encrypted
identity instead, read in memory and never written back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.identity import Actor, Permission, audit, authorize, can
from nearfab.network.reads import sites_by_id
from nearfab.orders.fhir import PrescriptionIn
from nearfab.orders.identifiers import (
    GSRN_SYSTEMS,
    NHS_NUMBER_SYSTEMS,
    IdentifierKind,
    Wristband,
    classify,
    normalise_birth_date,
    normalise_gsrn,
    normalise_mrn,
    normalise_nhs_number,
    normalise_prescription_id,
    parse_wristband,
)
from nearfab.orders.models import (
    Order,
    Patient,
    PatientIdentifierHash,
    PatientIdentity,
    Prescription,
)
from nearfab.orders.vault import IdentityVault
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.network import Site

K = IdentifierKind
# what a refusal calls each identifier (it names the identifier, never the patient)
_WORDS = {
    K.PSEUDONYM: "the patient reference",
    K.NHS_NUMBER: "the NHS number",
    K.MRN: "the hospital number (MRN)",
    K.GSRN: "the wristband",
    K.BIRTH_DATE: "the date of birth",
    K.PRESCRIPTION: "the prescription ID",
}
_PRIMARY_FIELDS = (K.PSEUDONYM, K.NHS_NUMBER, K.MRN, K.GSRN, K.PRESCRIPTION)


@dataclass(frozen=True)
class PresentedIdentifiers:
    """What the person at the hand-over has: any of these, at least one besides the birth date.

    `patient`: one typed or scanned identifier told apart by its form (identifiers.classify:
    "PT-…" pseudonym, a wristband barcode, a 10-digit NHS number, else the site's MRN).
    `patient_ref`: nearfab's pseudonym; anything else given there is read as `patient` is
    (callers that only knew the pseudonym field keep working with an NHS number).
    `wristband`: a scanned wristband (GS1 AI 8018 GSRN, or a plain NHS-number barcode).
    `birth_date`: a date or "YYYY-MM-DD"; the second identifier a site may require."""

    patient_ref: str | None = None
    nhs_number: str | None = None
    mrn: str | None = None
    wristband: str | None = None
    birth_date: date | str | None = None
    prescription_id: str | None = None
    patient: str | None = None

    def given(self) -> bool:
        return any(
            v not in (None, "")
            for v in (
                self.patient_ref,
                self.nhs_number,
                self.mrn,
                self.wristband,
                self.birth_date,
                self.prescription_id,
                self.patient,
            )
        )


@dataclass(frozen=True)
class PatientMatch:
    """The answer of `OrderService.match_patient`. `failed` is the field of the first
    identifier that did not match (or that the site requires and was not given); `message`
    names that identifier, never the patient it belongs to. `identity` (name, birth_date) is
    there only on a match and only for a role that may see identity, to confirm by eye."""

    matched: bool
    order_id: str
    checked: tuple[str, ...]
    failed: str | None = None
    message: str = ""
    identity: dict[str, Any] | None = field(default=None)
    # why not: `wrong_patient` (an identifier did not match) or `birth_date_required` (the
    # site requires the birth date as a second identifier and none was given)
    code: str | None = None

    def require(self) -> None:
        """Raise Refused (`code`, field = the identifier) unless matched."""
        if not self.matched:
            raise Refused(
                self.message, field=self.failed or "patient", code=self.code or "wrong_patient"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "checked": list(self.checked),
            "failed": self.failed,
            "message": self.message,
            "identity": self.identity,
            "code": self.code,
        }


def _parse(presented: PresentedIdentifiers) -> list[tuple[IdentifierKind, Any]]:
    """Each presented identifier read and checked (ValidationFailed names its field)."""
    out: list[tuple[IdentifierKind, Any]] = []
    if presented.patient and presented.patient.strip():
        kind, value = classify(presented.patient, field="patient")
        out.append((kind, Wristband(kind, value) if kind == K.GSRN else value))
    ref = (presented.patient_ref or "").strip()
    if ref.upper().startswith("PT-"):
        out.append((K.PSEUDONYM, ref))
    elif ref:  # what was typed where the pseudonym used to go: read by its form, as `patient`
        kind, value = classify(ref, field="patient_ref")
        out.append((kind, Wristband(kind, value) if kind == K.GSRN else value))
    if presented.nhs_number and presented.nhs_number.strip():
        out.append((K.NHS_NUMBER, normalise_nhs_number(presented.nhs_number)))
    if presented.mrn and presented.mrn.strip():
        out.append((K.MRN, normalise_mrn(presented.mrn)))
    if presented.wristband and presented.wristband.strip():
        # a plain NHS-number barcode is compared as an NHS number, refused as the wristband
        out.append((K.GSRN, parse_wristband(presented.wristband)))
    if presented.prescription_id and presented.prescription_id.strip():
        out.append((K.PRESCRIPTION, normalise_prescription_id(presented.prescription_id)))
    if presented.birth_date not in (None, ""):
        assert presented.birth_date is not None
        out.append((K.BIRTH_DATE, normalise_birth_date(presented.birth_date)))
    return out


def _gsrn_in(system: str, value: str) -> str | None:
    """The GSRN a FHIR Patient.identifier holds, if it holds one (see `_facts`)."""
    text = value.strip()
    named = system in GSRN_SYSTEMS or "gsrn" in system.lower()
    try:
        if text.startswith(("(8018)", "]d2", "]C1", "]Q3")) or (
            text.startswith("8018") and len(text) == 22
        ):
            band = parse_wristband(text)
            return band.value if band.kind == K.GSRN else None
        if named or (len(text) == 18 and text.isascii() and text.isdigit()):
            return normalise_gsrn(text)
    except ValidationFailed:
        return None
    return None


class PatientIdentification:
    """Keyed hashes of patient identifiers: stored at intake, matched at the hand-over."""

    def __init__(self, vault: IdentityVault) -> None:
        self._vault = vault

    # --- the hashes -----------------------------------------------------------------------
    def _hash(self, kind: IdentifierKind, value: str, scope: str = "") -> str:
        return self._vault.lookup_hash(f"patient-id|{kind.value}|{scope}|{value}")

    def _facts(
        self,
        patient_id: str,
        site: Site | None,
        identifiers: tuple[str, ...],
        mrns: tuple[str, ...],
        birth_date: date | None,
    ) -> set[tuple[str, str | None, str]]:
        """(kind, site_id, hash) of a patient's identifiers, as FHIR gave them: the NHS number
        (in an NHS number system), the wristband GSRN (in a GSRN system, or a value that is
        one: 18 digits with a good GS1 check digit, or an AI 8018 element string), and the
        ordering site's hospital number: an identifier typed MR, and, unless the site names
        its MRN system (then only identifiers in that system), any other identifier."""
        out: set[tuple[str, str | None, str]] = set()
        mrn_values: list[str] = [m.partition("|")[2] for m in mrns]
        for joined in identifiers:
            system, _, value = joined.partition("|")
            if system in NHS_NUMBER_SYSTEMS:
                try:
                    number = normalise_nhs_number(value)
                except ValidationFailed:
                    continue  # an invalid NHS number can never be presented validly
                out.add((K.NHS_NUMBER, None, self._hash(K.NHS_NUMBER, number)))
                continue
            gsrn = _gsrn_in(system, value)
            if gsrn is not None:
                out.add((K.GSRN, None, self._hash(K.GSRN, gsrn)))
            elif site is not None and (not site.mrn_system or system == site.mrn_system):
                mrn_values.append(value)
        if site is not None:
            for value in mrn_values:
                try:
                    mrn = normalise_mrn(value)
                except ValidationFailed:
                    continue
                out.add((K.MRN, site.id, self._hash(K.MRN, mrn, site.id)))
        if birth_date is not None:
            out.add(
                (K.BIRTH_DATE, None, self._hash(K.BIRTH_DATE, birth_date.isoformat(), patient_id))
            )
        return out

    def record(
        self,
        uow: UnitOfWork,
        patient: Patient,
        prescription: Prescription,
        rx: PrescriptionIn,
        site_id: str,
    ) -> None:
        """At intake, in the caller's transaction: the hashes of the identifiers this
        prescription carries that the patient has not got yet."""
        site = sites_by_id(uow.session, [site_id]).get(site_id)
        wanted = self._facts(
            patient.id, site, rx.patient_identifiers, rx.patient_mrns, rx.patient_birth_date
        )
        have = {
            (row.kind, row.site_id, row.hash)
            for row in uow.session.scalars(
                select(PatientIdentifierHash).where(
                    PatientIdentifierHash.patient_id == patient.id,
                    PatientIdentifierHash.kind != K.PRESCRIPTION.value,
                )
            )
        }
        now = uow.clock.now()
        for kind, site_of, digest in sorted(wanted - have, key=lambda f: (f[0], f[2])):
            uow.session.add(
                PatientIdentifierHash(
                    id=new_id("pih"),
                    patient_id=patient.id,
                    kind=kind,
                    site_id=site_of,
                    prescription_id=None,
                    hash=digest,
                    created_at=now,
                )
            )
        prescription_ids = set()
        for joined in rx.identifiers:
            try:
                prescription_ids.add(normalise_prescription_id(joined.partition("|")[2]))
            except ValidationFailed:
                continue
        for value in sorted(prescription_ids):
            uow.session.add(
                PatientIdentifierHash(
                    id=new_id("pih"),
                    patient_id=patient.id,
                    kind=K.PRESCRIPTION.value,
                    site_id=None,
                    prescription_id=prescription.id,
                    hash=self._hash(K.PRESCRIPTION, value),
                    created_at=now,
                )
            )

    def _known(
        self, uow: UnitOfWork, order: Order, site: Site | None
    ) -> tuple[set[tuple[str, str | None, str]], set[str]]:
        """The order's patient's identifier hashes (kind, site_id, hash) and the hashes of its
        prescription's identifiers. A patient without stored hashes (taken in before 0024) is
        read from its encrypted identity and its prescription's stored identifier."""
        rows = list(
            uow.session.scalars(
                select(PatientIdentifierHash).where(
                    PatientIdentifierHash.patient_id == order.patient_id
                )
            )
        )
        facts = {(r.kind, r.site_id, r.hash) for r in rows if r.kind != K.PRESCRIPTION.value}
        prescriptions = {
            r.hash
            for r in rows
            if r.kind == K.PRESCRIPTION.value and r.prescription_id == order.prescription_id
        }
        if not rows:
            identity = uow.session.get(PatientIdentity, order.patient_id)
            if identity is not None:
                data = self._vault.decrypt(identity.ciphertext)
                born = data.get("birth_date")
                facts = self._facts(
                    order.patient_id,
                    site,
                    tuple(data.get("identifiers") or ()),
                    (),
                    date.fromisoformat(born) if isinstance(born, str) and born else None,
                )
            rx = uow.session.get(Prescription, order.prescription_id)
            if rx is not None and rx.identifier_value:
                try:
                    value = normalise_prescription_id(rx.identifier_value)
                    prescriptions.add(self._hash(K.PRESCRIPTION, value))
                except ValidationFailed:
                    pass
        return facts, prescriptions

    def prescription_ids_filter(self, text: str) -> Any:
        """A WHERE clause on Order: the orders whose prescription carries this identifier (the
        prescription ID on a paper copy), by its keyed hash, or, for a prescription taken in
        before the hashes, by its stored business identifier."""
        value = normalise_prescription_id(text)
        hashed = select(PatientIdentifierHash.prescription_id).where(
            PatientIdentifierHash.kind == K.PRESCRIPTION.value,
            PatientIdentifierHash.hash == self._hash(K.PRESCRIPTION, value),
        )
        stored = select(Prescription.id).where(
            func.upper(func.trim(Prescription.identifier_value)) == value
        )
        return or_(Order.prescription_id.in_(hashed), Order.prescription_id.in_(stored))

    # --- the match ------------------------------------------------------------------------
    def match(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order: Order,
        presented: PresentedIdentifiers,
        *,
        purpose: str,
        permission: Permission,
        one_of: list[str | None] | None = None,
    ) -> PatientMatch:
        authorize(actor, permission, one_of=one_of if one_of is not None else [order.site_id])
        parsed = _parse(presented)
        if not any(kind in _PRIMARY_FIELDS for kind, _ in parsed):
            raise ValidationFailed(
                "patient: identify the patient: NHS number, hospital number (MRN), wristband "
                "scan, prescription ID or nearfab patient reference (PT-…)",
                field="patient",
            )
        site = sites_by_id(uow.session, [order.site_id]).get(order.site_id)
        patient = uow.session.get(Patient, order.patient_id)
        facts, prescriptions = self._known(uow, order, site)
        checked: list[str] = []
        failed: IdentifierKind | None = None
        for kind, value in parsed:
            checked.append(kind.value)
            if not self._agrees(kind, value, order, patient, facts, prescriptions, site):
                failed = kind
                break
        born_given = any(kind == K.BIRTH_DATE for kind, _ in parsed)
        missing_birth = (
            failed is None and site is not None and site.birth_date_required and not born_given
        )
        if failed is not None:
            message = (
                f"{_WORDS[failed]} does not match the patient of this order; check it was "
                "read correctly, and do not hand over"
            )
        elif missing_birth:
            message = (
                f"site {site.code if site else ''} requires the date of birth as a second "
                "identifier: ask the patient and give it too"
            )
        else:
            message = "patient identified"
        matched = failed is None and not missing_birth
        identity = None
        if matched and can(actor, Permission.PATIENT_IDENTITY_READ, one_of=[order.site_id]):
            row = uow.session.get(PatientIdentity, order.patient_id)
            if row is not None:
                data = self._vault.decrypt(row.ciphertext)
                identity = {"name": data.get("name"), "birth_date": data.get("birth_date")}
        failed_field = failed.value if failed else (K.BIRTH_DATE.value if missing_birth else None)
        if failed == K.PSEUDONYM:
            failed_field = "patient"  # the pseudonym's field at dispense, as before
        # the identifiers' kinds and the outcome: never their values
        audit(
            uow,
            actor,
            "identify_patient",
            "order",
            order.id,
            new={
                "purpose": purpose,
                "presented": checked,
                "matched": matched,
                "failed": failed_field,
                "identity_shown": identity is not None,
            },
            site_id=order.site_id,
        )
        return PatientMatch(
            matched=matched,
            order_id=order.id,
            checked=tuple(checked),
            failed=failed_field,
            message=message,
            identity=identity,
            code=None if matched else ("birth_date_required" if missing_birth else "wrong_patient"),
        )

    def _agrees(
        self,
        kind: IdentifierKind,
        value: Any,
        order: Order,
        patient: Patient | None,
        facts: set[tuple[str, str | None, str]],
        prescriptions: set[str],
        site: Site | None,
    ) -> bool:
        if kind == K.PSEUDONYM:
            return patient is not None and patient.ref.upper() == str(value).upper()
        if kind == K.GSRN:  # a Wristband: a GSRN, or a plain NHS-number barcode
            if value.kind == K.GSRN and (K.GSRN, None, self._hash(K.GSRN, value.value)) in facts:
                return True
            # an NHS wristband's GSRN carries the NHS number (DCB1077), as a plain barcode does
            number = value.nhs_number
            return (
                number is not None
                and (
                    K.NHS_NUMBER,
                    None,
                    self._hash(K.NHS_NUMBER, number),
                )
                in facts
            )
        if kind == K.NHS_NUMBER:
            return (K.NHS_NUMBER, None, self._hash(K.NHS_NUMBER, value)) in facts
        if kind == K.MRN:
            return site is not None and (K.MRN, site.id, self._hash(K.MRN, value, site.id)) in facts
        if kind == K.BIRTH_DATE:
            digest = self._hash(K.BIRTH_DATE, value.isoformat(), order.patient_id)
            return (K.BIRTH_DATE, None, digest) in facts
        return self._hash(K.PRESCRIPTION, value) in prescriptions
