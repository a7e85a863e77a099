"""Reading FHIR R4 Observations of a patient (body weight, height, a drug level): pure, no I/O.

An Observation, or a Bundle of them, is read into `ObservationRead`s: the code (the LOINC
coding when there is one, else the first coding), the valueQuantity (value, and the UCUM code
when the system is UCUM, else the written unit), and when it was made. The subject is not read:
observations are recorded against an order, and kept against that order's pseudonymous patient
(identifying data in a subject reference is never stored). What a family's dose rule needs is
the family's business; here every Observation with a number is taken or refused with the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from nearfab.common.errors import ValidationFailed

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
# a result as the laboratory or the ward stands by it (FHIR ObservationStatus)
USABLE_STATUSES = ("final", "amended", "corrected")
MAX_OBSERVATIONS = 50
FUTURE_SLACK = timedelta(minutes=5)


@dataclass(frozen=True)
class ObservationRead:
    system: str
    code: str
    display: str | None
    value: float
    unit: str
    effective_at: datetime
    source_id: str | None
    fhir_path: str


def _bad(path: str, why: str) -> ValidationFailed:
    return ValidationFailed(f"{path}: {why}", field=path)


def _when(text: Any, path: str) -> datetime:
    if not isinstance(text, str) or not text.strip():
        raise _bad(path, "a date and time is required (when was it measured?)")
    try:
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(path, f"{text!r} is not a FHIR dateTime") from None
    if at.tzinfo is None:
        raise _bad(path, f"{text!r} has no time zone")
    return at.astimezone(UTC)


def _one(resource: Any, path: str, now: datetime) -> ObservationRead:
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Observation":
        raise _bad(f"{path}.resourceType", "an Observation is expected")
    status = resource.get("status")
    if status not in USABLE_STATUSES:
        raise _bad(
            f"{path}.status", f"{status!r}: only {', '.join(USABLE_STATUSES)} results are used"
        )
    codings = (
        (resource.get("code") or {}).get("coding")
        if isinstance(resource.get("code"), Mapping)
        else None
    )
    if not isinstance(codings, list) or not codings:
        raise _bad(f"{path}.code.coding", "the observation's code is required")
    valid = [
        (i, c)
        for i, c in enumerate(codings)
        if isinstance(c, Mapping)
        and isinstance(c.get("system"), str)
        and isinstance(c.get("code"), str)
        and c["code"].strip()
    ]
    if not valid:
        raise _bad(f"{path}.code.coding", "a coding with a system and a code is required")
    _, coding = next(((i, c) for i, c in valid if c["system"] == LOINC), valid[0])
    quantity = resource.get("valueQuantity")
    where = f"{path}.valueQuantity"
    if not isinstance(quantity, Mapping):
        raise _bad(where, "a measured quantity is required")
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(f"{where}.value", f"{value!r} is not a number")
    if value <= 0:
        raise _bad(f"{where}.value", f"{value!r}: a measurement above 0 is required")
    unit = quantity.get("code") if quantity.get("system") == UCUM else quantity.get("unit")
    unit = unit or quantity.get("unit") or quantity.get("code")
    if not isinstance(unit, str) or not unit.strip() or len(unit) > 32:
        raise _bad(f"{where}.code", "the unit is required (a UCUM code, at most 32 characters)")
    if "effectiveDateTime" in resource:
        at = _when(resource["effectiveDateTime"], f"{path}.effectiveDateTime")
    elif "effectiveInstant" in resource:
        at = _when(resource["effectiveInstant"], f"{path}.effectiveInstant")
    elif isinstance(resource.get("effectivePeriod"), Mapping):
        at = _when(resource["effectivePeriod"].get("start"), f"{path}.effectivePeriod.start")
    else:
        raise _bad(f"{path}.effectiveDateTime", "when it was measured is required")
    if at > now + FUTURE_SLACK:
        raise _bad(f"{path}.effectiveDateTime", f"{at.isoformat()} is in the future")
    source = resource.get("id")
    return ObservationRead(
        system=coding["system"][:255],
        code=coding["code"][:64],
        display=(coding.get("display") or None) and str(coding["display"])[:200],
        value=float(value),
        unit=unit,
        effective_at=at,
        source_id=source[:128] if isinstance(source, str) else None,
        fhir_path=path,
    )


def read_observations(document: Any, *, now: datetime) -> list[ObservationRead]:
    """The observations of an Observation or a Bundle of Observations: all or none of them."""
    if not isinstance(document, Mapping):
        raise _bad("resourceType", "a FHIR Observation or Bundle (JSON object) is expected")
    if document.get("resourceType") == "Bundle":
        entries = document.get("entry")
        if not isinstance(entries, list) or not entries:
            raise _bad("Bundle.entry", "the bundle holds no observation")
        if len(entries) > MAX_OBSERVATIONS:
            raise _bad("Bundle.entry", f"{len(entries)} entries; at most {MAX_OBSERVATIONS}")
        return [
            _one(
                e.get("resource") if isinstance(e, Mapping) else None,
                f"Bundle.entry[{i}].resource",
                now,
            )
            for i, e in enumerate(entries)
        ]
    return [_one(document, "Observation", now)]
