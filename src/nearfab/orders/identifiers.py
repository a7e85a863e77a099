"""Patient identifiers as a hospital knows them: read, checked and normalised. Pure, no I/O.

- NHS number: 10 digits, the last a modulus-11 check digit (NHS Data Dictionary, "NHS
  Number"): the first nine digits weighted 10 down to 2, summed; 11 minus the remainder of
  the sum divided by 11 is the check digit; 11 counts as 0, and 10 means the number is not a
  valid NHS number. Spaces and hyphens ("943 476 5919") are ignored.
- MRN: the local hospital (case-note) number of one site; compared after trimming, upper-casing
  and removing spaces (a number is only ever matched within the site that issued it).
- Wristband barcode: a GS1 element string carrying AI (8018), the GSRN of the service
  recipient (18 digits, the last a GS1 mod-10 check digit), as on NHS wristbands, bracketed
  ("(8018)…"), unbracketed, with a symbology identifier ("]d2", "]C1", "]Q3") or FNC1/GS; or a
  plain barcode holding only the NHS number. `biip` reads the element string; the GSRN's check
  digit, which biip does not check, is checked here.
- Prescription ID: the MedicationRequest's identifier value as printed on a paper copy;
  compared after trimming and upper-casing.

Every refusal is a ValidationFailed naming the field and the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from biip import ParseError
from biip import parse as biip_parse
from biip.gs1_messages import GS1Message

from nearfab.common.errors import ValidationFailed
from nearfab.common.gs1 import mod10

__all__ = [
    "GSRN_SYSTEMS",
    "MRN_TYPE",
    "NHS_NUMBER_SYSTEM",
    "NHS_NUMBER_SYSTEMS",
    "IdentifierKind",
    "Wristband",
    "check_patient_identifiers",
    "classify",
    "gsrn_check_digit",
    "is_valid_nhs_number",
    "nhs_check_digit",
    "normalise_birth_date",
    "normalise_gsrn",
    "normalise_mrn",
    "normalise_nhs_number",
    "normalise_prescription_id",
    "parse_wristband",
]

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
# the FHIR identifier systems of the NHS number: UK Core's, and the HL7 OID of the NHS number
NHS_NUMBER_SYSTEMS = frozenset({NHS_NUMBER_SYSTEM, "urn:oid:2.16.840.1.113883.2.1.4.1"})
# a FHIR Patient.identifier in one of these systems holds the patient's wristband GSRN
GSRN_SYSTEMS = frozenset({"https://www.gs1.org/gsrn", "https://gs1.org/voc/gsrn"})
# HL7 v2 table 0203 "MR" (medical record number): how a FHIR Patient.identifier says "MRN"
MRN_TYPE = ("http://terminology.hl7.org/CodeSystem/v2-0203", "MR")
MRN_MAX = 64

# symbology identifiers (ISO/IEC 15424) of GS1 data, and of plain data (Code 128, Data Matrix,
# QR, Code 39, Interleaved 2 of 5...)
_GS1_MODES = ("]C1", "]d2", "]Q3", "]e0", "]J1")
_PLAIN_MODE = re.compile(r"^\][A-Za-z][0-9A-Za-z]")
_GS = "\x1d"


class IdentifierKind(StrEnum):
    """What a presented identifier is; the value is the field its refusals name."""

    PSEUDONYM = "patient_ref"
    NHS_NUMBER = "nhs_number"
    MRN = "mrn"
    GSRN = "wristband"
    BIRTH_DATE = "birth_date"
    PRESCRIPTION = "prescription_id"


def nhs_check_digit(nine: str) -> int | None:
    """The modulus-11 check digit of the first nine digits of an NHS number; None when the
    digits admit none (11 - remainder = 10: no valid NHS number starts so)."""
    if len(nine) != 9 or not nine.isascii() or not nine.isdigit():
        raise ValueError(f"nine digits expected, got {nine!r}")
    total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def normalise_nhs_number(text: str, *, field: str = "nhs_number") -> str:
    """The NHS number as 10 digits; ValidationFailed(field) when it is not one."""
    digits = re.sub(r"[\s-]", "", text or "")
    if not digits:
        raise ValidationFailed(f"{field}: no NHS number given", field=field)
    if not digits.isascii() or not digits.isdigit() or len(digits) != 10:
        # str.isdigit also takes other scripts' digits (Arabic-Indic '٩٤٣…'): 0-9 only
        raise ValidationFailed(
            f"{field}: an NHS number is 10 digits 0-9; {len(digits)} characters given"
            + ("" if digits.isascii() else ", not all of them 0-9"),
            field=field,
        )
    expected = nhs_check_digit(digits[:9])
    if expected is None or int(digits[9]) != expected:
        why = (
            "no check digit fits its first nine digits"
            if expected is None
            else (f"its check digit is {digits[9]}, the modulus-11 rule gives {expected}")
        )
        # the digits are not echoed: a refusal's message is kept in the audit trail, and a
        # number one digit off (or a valid one misread) identifies a patient all the same
        raise ValidationFailed(
            f"{field}: not a valid NHS number ({why}); check it was read correctly",
            field=field,
        )
    return digits


def is_valid_nhs_number(text: str) -> bool:
    try:
        normalise_nhs_number(text)
    except ValidationFailed:
        return False
    return True


def gsrn_check_digit(body: str) -> str:
    """The GS1 mod-10 check digit of the first 17 digits of a GSRN."""
    if len(body) != 17 or not body.isascii() or not body.isdigit():
        raise ValueError(f"17 digits expected, got {body!r}")
    return mod10(body)


def normalise_gsrn(text: str, *, field: str = "wristband") -> str:
    """A GSRN as its 18 digits, check digit checked."""
    digits = (text or "").strip()
    if len(digits) != 18 or not digits.isascii() or not digits.isdigit():
        raise ValidationFailed(
            f"{field}: a GSRN (AI 8018) is 18 digits; got {len(digits)} characters", field=field
        )
    expected = gsrn_check_digit(digits[:17])
    if digits[17] != expected:
        raise ValidationFailed(  # no digits echoed: an NHS wristband's GSRN holds the NHS number
            f"{field}: the GSRN's check digit is {digits[17]}, GS1 mod-10 gives {expected}; "
            "scan the wristband again",
            field=field,
        )
    return digits


def normalise_mrn(text: str, *, field: str = "mrn") -> str:
    value = re.sub(r"\s", "", text or "").upper()
    if not value:
        raise ValidationFailed(f"{field}: no hospital number (MRN) given", field=field)
    if len(value) > MRN_MAX or not value.isprintable():
        raise ValidationFailed(
            f"{field}: a hospital number is at most {MRN_MAX} printable characters", field=field
        )
    if any(c.isdigit() and not c.isascii() for c in value):
        # typed with another script's digits it could never match the hospital's number
        raise ValidationFailed(f"{field}: a hospital number's digits are 0-9", field=field)
    return value


def normalise_prescription_id(text: str, *, field: str = "prescription_id") -> str:
    value = (text or "").strip().upper()
    if not value:
        raise ValidationFailed(f"{field}: no prescription ID given", field=field)
    if len(value) > 255 or not value.isprintable():
        raise ValidationFailed(
            f"{field}: a prescription ID is at most 255 printable characters", field=field
        )
    return value


def normalise_birth_date(value: date | str, *, field: str = "birth_date") -> date:
    if isinstance(value, date):
        return value
    text = (value or "").strip()
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:  # not echoed: a birth date is personal data, and refusals are audited
        raise ValidationFailed(f"{field}: not a date (YYYY-MM-DD)", field=field) from None


@dataclass(frozen=True)
class Wristband:
    """What a wristband barcode identifies: a GSRN (AI 8018) or an NHS number."""

    kind: IdentifierKind  # GSRN or NHS_NUMBER
    value: str

    @property
    def nhs_number(self) -> str | None:
        """The NHS number an NHS wristband's GSRN carries: DCB1077 (AIDC for Patient
        Identification) builds it as the NHS GS1 company prefix (7 digits), the NHS number
        (10) and the GSRN check digit; None when those ten digits are not a valid NHS number.
        For a plain NHS-number barcode, the number itself."""
        if self.kind == IdentifierKind.NHS_NUMBER:
            return self.value
        candidate = self.value[7:17]
        return candidate if is_valid_nhs_number(candidate) else None


def parse_wristband(text: str, *, field: str = "wristband") -> Wristband:
    """A scanned wristband: GS1 data with AI (8018), or a plain NHS-number barcode."""
    data = (text or "").strip()
    if not data:
        raise ValidationFailed(f"{field}: nothing scanned", field=field)
    gs1 = data.startswith(_GS1_MODES)
    body = data[3:] if gs1 or _PLAIN_MODE.match(data) else data
    if not gs1 and re.fullmatch(r"[0-9 -]{10,13}", body):
        return Wristband(IdentifierKind.NHS_NUMBER, normalise_nhs_number(body, field=field))
    try:
        if body.startswith("("):
            message = GS1Message.parse_hri(body)
        else:
            parsed = biip_parse("]d2" + body.lstrip(_GS))
            if parsed.gs1_message is None:
                raise ParseError(parsed.gs1_message_error or "not GS1 element data")
            message = parsed.gs1_message
    except ParseError:  # biip's message quotes the data scanned: not repeated here
        raise ValidationFailed(
            f"{field}: not a wristband barcode (a GS1 GSRN, AI 8018, or an NHS number)",
            field=field,
        ) from None
    gsrns = [e.value for e in message.element_strings if e.ai.ai == "8018"]
    if len(gsrns) != 1:
        raise ValidationFailed(
            f"{field}: the barcode holds {len(gsrns)} GSRN (AI 8018) elements; a wristband "
            "holds one",
            field=field,
        )
    return Wristband(IdentifierKind.GSRN, normalise_gsrn(gsrns[0], field=field))


def classify(text: str, *, field: str = "patient") -> tuple[IdentifierKind, str]:
    """One typed or scanned patient identifier, told apart by its form: nearfab's pseudonym
    ("PT-…"), a wristband barcode (GS1 with AI 8018), an NHS number (10 digits, spaces
    allowed: its check digit must hold), else the site's hospital number (MRN)."""
    value = (text or "").strip()
    if not value:
        raise ValidationFailed(f"{field}: no patient identifier given", field=field)
    if value.upper().startswith("PT-"):
        return IdentifierKind.PSEUDONYM, value
    if re.match(r"(?i)(Patient/|urn:uuid:|urn:oid:|https?://|#)", value):
        raise ValidationFailed(
            f"{field}: this is the sender's FHIR reference, which names the patient "
            "only in the sending system; give the NHS number, the hospital number (MRN), the "
            "wristband or nearfab's patient reference (PT-…)",
            field=field,
        )
    if value.startswith(("(8018)", "8018", _GS, *_GS1_MODES)) and len(value) >= 22:
        band = parse_wristband(value, field=field)
        return band.kind, band.value
    if re.fullmatch(r"\d{3}[ -]?\d{3}[ -]?\d{4}", value):
        return IdentifierKind.NHS_NUMBER, normalise_nhs_number(value, field=field)
    return IdentifierKind.MRN, normalise_mrn(value, field=field)


def check_patient_identifiers(identifiers: object, path: str) -> None:
    """At intake: a FHIR Patient's `identifier` list (at FHIR path `path`) holds no NHS number
    (in an NHS number system) and no GSRN (in a GSRN system) that fails its check digit.
    Such a number can never be presented validly at the bedside, so the prescription is
    refused (ValidationFailed naming `<path>.identifier[i].value` and the check digit) instead
    of taken with the identifier silently dropped."""
    for i, ident in enumerate(identifiers if isinstance(identifiers, list) else []):
        if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
            continue
        field = f"{path}.identifier[{i}].value"
        if ident.get("system") in NHS_NUMBER_SYSTEMS:
            normalise_nhs_number(ident["value"], field=field)
        elif ident.get("system") in GSRN_SYSTEMS:
            value = ident["value"].strip()
            if value.startswith(("(8018)", *_GS1_MODES)):
                parse_wristband(value, field=field)
            else:
                normalise_gsrn(value, field=field)
