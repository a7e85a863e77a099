"""What a prescription form asks for, as a product family declares it (optional).

The web form builds the same FHIR input the API takes (a MedicationRequest and its Patient) and
hands it to the same intake (`OrderService.submit`), so the family's prescription kit judges it
as it judges any FHIR prescription. What the form offers is the family's to say, not the web
code's: the dose units it takes (UCUM codes, with the words shown for each), whether it needs
the patient's body weight (sent as a LOINC 29463-7 Observation), and whether a course is counted
from doses a day × days. A family sets `prescription_form` on its family object; `form_of`
reads it. A family that declares nothing gets a free unit field and every input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PrescriptionForm", "form_of"]


@dataclass(frozen=True)
class PrescriptionForm:
    """`dose_units`: (UCUM code sent as doseQuantity.code/unit, words shown) in the order
    offered, the first the default; `body_weight`: the form asks for the weight in kg;
    `course`: the form asks for doses a day and days (else the prescription is one dose)."""

    dose_units: tuple[tuple[str, str], ...] = ()
    body_weight: bool = False
    course: bool = True


def form_of(family: Any) -> PrescriptionForm:
    """The family's declared form, or the generic one (free unit text, every input)."""
    declared = getattr(family, "prescription_form", None)
    if isinstance(declared, PrescriptionForm):
        return declared
    return PrescriptionForm(body_weight=True)
