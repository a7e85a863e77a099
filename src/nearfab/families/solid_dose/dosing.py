"""solid_dose's dose rule: a tablet's dose from the patient's body-surface area.

A master file may declare `dose_rule` (docs/dose-adjustment.md):

    {"kind": "body_surface_area",
     "mg_per_m2_per_day": 8,                       # the target the proposal aims at
     "range_mg_per_m2_per_day": {"min": 8, "max": 10},
     "step_mg": 0.5,                               # a dose is a whole number of steps
     "doses_per_day": 3,                           # the split when the order does not say
     "max_observation_age_days": 30,               # older weights and heights are not used
     "source": "Bornstein 2016 (Endocrine Society) / Ahmet 2011: 8-10 mg/m2/day"}

Body-surface area by Mosteller's formula (N Engl J Med 1987;317:1098):
BSA (m²) = sqrt(height (cm) × weight (kg) / 3600). The daily dose is the target mg/m²/day ×
BSA; one tablet is one administration, so the tablet holds the daily dose / doses a day,
rounded to the nearest step; if that falls outside the guideline range (in mg/m²/day actually
given), the nearest step inside the range is taken, and when no step is inside it the rule
refuses. The numbers used and every step of the working are kept with the proposal.

Observations are LOINC-coded vital signs (FHIR Body Weight and Body Height profiles):
29463-7 body weight (UCUM kg, g, [lb_av], [oz_av]) and 8302-2 body height (cm, m, mm, [in_i]).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from nearfab.common.errors import ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.orders.kit import ObservationIn, ProposedDose

LOINC = "http://loinc.org"
BODY_WEIGHT = "29463-7"
BODY_HEIGHT = "8302-2"
# UCUM unit -> kg / cm (exact: the avoirdupois pound is 0.45359237 kg, the inch 2.54 cm)
TO_KG = {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237, "[oz_av]": 0.45359237 / 16}
TO_CM = {"cm": 1.0, "m": 100.0, "mm": 0.1, "[in_i]": 2.54}
KIND = "body_surface_area"
KEYS = {
    "kind",
    "mg_per_m2_per_day",
    "range_mg_per_m2_per_day",
    "step_mg",
    "doses_per_day",
    "max_observation_age_days",
    "source",
}
_F = "dose_rule"


def mosteller_bsa(height_cm: float, weight_kg: float) -> float:
    """Body-surface area in m² (Mosteller 1987): sqrt(height cm × weight kg / 3600)."""
    return math.sqrt(height_cm * weight_kg / 3600.0)


def _number(rule: Mapping[str, Any], key: str, *, default: float | None = None) -> float:
    value = rule.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed(f"{_F}.{key} must be a number, not {value!r}", field=f"{_F}.{key}")
    if not math.isfinite(value) or value <= 0:
        raise ValidationFailed(
            f"{_F}.{key} must be a positive number, not {value!r}", field=f"{_F}.{key}"
        )
    return float(value)


def check_rule(rule: Mapping[str, Any]) -> None:
    """Refuse a wrong `dose_rule`, naming the key and the reason."""
    if not isinstance(rule, Mapping):
        raise ValidationFailed(f"{_F} must be an object", field=_F)
    unknown = sorted(set(rule) - KEYS)
    if unknown:
        raise ValidationFailed(
            f"{_F}.{unknown[0]}: unknown key (known: {', '.join(sorted(KEYS))})",
            field=f"{_F}.{unknown[0]}",
        )
    if rule.get("kind") != KIND:
        raise ValidationFailed(
            f"{_F}.kind: {rule.get('kind')!r} is not a rule this family knows ({KIND!r})",
            field=f"{_F}.kind",
        )
    target = _number(rule, "mg_per_m2_per_day")
    band = rule.get("range_mg_per_m2_per_day")
    where = f"{_F}.range_mg_per_m2_per_day"
    if not isinstance(band, Mapping) or set(band) != {"min", "max"}:
        raise ValidationFailed(f"{where} must be {{'min': ..., 'max': ...}}", field=where)
    low = _number(band, "min")
    high = _number(band, "max")
    if low > high:
        raise ValidationFailed(f"{where}: min {low:g} is above max {high:g}", field=where)
    if not low <= target <= high:
        raise ValidationFailed(
            f"{_F}.mg_per_m2_per_day: {target:g} is outside the range {low:g}-{high:g}",
            field=f"{_F}.mg_per_m2_per_day",
        )
    _number(rule, "step_mg")
    _number(rule, "doses_per_day", default=1)
    _number(rule, "max_observation_age_days", default=30)
    source = rule.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ValidationFailed(
            f"{_F}.source: name the guideline the range comes from", field=f"{_F}.source"
        )


def _latest(
    observations: Sequence[ObservationIn],
    code: str,
    table: Mapping[str, float],
    on: datetime,
    max_age: timedelta,
    what: str,
) -> tuple[ObservationIn, float]:
    """The newest observation of `code` (LOINC) with a unit the table knows, converted."""
    found = [o for o in observations if o.system == LOINC and o.code == code]
    usable = [o for o in found if o.unit in table]
    if not usable:
        had = f" (held: {', '.join(sorted({o.unit for o in found}))})" if found else ""
        raise ValidationFailed(
            f"observations: the rule needs the patient's {what} (LOINC {code}) in "
            f"{', '.join(table)}{had}",
            field="observations",
        )
    newest = max(usable, key=lambda o: o.effective_at)
    if on - newest.effective_at > max_age:
        raise ValidationFailed(
            f"observations: the latest {what} ({newest.effective_at:%Y-%m-%d}) is older than "
            f"{max_age.days} days; record a new one",
            field="observations",
        )
    return newest, newest.value * table[newest.unit]


def propose(
    rule: Mapping[str, Any],
    *,
    current: Quantity,
    doses_per_day: float | None,
    observations: Sequence[ObservationIn],
    on: datetime,
) -> ProposedDose:
    """The tablet's dose by the body-surface-area rule (module docstring)."""
    check_rule(rule)
    max_age = timedelta(days=float(rule.get("max_observation_age_days", 30)))
    weight_obs, weight_kg = _latest(observations, BODY_WEIGHT, TO_KG, on, max_age, "body weight")
    height_obs, height_cm = _latest(observations, BODY_HEIGHT, TO_CM, on, max_age, "body height")
    bsa = mosteller_bsa(height_cm, weight_kg)
    target = float(rule["mg_per_m2_per_day"])
    low = float(rule["range_mg_per_m2_per_day"]["min"])
    high = float(rule["range_mg_per_m2_per_day"]["max"])
    step = float(rule["step_mg"])
    split = float(doses_per_day or rule.get("doses_per_day", 1))
    daily_target = target * bsa
    steps = math.floor(daily_target / split / step + 0.5)  # nearest step, halves up

    def given(n: int) -> float:  # mg/m²/day given by n steps a tablet
        return n * step * split / bsa

    # tolerance: 8.0 mg/m²/day computed as 7.9999999 is inside a range starting at 8
    eps = 1e-9
    while steps > 0 and given(steps) > high + eps:
        steps -= 1
    while given(steps) < low - eps:
        steps += 1
    if steps < 1 or given(steps) > high + eps:
        raise ValidationFailed(
            f"{_F}: no dose in steps of {step:g} mg, {split:g} a day, gives "
            f"{low:g}-{high:g} mg/m2/day for a body-surface area of {bsa:.4f} m2",
            field=_F,
        )
    per_dose = round(steps * step, 9)
    working = {
        "formula": "Mosteller: BSA = sqrt(height_cm * weight_kg / 3600)",
        "weight_kg": round(weight_kg, 9),
        "height_cm": round(height_cm, 9),
        "bsa_m2": round(bsa, 6),
        "target_mg_per_m2_per_day": target,
        "range_mg_per_m2_per_day": [low, high],
        "daily_target_mg": round(daily_target, 6),
        "doses_per_day": split,
        "step_mg": step,
        "dose_mg": per_dose,
        "daily_mg": round(per_dose * split, 9),
        "given_mg_per_m2_per_day": round(given(steps), 6),
        "current_dose": str(current),
        "source": rule.get("source"),
    }
    return ProposedDose(Quantity(per_dose, "mg"), (weight_obs.id, height_obs.id), working)
