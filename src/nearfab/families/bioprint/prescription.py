"""bioprint's `prescription` part: implements nearfab.orders.kit.PrescriptionKit.

Islet micro-tissues are dosed like a clinical islet transplant: in islet equivalents (IEQ, the
islet volume of a 150 µm diameter islet; Ricordi et al., Acta Diabetol Lat 1990) per kg of the
recipient's body weight. The FHIR doseQuantity is a ratio per kg whose numerator is the UCUM
annotation "{IEQ}" with an optional power of ten ("10*3{IEQ}/kg"), and the prescription carries
the recipient's weight (an Observation). The family makes the whole dose for that recipient:
dose per kg × weight, a count of islet equivalents ("{IEQ}"), which the order keeps.

A dose below the clinical minimum is refused naming the dose's value: 5,000 IEQ/kg for a first
transplant (the NIH Clinical Islet Transplantation Consortium's CIT-07 lot release criteria,
"Islet quantity: first infusion ≥5.0 × 10^3 IEQ/kg recipient BW": Ricordi et al., Diabetes
2016;65(11):3418-3428, Table 3; the same floor in Table 2 of "Transplantation of Encapsulated
Pancreatic Islets as a Treatment for Patients with Type 1 Diabetes Mellitus", Adv Med 2014,
doi:10.1155/2014/429710). One order is one transplant: the course is one unit.
"""

from __future__ import annotations

import math
import re

from nearfab.common.errors import ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.orders.kit import DoseIn, NoProductCodes

IEQ = "{IEQ}"  # the unit of an accepted dose: islet equivalents (UCUM annotation)
KG = "kg"
# the clinical minimum of a first islet transplant (module docstring: CIT-07, Table 3)
MIN_IEQ_PER_KG = 5_000.0
# the numerator of a dose per kg in islet equivalents: an optional power of ten, then {IEQ}
_IEQ_COUNT = re.compile(
    r"^(?:10(?:\*|\^|e)(?P<exponent>[+-]?\d{1,2})\s*\.?\s*)?\{?\s*ieq\s*\}?$", re.IGNORECASE
)


def ieq_multiplier(numerator: str) -> float | None:
    """What one unit of the dose's numerator counts in IEQ ("{IEQ}" 1, "10*3{IEQ}" 1000), or
    None when it does not count islet equivalents."""
    found = _IEQ_COUNT.match(numerator.strip())
    if found is None:
        return None
    exponent = found["exponent"]
    return 10.0 ** int(exponent) if exponent is not None else 1.0


def _numerator(read_as: str) -> str | None:
    numerator, slash, denominator = read_as.strip().rpartition("/")
    denominator = denominator.strip().lower()
    if not slash or not (denominator == KG or denominator.startswith("kg{")):
        return None
    return numerator


class BioprintPrescription(NoProductCodes):
    """What an islet micro-tissue prescription must say: IEQ per kg (at least the clinical
    minimum) and the recipient's body weight. It knows no product codes."""

    def accept_dose(self, dose: DoseIn) -> Quantity:
        unit_field = f"{dose.field}.unit"
        numerator = _numerator(dose.read_as) if dose.per_kg else None
        multiplier = ieq_multiplier(numerator) if numerator is not None else None
        if multiplier is None or dose.kind not in (None, "count"):
            raise ValidationFailed(
                f"dose unit {dose.read_as!r} is not islet equivalents per kg of the recipient's"
                " body weight ({IEQ}/kg)",
                field=unit_field,
            )
        per_kg = dose.value * multiplier
        if not math.isfinite(per_kg) or per_kg <= 0:
            raise ValidationFailed(
                f"dose {dose.value!r} must be a positive finite number", field=f"{dose.field}.value"
            )
        if per_kg < MIN_IEQ_PER_KG:
            raise ValidationFailed(
                f"dose {per_kg:g} IEQ/kg is below the clinical minimum of"
                f" {MIN_IEQ_PER_KG:g} IEQ/kg of recipient body weight for an islet transplant",
                field=f"{dose.field}.value",
            )
        if dose.weight is None:
            raise ValidationFailed(
                f"a dose of {dose.value:g} {dose.read_as} needs the recipient's body weight:"
                " send a body-weight Observation (LOINC 29463-7) with the prescription",
                field=dose.field,
            )
        if dose.weight.unit != KG or not dose.weight.value > 0:
            raise ValidationFailed(
                f"the recipient's body weight must be a positive number of kg, not {dose.weight}",
                field=dose.field,
            )
        return Quantity(per_kg * dose.weight.value, IEQ)

    def units_for_course(self, stated: int | None, *, field: str) -> int:
        if stated is not None and stated != 1:
            raise ValidationFailed(
                f"islet micro-tissues are made for one transplant, not {stated}: send one"
                " prescription per transplant",
                field=field,
            )
        return 1
