"""cell_therapy's `prescription` part: implements nearfab.orders.kit.PrescriptionKit.

An autologous cell product is dosed in viable cells per kg of body weight: the FHIR
doseQuantity is a ratio per kg whose numerator counts cells, written as a UCUM annotation
("{cells}/kg") with an optional power of ten ("10*6{cells}/kg", "10*6.{cells}/kg",
"10^6 {cells}/kg"), and the prescription carries the patient's body weight (an Observation the
FHIR reader finds). The family makes the whole dose for that patient: dose per kg × weight, a
count of cells ("{cells}"), which the order keeps. It refuses a dose that is not per kg, a mass
(or any other amount that is not a count of cells) and a dose per kg without the weight.

One order is one infusion: the course is one unit (the design decides how many bags hold it).
A prescription asking for more than one is refused rather than silently cut to one.
"""

from __future__ import annotations

import math
import re

from nearfab.common.errors import ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.orders.kit import DoseIn, NoProductCodes

CELLS = "{cells}"  # the unit of an accepted dose: a count of viable cells (UCUM annotation)
KG = "kg"
# the numerator of a dose per kg that counts cells: an optional power of ten (10*6, 10^6, 10e6),
# an optional multiplication dot, then an annotation or word naming cells
_CELL_COUNT = re.compile(
    r"^(?:10(?:\*|\^|e)(?P<exponent>[+-]?\d{1,2})\s*\.?\s*)?"
    r"(?:\{\s*(?P<annotated>[^{}]*)\s*\}|(?P<word>[a-z+ -]*))$",
    re.IGNORECASE,
)


def cells_multiplier(numerator: str) -> float | None:
    """What one unit of a dose numerator counts in cells ("{cells}" 1, "10*6{cells}" 10^6), or
    None when the numerator does not count cells."""
    found = _CELL_COUNT.match(numerator.strip())
    if found is None:
        return None
    name = (found["annotated"] if found["annotated"] is not None else found["word"] or "").lower()
    if not re.search(r"\bcells?\b", name):
        return None
    exponent = found["exponent"]
    return 10.0 ** int(exponent) if exponent is not None else 1.0


def _numerator(read_as: str) -> str | None:
    numerator, slash, denominator = read_as.strip().rpartition("/")
    denominator = denominator.strip().lower()
    if not slash or not (denominator == KG or denominator.startswith("kg{")):
        return None
    return numerator


class CellTherapyPrescription(NoProductCodes):
    """What a cell therapy prescription must say: viable cells per kg, and the body weight.
    It knows no product codes (`NoProductCodes`): the dose is judged as written."""

    def accept_dose(self, dose: DoseIn) -> Quantity:
        unit_field = f"{dose.field}.unit"
        if dose.kind == "mass":
            raise ValidationFailed(
                f"dose unit {dose.read_as!r} is a mass; a cell product is dosed in viable "
                "cells per kg of body weight ({cells}/kg)",
                field=unit_field,
            )
        if not dose.per_kg:
            raise ValidationFailed(
                f"dose unit {dose.read_as!r} is not per kg of body weight; a cell product is "
                "dosed in viable cells per kg ({cells}/kg)",
                field=unit_field,
            )
        numerator = _numerator(dose.read_as)
        multiplier = cells_multiplier(numerator) if numerator is not None else None
        if multiplier is None or dose.kind not in (None, "count"):
            raise ValidationFailed(
                f"dose unit {dose.read_as!r} does not count cells; a cell product is dosed in "
                "viable cells per kg ({cells}/kg or 10*6{cells}/kg)",
                field=unit_field,
            )
        if dose.weight is None:
            raise ValidationFailed(
                f"a dose of {dose.value:g} {dose.read_as} needs the patient's body weight: "
                "send a body-weight Observation (LOINC 29463-7) with the prescription",
                field=dose.field,
            )
        if dose.weight.unit != KG or not dose.weight.value > 0:
            raise ValidationFailed(
                f"the patient's body weight must be a positive number of kg, not {dose.weight}",
                field=dose.field,
            )
        cells = dose.value * multiplier * dose.weight.value
        if not math.isfinite(cells):
            raise ValidationFailed(f"dose {dose.value!r} is not a finite number", field=dose.field)
        return Quantity(cells, CELLS)

    def units_for_course(self, stated: int | None, *, field: str) -> int:
        if stated is not None and stated != 1:
            raise ValidationFailed(
                f"an autologous cell product is made for one infusion, not {stated}: send one "
                "prescription per infusion",
                field=field,
            )
        return 1
