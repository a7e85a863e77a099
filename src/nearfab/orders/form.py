"""What a prescription form asks for, as a product family declares it (optional).

The web form builds the same FHIR input the API takes (a MedicationRequest and its Patient) and
hands it to the same intake (`OrderService.submit`), so the family's prescription kit judges it
as it judges any FHIR prescription. What the form offers is the family's to say, not the web
code's: the dose units it takes (UCUM codes, with the words shown for each), whether it needs
the patient's body weight (sent as a LOINC 29463-7 Observation), and whether a course is counted
from doses a day × days; and the values its prescriptions carry as MedicationRequest identifiers
in its own systems (`ExtraField`), asked for when one of its master files is chosen. A family
sets `prescription_form` on its family object; `form_of` reads it. A family that declares
nothing gets a free unit field and every input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ExtraField", "PrescriptionForm", "form_of"]


@dataclass(frozen=True)
class ExtraField:
    """A value the family's prescriptions carry as a MedicationRequest identifier in `system`
    (as the API's FHIR carries it), asked for on the form as `name` with its `label`.

    `choices`: the key of the master file's design envelope whose keys are offered (a select)
    instead of free text; `check(value, envelope)`: the family's own check of what was typed
    against the chosen master file's design envelope, returning the value to send or raising
    a DomainError, which the form shows at this field (nothing is submitted)."""

    name: str
    label: str
    system: str
    placeholder: str = ""
    choices: str | None = None
    check: Callable[[str, Mapping[str, Any]], str] | None = None

    def options(self, envelope: Mapping[str, Any] | None) -> tuple[str, ...]:
        """The choices a master file's envelope offers (none without `choices`)."""
        if self.choices is None or not isinstance(envelope, Mapping):
            return ()
        found = envelope.get(self.choices)
        return tuple(str(k) for k in found) if isinstance(found, Mapping) else ()


@dataclass(frozen=True)
class PrescriptionForm:
    """`dose_units`: (UCUM code sent as doseQuantity.code/unit, words shown) in the order
    offered, the first the default; `body_weight`: the form asks for the weight in kg;
    `course`: the form asks for doses a day and days (else the prescription is one dose);
    `extra`: the family's own values, each sent as an identifier (ExtraField)."""

    dose_units: tuple[tuple[str, str], ...] = ()
    body_weight: bool = False
    course: bool = True
    extra: tuple[ExtraField, ...] = ()


def form_of(family: Any) -> PrescriptionForm:
    """The family's declared form, or the generic one (free unit text, every input)."""
    declared = getattr(family, "prescription_form", None)
    if isinstance(declared, PrescriptionForm):
        return declared
    return PrescriptionForm(body_weight=True)
