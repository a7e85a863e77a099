"""Read FHIR R4 prescriptions (MedicationRequest, alone or in a Bundle) into `PrescriptionIn`.

Pure parsing and mapping: no database, no clock. Every refusal is a `FhirInputError` whose
`field` is a FHIR path (`MedicationRequest.dosageInstruction[0]...`, or inside a Bundle
`Bundle.entry[2].resource.dosageInstruction[0]...`) and whose message names that field and the
reason. Structure is checked with the `fhir.resources.R4B` models; the code sets those models do
not check (status, intent, Bundle.type, time units, quantity comparators) are checked here.

Choices made where FHIR leaves room (callers rely on them):
- one dose per prescription: a MedicationRequest with several dosageInstruction entries (a taper,
  a sliding scale, day-1 loading dose...) is refused rather than read from its first entry;
- a dose is read, not judged: its value and unit as written, the unit as a UCUM code where one
  is known (masses), and whether it is a ratio per body weight (".../kg"). Which doses a product
  takes is its family's decision (orders/kit.py, PrescriptionKit), not the reader's. The reader
  refuses only what is no dose per administration at all: a unit that is not a mass, volume,
  countable dose unit (capsules, patches, drops, "1", "ea"...) or activity/substance unit (U,
  [iU], mEq, mmol); a ratio other than per body weight (mg/m2, mg/h); a dose range, unless its
  low and high are the same quantity (a range of one value is read as that dose);
- the patient's body weight (for a dose per kg): the body-weight Observation (LOINC 29463-7 or
  3141-9, status final, amended or corrected) that supportingInformation names, else the latest
  one for the same patient in the Bundle or contained; kg, g or [lb_av], reported in kg;
- months and years are UCUM's mean Julian ones (30.4375 d, 365.25 d);
- supply_days: expectedSupplyDuration, else the dosing bounds (boundsPeriod, then
  boundsDuration), else dispenseRequest.validityPeriod (a dispensing window, so the last resort).
  A date-only period end counts its whole day (FHIR Period semantics);
- doses_per_day is None when the schedule is not a fixed daily rate (only on some weekdays, a
  bare count, events) or the timing code is unknown;
- units_for_course: the dispensed quantity when it counts units, else
  ceil(doses_per_day × supply_days), else timing.repeat.count (the total number of doses); None
  when the prescription says none of these (the family then decides, or refuses);
- patient_reference is "Patient/<id>" (absolute URLs, _history and Bundle fullUrls reduced to it),
  or "#<id>" for a contained Patient; a partial birthDate (year or year-month) gives None.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from nearfab.common.errors import ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.orders.identifiers import check_patient_identifiers
from nearfab.orders.kit import DoseIn, MedicationCode

__all__ = [
    "RXNORM",
    "SNOMED",
    "FhirInputError",
    "MedicationCode",
    "PrescriptionIn",
    "parse_prescriptions",
]

SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
# LOINC body weight, and body weight measured: what a dose per kg is multiplied by
BODY_WEIGHT_CODES = frozenset({"29463-7", "3141-9"})
OBSERVATION_USABLE = ("final", "amended", "corrected")
ORDERABLE_DRUG_FORM = "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm"
GTS_ABBREVIATION = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"
V2_IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
# an Organization identifier in this system names a nearfab site by its code: the prescriber's
# organisation (requester Organization, or PractitionerRole.organization) becomes the ordering
# site (docs/prescriptions.md)
SITE_SYSTEM = "https://nearfab.org/fhir/sid/site"
# a Bundle with more entries than this is refused before it is validated (settings can lower
# or raise it: NEARFAB_BUNDLE_MAX_ENTRIES)
DEFAULT_MAX_ENTRIES = 50

MAKEABLE_STATUSES = ("active", "draft", "on-hold")
ORDER_INTENTS = ("order", "original-order", "instance-order", "filler-order")
BUNDLE_TYPES = frozenset(
    [
        "document",
        "message",
        "transaction",
        "transaction-response",
        "batch",
        "batch-response",
        "history",
        "searchset",
        "collection",
    ]
)


class FhirInputError(ValidationFailed):
    """A FHIR document nearfab cannot take as a prescription; `field` is a FHIR path."""

    code = "fhir_invalid"


@dataclass(frozen=True)
class PrescriptionIn:
    source_id: str | None
    identifiers: tuple[str, ...]
    status: str
    intent: str
    medication_codes: tuple[MedicationCode, ...]
    medication_text: str | None
    patient_reference: str
    patient_display: str | None
    patient_birth_date: date | None
    patient_identifiers: tuple[str, ...]
    patient_name: str | None
    prescriber_reference: str | None
    prescriber_display: str | None
    authored_on: datetime | None
    dose_value: float
    dose_unit: str
    # how the reader understood the dose unit (DoseIn documents each)
    dose_read_as: str
    dose_kind: str | None
    dose_ucum: str | None
    dose_per_kg: bool
    doses_per_day: float | None
    quantity_value: float | None
    quantity_unit: str | None
    supply_days: float | None
    units_for_course: int | None
    note: str | None
    raw: dict[str, Any]
    # the site codes the prescriber's organisation names (Organization.identifier in SITE_SYSTEM)
    prescriber_site_codes: tuple[str, ...] = ()
    # where the MedicationRequest sits, e.g. "Bundle.entry[2].resource": errors name it
    fhir_path: str = "MedicationRequest"
    # the patient's body weight, in kg, when the prescription carries it (module docstring)
    patient_weight_kg: float | None = None
    # where the medication is named: medicationCodeableConcept, or medicationReference (the
    # referenced Medication's code); refusals about the medicine name it
    medication_element: str = "medicationCodeableConcept"
    # the element the dose was read from: doseQuantity, or doseRange.low for a range of one value
    dose_element: str = "doseQuantity"
    # units_for_course is the dispensed quantity, counted in units of the product, not in doses
    units_dispensed: bool = False
    # the Patient's identifiers typed MR (HL7 v2-0203: a hospital's medical record number),
    # "system|value": the ordering site's MRN (docs/patient-identification.md)
    patient_mrns: tuple[str, ...] = ()

    @property
    def medication_field(self) -> str:
        return f"{self.fhir_path}.{self.medication_element}"

    @property
    def dose_field(self) -> str:
        return f"{self.fhir_path}.dosageInstruction[0].doseAndRate[0].{self.dose_element}"

    @property
    def dose(self) -> DoseIn:
        """The dose as read, for the product family to judge (orders/kit.py)."""
        weight = self.patient_weight_kg
        return DoseIn(
            value=self.dose_value,
            unit=self.dose_unit,
            read_as=self.dose_read_as,
            kind=self.dose_kind,
            ucum=self.dose_ucum,
            per_kg=self.dose_per_kg,
            weight=Quantity(weight, "kg") if weight is not None else None,
            field=self.dose_field,
        )


# --------------------------------------------------------------------------------------------
# units

_SECONDS = {
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "wk": 7 * 86400.0,
    "mo": 30.4375 * 86400.0,
    "a": 365.25 * 86400.0,
}
_TIME_WORDS = {
    **dict.fromkeys(("sec", "second", "seconds"), "s"),
    **dict.fromkeys(("minute", "minutes", "mins"), "min"),
    **dict.fromkeys(("hr", "hrs", "hour", "hours"), "h"),
    **dict.fromkeys(("day", "days"), "d"),
    **dict.fromkeys(("week", "weeks"), "wk"),
    **dict.fromkeys(("month", "months"), "mo"),
    **dict.fromkeys(("yr", "year", "years"), "a"),
}
# mass units, as written → their UCUM code (a family converts between them if it wants to)
_MASS: dict[str, str] = {
    **dict.fromkeys(("kg", "kilogram", "kilograms"), "kg"),
    **dict.fromkeys(("g", "gram", "grams"), "g"),
    **dict.fromkeys(("mg", "milligram", "milligrams"), "mg"),
    **dict.fromkeys(("ug", "mcg", "µg", "μg", "microgram", "micrograms"), "ug"),
    **dict.fromkeys(("ng", "nanogram", "nanograms"), "ng"),
}
# body weight units (UCUM) → kg
_BODY_WEIGHT_KG = {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237}
_VOLUME = frozenset(
    [
        "l",
        "dl",
        "cl",
        "ml",
        "ul",
        "µl",
        "μl",
        "cc",
        "litre",
        "liter",
        "litres",
        "liters",
        "millilitre",
        "milliliter",
        "millilitres",
        "milliliters",
    ]
)
_ACTIVITY = frozenset(
    ["u", "iu", "i'u", "ui", "unit", "units", "meq", "mmol", "umol", "µmol", "mol", "kiu", "miu"]
)
_COUNT_EXACT = frozenset({"1", "ea", "each", "dose", "doses", "piece", "pieces", "item"})
# Dose forms (free text, UCUM annotations such as {tbl}, v3-orderableDrugForm codes such as
# TAB, CAP, VAGTAB, RECSUPP, OPDROP, TPATCH): all counted one by one.
_COUNT_TOKENS = tuple(
    [
        "tab",
        "tbl",
        "cap",
        "supp",
        "pessar",
        "patch",
        "tpath",
        "drop",
        "drp",
        "pill",
        "troche",
        "lozenge",
        "pastille",
        "puff",
        "actuat",
        "spray",
        "spry",
        "sachet",
        "vial",
        "ampoule",
        "ampule",
        "insert",
        "insrt",
        "wafer",
        "film",
        "gum",
    ]
)


def _norm_unit(text: str) -> str:
    text = text.strip()
    if len(text) > 2 and text[0] in "{[" and text[-1] in "}]":
        text = text[1:-1]
    return text.strip().lower()


def _unit_kind(text: str) -> str | None:
    """mass, volume, activity, count, ratio, or None when unknown."""
    unit = _norm_unit(text)
    if not unit:
        return None
    if "/" in unit:
        return "ratio"
    if unit in _MASS:
        return "mass"
    if unit in _VOLUME:
        return "volume"
    if unit in _ACTIVITY:
        return "activity"
    if unit in _COUNT_EXACT or any(token in unit for token in _COUNT_TOKENS):
        return "count"
    return None


def _quantity_candidates(quantity: Mapping[str, Any]) -> list[str]:
    """Unit texts of a Quantity, the coded one first when its system is one we can read."""
    out: list[str] = []
    code, system, unit = quantity.get("code"), quantity.get("system"), quantity.get("unit")
    if isinstance(code, str) and code.strip() and system in (None, UCUM, ORDERABLE_DRUG_FORM):
        out.append(code)
    if isinstance(unit, str) and unit.strip():
        out.append(unit)
    return out


def _quantity_kind(quantity: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(kind, the unit text that gave it). Ratio only when nothing gives a plain kind."""
    ratio: str | None = None
    for text in _quantity_candidates(quantity):
        kind = _unit_kind(text)
        if kind == "ratio":
            ratio = ratio or text
        elif kind is not None:
            return kind, text
    return ("ratio", ratio) if ratio else (None, None)


def _per_kg_numerator(text: str) -> str | None:
    """The numerator of a ratio per kilogram of body weight ("mg/kg", "{cells}/kg{body
    weight}"), or None when `text` is no such ratio."""
    numerator, slash, denominator = text.strip().rpartition("/")
    denominator = denominator.strip().lower()
    if not slash or not numerator.strip():
        return None
    if denominator == "kg" or (denominator.startswith("kg{") and denominator.endswith("}")):
        return numerator.strip()
    return None


def _quantity_unit_label(quantity: Mapping[str, Any]) -> str | None:
    for key in ("unit", "code"):
        value = quantity.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _duration_seconds_per_unit(quantity: Mapping[str, Any]) -> float | None:
    for key in ("code", "unit"):
        value = quantity.get(key)
        if not isinstance(value, str):
            continue
        text = value.strip()
        if text in _SECONDS:
            return _SECONDS[text]
        word = _TIME_WORDS.get(text.lower())
        if word:
            return _SECONDS[word]
    return None


# --------------------------------------------------------------------------------------------
# dates


_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")


def _instant(value: Any, *, end: bool) -> datetime | None:
    """A FHIR date/dateTime as an aware datetime; a date-only (or partial) `end` is exclusive."""
    if not isinstance(value, str) or not value:
        return None
    match = _PARTIAL_DATE.match(value)
    if match:
        year, month, day = int(match[1]), match[2], match[3]
        start = datetime(year, int(month or 1), int(day or 1), tzinfo=UTC)
        if not end:
            return start
        if day:
            return start + timedelta(days=1)
        if month:
            return datetime(year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)
        return datetime(year + 1, 1, 1, tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _full_date(value: Any) -> date | None:
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


# --------------------------------------------------------------------------------------------
# loading and model validation


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _load(doc: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(doc, Mapping):
        try:
            data: Any = _plain(doc)
        except RecursionError:
            raise FhirInputError("$: the document is nested too deeply", field="$") from None
    elif isinstance(doc, str | bytes | bytearray):
        try:
            text = bytes(doc).decode("utf-8-sig") if not isinstance(doc, str) else doc
            data = json.loads(
                text.lstrip("\ufeff"),
                parse_constant=_reject_constant,
                parse_float=_finite_float,
            )
        except (ValueError, RecursionError) as exc:
            raise FhirInputError(f"$: not valid JSON: {exc}", field="$") from None
    else:
        raise FhirInputError(
            f"$: expected JSON text or a mapping, got {type(doc).__name__}", field="$"
        )
    if not isinstance(data, dict):
        raise FhirInputError(
            f"$: expected a JSON object (a FHIR resource), got {type(data).__name__}", field="$"
        )
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


def _resource_class(resource_type: Any) -> type[Resource] | None:
    if not isinstance(resource_type, str) or not re.fullmatch(r"[A-Z][A-Za-z]+", resource_type):
        return None
    try:
        cls = get_fhir_model_class(resource_type)
    except Exception:
        return None
    if isinstance(cls, type) and issubclass(cls, Resource):
        return cls
    return None


def _check_resource_types(resource: Any, path: str) -> None:
    """Unknown resourceTypes (top, contained, entries) before the models see them."""
    if not isinstance(resource, dict):
        return
    if _resource_class(resource.get("resourceType")) is None:
        raise FhirInputError(
            f"{path}.resourceType: {resource.get('resourceType')!r} is not an R4 resource type",
            field=f"{path}.resourceType",
        )
    contained = resource.get("contained")
    if isinstance(contained, list):
        for i, item in enumerate(contained):
            _check_resource_types(item, f"{path}.contained[{i}]")
    entries = resource.get("entry") if resource.get("resourceType") == "Bundle" else None
    if isinstance(entries, list):
        for i, entry in enumerate(entries):
            if isinstance(entry, dict):
                _check_resource_types(entry.get("resource"), f"{path}.entry[{i}].resource")


_PY_NAMES = {"resource_type": "resourceType"}
_NAME = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*$")


def _loc_to_path(root: str, loc: tuple[Any, ...]) -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        name = str(part)
        if name == "root" or not _NAME.match(name):
            continue
        name = _PY_NAMES.get(name, name)
        if name.endswith("__ext"):
            name = "_" + name[: -len("__ext")]
        elif name.endswith("_fhir"):
            name = name[: -len("_fhir")]
        path += f".{name}"
    return path


def _validate(resource: dict[str, Any], root: str) -> dict[str, Any]:
    """Validate with the R4B model; return the model's normalised JSON (numbers as numbers)."""
    _check_resource_types(resource, root)
    cls = _resource_class(resource.get("resourceType"))
    assert cls is not None  # checked just above
    try:
        model = cls.model_validate(resource)
        normalised = json.loads(model.model_dump_json())
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        field = _loc_to_path(root, tuple(first.get("loc", ())))
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise FhirInputError(
            f"{field}: not valid FHIR R4: {first.get('msg', 'invalid')}{more}", field=field
        ) from None
    except Exception as exc:  # the models raise a few non-pydantic errors on odd input
        raise FhirInputError(
            f"{root}: cannot be read as FHIR R4: {type(exc).__name__}: {exc}", field=root
        ) from None
    if not isinstance(normalised, dict):  # pragma: no cover - the models always dump objects
        raise FhirInputError(f"{root}: cannot be read as FHIR R4", field=root)
    return normalised


# --------------------------------------------------------------------------------------------
# references


_REFERENCE = re.compile(
    r"^(?:(?P<base>https?://\S+?)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


@dataclass(frozen=True)
class _Found:
    resource: dict[str, Any]
    contained: bool


@dataclass
class _Context:
    """Where a MedicationRequest sits: its FHIR path, its contained resources, its Bundle."""

    path: str
    contained: dict[str, dict[str, Any]]
    by_full_url: dict[str, dict[str, Any]]
    by_type_id: dict[tuple[str, str], dict[str, Any]]
    # the Observations it can see (its Bundle's entries, its contained ones), with their paths
    observations: tuple[tuple[str, dict[str, Any]], ...] = ()
    # the Bundle's resources' FHIR paths, by id() of the resource
    entry_paths: Mapping[int, str] | None = None

    def path_of(self, resource: dict[str, Any], mr: dict[str, Any]) -> str:
        """The FHIR path of a resolved resource: a Bundle entry's or one of `mr`'s contained."""
        for i, item in enumerate(mr.get("contained") or []):
            if item is resource:
                return f"{self.path}.contained[{i}]"
        return (self.entry_paths or {}).get(id(resource), self.path)

    def resolve(self, reference: str) -> _Found | None:
        if reference.startswith("#"):
            found = self.contained.get(reference[1:])
            return _Found(found, True) if found is not None else None
        if reference in self.by_full_url:
            return _Found(self.by_full_url[reference], False)
        match = _REFERENCE.match(reference)
        if match:
            found = self.by_type_id.get((match["type"], match["id"]))
            if found is not None:
                return _Found(found, False)
        return None


def _bundle_index(
    entries: list[dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    by_url: dict[str, dict[str, Any]] = {}
    by_type_id: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        url = entry.get("fullUrl")
        if isinstance(url, str) and url:
            by_url.setdefault(url, resource)
            match = _REFERENCE.match(url)
            if match:
                by_type_id.setdefault((match["type"], match["id"]), resource)
        rid = resource.get("id")
        if isinstance(rid, str):
            by_type_id.setdefault((str(resource.get("resourceType")), rid), resource)
    return by_url, by_type_id


# --------------------------------------------------------------------------------------------
# small readers


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _identifiers(values: Any) -> tuple[str, ...]:
    out: list[str] = []
    for ident in values if isinstance(values, list) else []:
        if isinstance(ident, dict) and _str(ident.get("value")):
            out.append(f"{ident.get('system') or ''}|{ident['value']}")
    return tuple(out)


def _mrn_identifiers(values: Any) -> tuple[str, ...]:
    """The identifiers typed MR (medical record number, HL7 v2 table 0203), "system|value"."""
    out: list[str] = []
    for ident in values if isinstance(values, list) else []:
        if not isinstance(ident, dict) or not _str(ident.get("value")):
            continue
        kind = ident.get("type")
        codings = kind.get("coding") if isinstance(kind, dict) else None
        if any(
            isinstance(c, dict) and c.get("system") == V2_IDENTIFIER_TYPE and c.get("code") == "MR"
            for c in codings or []
        ):
            out.append(f"{ident.get('system') or ''}|{ident['value']}")
    return tuple(out)


def _codes(concept: Any) -> tuple[MedicationCode, ...]:
    out: list[MedicationCode] = []
    if isinstance(concept, dict):
        for coding in concept.get("coding") or []:
            system, code = _str(coding.get("system")), _str(coding.get("code"))
            if system and code:
                out.append(MedicationCode(system, code, _str(coding.get("display"))))
    return tuple(out)


def _human_name(names: Any) -> str | None:
    if not isinstance(names, list) or not names:
        return None
    ranked = sorted(
        (n for n in names if isinstance(n, dict)),
        key=lambda n: {"official": 0, "usual": 1}.get(n.get("use", ""), 2),
    )
    for name in ranked:
        if _str(name.get("text")):
            return str(name["text"]).strip()
        parts = [*(name.get("given") or []), name.get("family") or ""]
        text = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
        if text:
            return text
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _positive_quantity(quantity: Any, field: str, what: str) -> float:
    """The finite positive value of a Quantity (comparators refused)."""
    comparator = quantity.get("comparator")
    if comparator:
        raise FhirInputError(
            f"{field}: a {what} with comparator {comparator!r} is not an exact amount",
            field=field,
        )
    value = _number(quantity.get("value"))
    if value is None:
        raise FhirInputError(f"{field}: the {what} has no numeric value", field=field)
    if value <= 0:
        raise FhirInputError(f"{field}: the {what} must be positive, got {value:g}", field=field)
    return value


def _duration_days(quantity: Any, field: str, what: str) -> float:
    value = _positive_quantity(quantity, field, what)
    seconds = _duration_seconds_per_unit(quantity)
    if seconds is None:
        unit = _quantity_unit_label(quantity)
        raise FhirInputError(
            f"{field}: the {what} unit {unit!r} is not a time unit (s, min, h, d, wk, mo, a)",
            field=field,
        )
    return value * seconds / 86400.0


def _period_days(period: Any, field: str) -> float | None:
    if not isinstance(period, dict):
        return None
    start = _instant(period.get("start"), end=False)
    end = _instant(period.get("end"), end=True)
    if start is None or end is None:
        return None
    days = (end - start).total_seconds() / 86400.0
    if days < 0:
        raise FhirInputError(
            f"{field}: the period ends ({period.get('end')}) before it starts "
            f"({period.get('start')})",
            field=field,
        )
    return days or None


def _ceil(value: float) -> int:
    return math.ceil(value - 1e-9)


# --------------------------------------------------------------------------------------------
# timing


def _code_per_day(code: str) -> float | None:
    fixed = {
        "QD": 1.0,
        "BID": 2.0,
        "TID": 3.0,
        "QID": 4.0,
        "QOD": 0.5,
        "AM": 1.0,
        "PM": 1.0,
        "BED": 1.0,
        "WK": 86400.0 / _SECONDS["wk"],
        "MO": 86400.0 / _SECONDS["mo"],
    }
    if code in fixed:
        return fixed[code]
    match = re.fullmatch(r"Q(\d{1,2})H", code)
    if match and int(match[1]) > 0:
        return 24.0 / int(match[1])
    return None


def _doses_per_day(timing: Any, field: str) -> float | None:
    if not isinstance(timing, dict):
        return None
    repeat: dict[str, Any] = timing["repeat"] if isinstance(timing.get("repeat"), dict) else {}
    rfield = f"{field}.repeat"
    for key in ("periodUnit", "durationUnit"):
        unit = repeat.get(key)
        if unit is not None and unit not in _SECONDS:
            raise FhirInputError(
                f"{rfield}.{key}: {unit!r} is not a UCUM time unit (s, min, h, d, wk, mo, a)",
                field=f"{rfield}.{key}",
            )
    period = _number(repeat.get("period"))
    if repeat.get("period") is not None and (period is None or period <= 0):
        raise FhirInputError(
            f"{rfield}.period: must be positive, got {repeat.get('period')!r}",
            field=f"{rfield}.period",
        )
    if period is not None and repeat.get("periodUnit") is None:
        raise FhirInputError(
            f"{rfield}.periodUnit: a period needs its unit", field=f"{rfield}.periodUnit"
        )
    frequency = _number(repeat.get("frequency"))
    if repeat.get("frequency") is not None and (frequency is None or frequency <= 0):
        raise FhirInputError(
            f"{rfield}.frequency: must be positive, got {repeat.get('frequency')!r}",
            field=f"{rfield}.frequency",
        )
    if repeat.get("dayOfWeek"):
        return None  # only on some weekdays: not a fixed daily rate
    if period is not None:
        seconds = period * _SECONDS[repeat["periodUnit"]]
        return (frequency or 1.0) * 86400.0 / seconds
    times = repeat.get("timeOfDay")
    if isinstance(times, list) and times and frequency is None:
        return float(len(set(times)))
    code = timing.get("code")
    if isinstance(code, dict):
        for coding in code.get("coding") or []:
            system = coding.get("system")
            # the R4 system, or the older http://hl7.org/fhir/v3/GTSAbbreviation
            gts = system in (None, GTS_ABBREVIATION) or str(system).endswith("/GTSAbbreviation")
            if gts and _str(coding.get("code")):
                per_day = _code_per_day(str(coding["code"]).strip().upper())
                if per_day is not None:
                    return per_day
    return None


# --------------------------------------------------------------------------------------------
# mapping one MedicationRequest


def _refuse(field: str, reason: str) -> FhirInputError:
    return FhirInputError(f"{field}: {reason}", field=field)


def _same_unit(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a.get(key) == b.get(key) for key in ("unit", "code", "system"))


def _single_value_range(dose_range: Any, field: str) -> dict[str, Any]:
    """The dose of a doseRange whose low and high are the same quantity (a range of one value,
    as some systems send an exact dose); any other range is refused: it is no exact dose."""
    low = dose_range.get("low") if isinstance(dose_range, dict) else None
    high = dose_range.get("high") if isinstance(dose_range, dict) else None
    if not isinstance(low, dict) or not isinstance(high, dict):
        raise _refuse(
            field,
            "a dose range with only a lower or an upper bound is not an exact dose: a "
            "doseQuantity (or a range whose low and high are the same) is required",
        )
    low_value, high_value = _number(low.get("value")), _number(high.get("value"))
    if low_value is None or high_value is None or not _same_unit(low, high):
        raise _refuse(field, "the range's low and high must both have a value, in the same unit")
    if low_value != high_value:
        raise _refuse(
            field,
            f"a dose range ({low_value:g} to {high_value:g}) is not an exact dose: the "
            "prescriber must choose the dose (a doseQuantity, or low = high)",
        )
    return low


def _medication(mr: dict[str, Any], ctx: _Context) -> tuple[tuple[MedicationCode, ...], str | None]:
    concept = mr.get("medicationCodeableConcept")
    if isinstance(concept, dict):
        return _codes(concept), _str(concept.get("text"))
    reference = mr.get("medicationReference")
    field = f"{ctx.path}.medicationReference"
    if not isinstance(reference, dict):
        raise _refuse(f"{ctx.path}.medication[x]", "no medication (code or reference) is given")
    display = _str(reference.get("display"))
    ref = _str(reference.get("reference"))
    if ref is None:
        return (), display
    found = ctx.resolve(ref)
    if found is None:
        if ref.startswith("#"):
            raise _refuse(f"{field}.reference", f"{ref!r} matches no contained resource")
        return (), display
    medication = found.resource
    if medication.get("resourceType") != "Medication":
        raise _refuse(
            f"{field}.reference",
            f"{ref!r} refers to a {medication.get('resourceType')}, not a Medication",
        )
    code = medication.get("code")
    text = _str(code.get("text")) if isinstance(code, dict) else None
    return _codes(code), text or display


def _map(mr: dict[str, Any], raw: dict[str, Any], ctx: _Context) -> PrescriptionIn:
    path = ctx.path

    status = str(mr.get("status"))
    if status not in MAKEABLE_STATUSES:
        raise _refuse(
            f"{path}.status",
            f"status {status!r} cannot be made: only {', '.join(MAKEABLE_STATUSES)} "
            "prescriptions are accepted",
        )
    intent = str(mr.get("intent"))
    if intent not in ORDER_INTENTS:
        raise _refuse(
            f"{path}.intent",
            f"intent {intent!r} is not an order: accepted intents are {', '.join(ORDER_INTENTS)}",
        )

    codes, medication_text = _medication(mr, ctx)
    medication_element = (
        "medicationCodeableConcept"
        if isinstance(mr.get("medicationCodeableConcept"), dict)
        else "medicationReference"
    )
    if not codes and medication_text is None:
        raise _refuse(f"{path}.medication[x]", "the medication has no code and no text")

    # --- subject: a Patient
    subject = mr.get("subject")
    if not isinstance(subject, dict):
        raise _refuse(f"{path}.subject", "the subject (a Patient reference) is required")
    ref = _str(subject.get("reference"))
    if ref is None:
        raise _refuse(f"{path}.subject.reference", "the subject has no reference to a Patient")
    if subject.get("type") not in (None, "Patient"):
        raise _refuse(f"{path}.subject.type", f"the subject is a {subject['type']}, not a Patient")
    found = ctx.resolve(ref)
    match = _REFERENCE.match(ref)
    patient: dict[str, Any] | None = None
    if found is not None:
        if found.resource.get("resourceType") != "Patient":
            raise _refuse(
                f"{path}.subject.reference",
                f"{ref!r} refers to a {found.resource.get('resourceType')}, not a Patient",
            )
        patient = found.resource
        if found.contained:
            patient_reference = ref
        elif _str(patient.get("id")):
            patient_reference = f"Patient/{patient['id']}"
        else:
            patient_reference = ref
    elif ref.startswith("#"):
        raise _refuse(f"{path}.subject.reference", f"{ref!r} matches no contained resource")
    elif match is None or match["type"] != "Patient":
        what = f"a {match['type']}" if match else "not a resource reference"
        raise _refuse(
            f"{path}.subject.reference", f"{ref!r} is {what}: the subject must be a Patient"
        )
    else:
        patient_reference = f"Patient/{match['id']}"
    if patient is not None:  # a check digit that fails: refused at its identifier's path
        check_patient_identifiers(patient.get("identifier"), ctx.path_of(patient, mr))

    # --- dose
    dosage = mr.get("dosageInstruction")
    if not isinstance(dosage, list) or not dosage:
        raise _refuse(f"{path}.dosageInstruction", "no dosageInstruction: a dose is required")
    if len(dosage) > 1:
        raise _refuse(
            f"{path}.dosageInstruction[1]",
            f"{len(dosage)} dosage instructions (a taper, a sliding scale, a loading dose...) "
            "cannot be made as one dose; send one dose per MedicationRequest",
        )
    dosage0 = dosage[0]
    dfield = f"{path}.dosageInstruction[0].doseAndRate[0]"
    dose_and_rate = dosage0.get("doseAndRate") or []
    first = dose_and_rate[0] if dose_and_rate else {}
    dose_quantity = first.get("doseQuantity")
    dose_element = "doseQuantity"
    if not isinstance(dose_quantity, dict) and first.get("doseRange"):
        dose_quantity = _single_value_range(first["doseRange"], f"{dfield}.doseRange")
        dose_element = "doseRange.low"
    if not isinstance(dose_quantity, dict):
        raise _refuse(f"{dfield}.doseQuantity", "no doseQuantity: an exact dose is required")
    qfield = f"{dfield}.{dose_element}"
    dose_value = _positive_quantity(dose_quantity, qfield, "dose")
    dose_unit = _quantity_unit_label(dose_quantity)
    if dose_unit is None:
        raise _refuse(qfield, "the dose has no unit")
    kind, unit_text = _quantity_kind(dose_quantity)
    read_as = unit_text or dose_unit
    per_kg = False
    if kind == "ratio":
        numerator = _per_kg_numerator(read_as)
        kind = _unit_kind(numerator) if numerator is not None else "ratio"
        if kind == "ratio":
            raise _refuse(
                qfield,
                f"dose unit {read_as!r} is a ratio (per body surface or time): "
                "a dose per administration, or per kg of body weight, is required",
            )
        per_kg, unit_text = True, numerator
    elif kind is None:
        raise _refuse(
            qfield,
            f"dose unit {dose_unit!r} is not a mass, volume, countable or activity unit",
        )
    dose_ucum = _MASS[_norm_unit(unit_text or "")] if kind == "mass" else None
    weight_kg = _body_weight_kg(mr, ctx, patient, patient_reference) if per_kg else None

    # --- schedule
    timing = dosage0.get("timing")
    tfield = f"{path}.dosageInstruction[0].timing"
    doses_per_day = _doses_per_day(timing, tfield)
    repeat: dict[str, Any] = {}
    if isinstance(timing, dict) and isinstance(timing.get("repeat"), dict):
        repeat = timing["repeat"]

    # --- dispense request
    dispense: dict[str, Any] = (
        mr["dispenseRequest"] if isinstance(mr.get("dispenseRequest"), dict) else {}
    )
    dpath = f"{path}.dispenseRequest"
    quantity_value: float | None = None
    quantity_unit: str | None = None
    quantity_counts = False
    if isinstance(dispense.get("quantity"), dict):
        quantity = dispense["quantity"]
        quantity_value = _positive_quantity(quantity, f"{dpath}.quantity", "quantity")
        quantity_unit = _quantity_unit_label(quantity)
        quantity_counts = _quantity_kind(quantity)[0] == "count"

    supply_days: float | None = None
    if isinstance(dispense.get("expectedSupplyDuration"), dict):
        supply_days = _duration_days(
            dispense["expectedSupplyDuration"],
            f"{dpath}.expectedSupplyDuration",
            "expected supply duration",
        )
    bounds_period = _period_days(repeat.get("boundsPeriod"), f"{tfield}.repeat.boundsPeriod")
    bounds_duration = (
        _duration_days(
            repeat["boundsDuration"], f"{tfield}.repeat.boundsDuration", "bounds duration"
        )
        if isinstance(repeat.get("boundsDuration"), dict)
        else None
    )
    validity = _period_days(dispense.get("validityPeriod"), f"{dpath}.validityPeriod")
    for candidate in (bounds_period, bounds_duration, validity):
        if supply_days is None:
            supply_days = candidate

    units_for_course: int | None = None
    count = repeat.get("count")
    if quantity_counts and quantity_value is not None:
        units_for_course = _ceil(quantity_value)
    elif doses_per_day is not None and supply_days is not None:
        units_for_course = _ceil(doses_per_day * supply_days)
    elif isinstance(count, int) and not isinstance(count, bool) and count > 0:
        units_for_course = count

    # --- people
    requester: dict[str, Any] = mr["requester"] if isinstance(mr.get("requester"), dict) else {}
    prescriber_reference = _str(requester.get("reference"))
    prescriber_display = _str(requester.get("display"))
    prescriber = ctx.resolve(prescriber_reference) if prescriber_reference else None
    if prescriber is not None:
        if not prescriber.contained and _str(prescriber.resource.get("id")):
            # urn:uuid / absolute fullUrl in a Bundle → the usual "Type/id" form
            found_type, found_id = prescriber.resource["resourceType"], prescriber.resource["id"]
            prescriber_reference = f"{found_type}/{found_id}"
        if prescriber_display is None:
            prescriber_display = _human_name(prescriber.resource.get("name"))

    org_sites = _organisation_sites(requester, prescriber, ctx)

    notes = [n["text"].strip() for n in mr.get("note") or [] if _str(n.get("text"))]
    authored = _instant(mr.get("authoredOn"), end=False)

    return PrescriptionIn(
        source_id=_str(mr.get("id")),
        identifiers=_identifiers(mr.get("identifier")),
        status=status,
        intent=intent,
        medication_codes=codes,
        medication_text=medication_text,
        patient_reference=patient_reference,
        patient_display=_str(subject.get("display")),
        patient_birth_date=_full_date(patient.get("birthDate")) if patient else None,
        patient_identifiers=_identifiers(patient.get("identifier")) if patient else (),
        patient_name=_human_name(patient.get("name")) if patient else None,
        prescriber_reference=prescriber_reference,
        prescriber_display=prescriber_display,
        authored_on=authored,
        dose_value=dose_value,
        dose_unit=dose_unit,
        dose_read_as=read_as,
        dose_kind=kind,
        dose_ucum=dose_ucum,
        dose_per_kg=per_kg,
        doses_per_day=doses_per_day,
        quantity_value=quantity_value,
        quantity_unit=quantity_unit,
        supply_days=supply_days,
        units_for_course=units_for_course,
        note="\n".join(notes) or None,
        raw=raw,
        prescriber_site_codes=org_sites,
        fhir_path=ctx.path,
        patient_weight_kg=weight_kg,
        medication_element=medication_element,
        dose_element=dose_element,
        units_dispensed=quantity_counts and quantity_value is not None,
        patient_mrns=_mrn_identifiers(patient.get("identifier")) if patient else (),
    )


def _is_body_weight(resource: dict[str, Any]) -> bool:
    if resource.get("resourceType") != "Observation":
        return False
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    return any(
        isinstance(c, dict)
        and c.get("system") in (None, LOINC)
        and c.get("code") in BODY_WEIGHT_CODES
        for c in codings or []
    )


def _same_patient(
    observation: dict[str, Any], ctx: _Context, patient: dict[str, Any] | None, reference: str
) -> bool:
    subject = observation.get("subject")
    ref = _str(subject.get("reference")) if isinstance(subject, dict) else None
    if ref is None:
        return False
    found = ctx.resolve(ref)
    if found is not None:
        return patient is not None and found.resource is patient
    match = _REFERENCE.match(ref)
    return ref == reference or (match is not None and f"Patient/{match['id']}" == reference)


def _weight_of(observation: dict[str, Any], path: str) -> float:
    """The Observation's body weight in kg; refused naming its valueQuantity when unreadable."""
    field = f"{path}.valueQuantity"
    quantity = observation.get("valueQuantity")
    if not isinstance(quantity, dict):
        raise _refuse(field, "the body weight Observation has no valueQuantity")
    value = _positive_quantity(quantity, field, "body weight")
    for text in _quantity_candidates(quantity):
        factor = _BODY_WEIGHT_KG.get(text.strip())
        if factor is not None:
            return value * factor
    raise _refuse(
        field,
        f"body weight unit {_quantity_unit_label(quantity)!r} is not kg, g or [lb_av]",
    )


def _body_weight_kg(
    mr: dict[str, Any], ctx: _Context, patient: dict[str, Any] | None, reference: str
) -> float | None:
    """The patient's body weight (module docstring): the Observation supportingInformation
    names, else the latest one of the same patient the document holds; None without one."""
    paths = {id(resource): path for path, resource in ctx.observations}
    for i, ref in enumerate(mr.get("supportingInformation") or []):
        text = _str(ref.get("reference")) if isinstance(ref, dict) else None
        found = ctx.resolve(text) if text else None
        usable = found is not None and found.resource.get("status") in OBSERVATION_USABLE
        if found is not None and usable and _is_body_weight(found.resource):
            where = paths.get(id(found.resource), f"{ctx.path}.supportingInformation[{i}]")
            return _weight_of(found.resource, where)
    candidates = [
        (path, obs)
        for path, obs in ctx.observations
        if _is_body_weight(obs)
        and obs.get("status") in OBSERVATION_USABLE
        and _same_patient(obs, ctx, patient, reference)
    ]
    if not candidates:
        return None
    earliest = datetime.min.replace(tzinfo=UTC)

    def taken_at(item: tuple[str, dict[str, Any]]) -> datetime:
        obs = item[1]
        named = obs.get("effectivePeriod")
        period: dict[str, Any] = named if isinstance(named, dict) else {}
        for value in (
            obs.get("effectiveDateTime"),
            obs.get("effectiveInstant"),
            period.get("start"),
        ):
            when = _instant(value, end=False)
            if when is not None:
                return when
        return earliest

    path, latest = max(candidates, key=taken_at)
    return _weight_of(latest, path)


def _site_codes(identifiers: Any) -> list[str]:
    values = identifiers if isinstance(identifiers, list) else [identifiers]
    return [
        i["value"].strip()
        for i in values
        if isinstance(i, dict) and i.get("system") == SITE_SYSTEM and _str(i.get("value"))
    ]


def _organisation_sites(
    requester: dict[str, Any], prescriber: _Found | None, ctx: _Context
) -> tuple[str, ...]:
    """The site codes of the prescriber's organisation: a requester Organization (resolved, or
    a logical reference by identifier), or the organization of a requester PractitionerRole."""
    codes: list[str] = []
    if requester.get("type") == "Organization" or str(requester.get("reference", "")).startswith(
        "Organization/"
    ):
        codes += _site_codes(requester.get("identifier"))
    resource = prescriber.resource if prescriber is not None else {}
    if resource.get("resourceType") == "Organization":
        codes += _site_codes(resource.get("identifier"))
    elif resource.get("resourceType") == "PractitionerRole":
        named = resource.get("organization")
        org: dict[str, Any] = named if isinstance(named, dict) else {}
        codes += _site_codes(org.get("identifier"))
        ref = _str(org.get("reference"))
        found = ctx.resolve(ref) if ref else None
        if found is not None and found.resource.get("resourceType") == "Organization":
            codes += _site_codes(found.resource.get("identifier"))
    return tuple(dict.fromkeys(codes))


def _contained(resource: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in resource.get("contained") or []:
        if isinstance(item, dict) and _str(item.get("id")):
            out.setdefault(item["id"], item)
    return out


def _contained_observations(
    resource: dict[str, Any], path: str
) -> tuple[tuple[str, dict[str, Any]], ...]:
    return tuple(
        (f"{path}.contained[{i}]", item)
        for i, item in enumerate(resource.get("contained") or [])
        if isinstance(item, dict) and item.get("resourceType") == "Observation"
    )


# --------------------------------------------------------------------------------------------
# entry point


def parse_prescriptions(
    doc: str | bytes | Mapping[str, Any], *, max_entries: int = DEFAULT_MAX_ENTRIES
) -> list[PrescriptionIn]:
    """Every MedicationRequest of `doc` (one resource, or a Bundle of any type), mapped.

    Raises FhirInputError (field = FHIR path, message = field and reason) on anything that
    cannot be made as given; one bad MedicationRequest in a Bundle refuses the whole Bundle,
    and so does a Bundle of more than `max_entries` entries (counted before any validation).
    """
    data = _load(doc)
    if data.get("resourceType") == "Bundle":
        count = len(data["entry"]) if isinstance(data.get("entry"), list) else 0
        if count > max_entries:
            raise _refuse(
                "Bundle.entry",
                f"{count} entries; a Bundle may hold at most {max_entries} "
                "(send the prescriptions in several Bundles)",
            )
    resource_type = data.get("resourceType")

    if resource_type == "MedicationRequest":
        normalised = _validate(data, "MedicationRequest")
        ctx = _Context(
            "MedicationRequest",
            _contained(normalised),
            {},
            {},
            _contained_observations(normalised, "MedicationRequest"),
        )
        return [_map(normalised, data, ctx)]

    if resource_type != "Bundle":
        shown = "missing" if resource_type is None else repr(resource_type)
        raise FhirInputError(
            f"resourceType: {shown}; expected a MedicationRequest or a Bundle",
            field="resourceType",
        )

    bundle = _validate(data, "Bundle")
    if bundle.get("type") not in BUNDLE_TYPES:
        raise _refuse("Bundle.type", f"{bundle.get('type')!r} is not a Bundle type")
    # The normalised Bundle keeps the entries' order and count; the raw entries are kept for
    # `raw`, so both lists are read by the same index.
    raw_entries = data.get("entry") or []
    entries = bundle.get("entry") or []
    if len(raw_entries) != len(entries):  # pragma: no cover - defensive
        raise _refuse("Bundle.entry", "entries could not be read one by one")
    by_url, by_type_id = _bundle_index(entries)
    observations = tuple(
        (f"Bundle.entry[{i}].resource", entry["resource"])
        for i, entry in enumerate(entries)
        if isinstance(entry.get("resource"), dict)
        and entry["resource"].get("resourceType") == "Observation"
    )

    entry_paths = {
        id(e["resource"]): f"Bundle.entry[{i}].resource"
        for i, e in enumerate(entries)
        if isinstance(e.get("resource"), dict)
    }
    out: list[PrescriptionIn] = []
    for i, (entry, raw_entry) in enumerate(zip(entries, raw_entries, strict=True)):
        resource = entry.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") != "MedicationRequest":
            continue
        path = f"Bundle.entry[{i}].resource"
        ctx = _Context(
            path,
            _contained(resource),
            by_url,
            by_type_id,
            observations + _contained_observations(resource, path),
            entry_paths,
        )
        out.append(_map(resource, raw_entry["resource"], ctx))
    if not out:
        raise _refuse("Bundle.entry", "the Bundle holds no MedicationRequest")
    return out
