"""What the orders domain asks of a product family: `PrescriptionKit`.

The domain owns the question; families under nearfab.families answer it, and the domain reaches
them only through the registry bootstrap wires in (DESIGN.md, "The family kit").

The FHIR reader (orders/fhir.py) reports what a prescription says about the dose, without
judging it against any product: the value and unit as written, the unit as a UCUM code where it
knows one, whether the dose is a ratio per body weight (per kg), and the patient's body weight
when the prescription carries it (an Observation). The family of the master file that accepts
the medication then decides what it takes: it returns the dose as it will be made (a `Quantity`,
stored on the order as `dose_value` + `dose_unit`) or refuses, naming the FHIR field and the
reason. It also decides the number of units the course needs when the prescription does not
give one.

A prescription may name a product rather than an ingredient: a product code whose data give
the strength of one unit of the product. Which codes those are, and what a strength means, is
the family's knowledge (its own code data), asked through `product_codes`, `product_dose` and
`check_product`; a family that knows no product codes inherits `NoProductCodes`.

A family whose master files may adjust a dose from the patient's observations over time (body
weight, height, a drug level) also implements `DoseRuleKit` (optional: intake never needs it;
docs/dose-adjustment.md). The core stores the observations and asks; the family's rule answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from nearfab.common.quantity import Quantity

__all__ = [
    "DoseIn",
    "DoseRuleKit",
    "MedicationCode",
    "NoProductCodes",
    "ObservationIn",
    "PrescriptionKit",
    "PrescriptionKits",
    "ProposedDose",
]


@dataclass(frozen=True)
class MedicationCode:
    """One coding of the prescribed medication (system, code, display as sent)."""

    system: str
    code: str
    display: str | None


@dataclass(frozen=True)
class DoseIn:
    """One prescription's dose as the FHIR reader found it (doseQuantity), not yet judged.

    - `value`, `unit`: as written (the Quantity's `unit`, else its `code`);
    - `read_as`: the unit text the reader classified (the coded unit when its system is UCUM or
      the orderable drug forms, else the written unit); refusals quote it;
    - `kind`: "mass", "volume", "activity" or "count" for an amount the reader knows; for a
      ratio per body weight the kind of its numerator, or None when the reader does not know it;
    - `ucum`: the amount's unit as a UCUM code when the reader knows one (masses: kg, g, mg, ug,
      ng); for a ratio per body weight, its numerator's;
    - `per_kg`: the dose is a ratio per kilogram of body weight (UCUM ".../kg");
    - `weight`: the patient's body weight in kg when the prescription carries it;
    - `field`: the FHIR path of the doseQuantity; a refusal names it (or one of its elements).
    """

    value: float
    unit: str
    read_as: str
    kind: str | None
    ucum: str | None
    per_kg: bool
    weight: Quantity | None
    field: str


@runtime_checkable
class PrescriptionKit(Protocol):
    """A family's prescription rules (the `prescription` part of a ProductFamily)."""

    def accept_dose(self, dose: DoseIn) -> Quantity:
        """The dose the family makes for this prescription, with its unit (the order keeps it);
        ValidationFailed (FhirInputError for the FHIR document itself) naming `dose.field`, or
        an element of it, and the reason when the family does not take it."""
        ...

    def units_for_course(self, stated: int | None, *, field: str) -> int:
        """The number of units the course needs. `stated` is what the prescription gives or
        implies (the dispensed count, else doses a day × supply days, else the number of
        doses), None when it says nothing; `field` is the FHIR path a refusal names (its
        dispenseRequest). ValidationFailed naming it when the number cannot be worked out."""
        ...

    def product_codes(self, codings: Sequence[MedicationCode]) -> list[MedicationCode]:
        """The codings that name a product the family knows (a product code with the strength
        of one unit of the product), each once, in order, with the family's display of it;
        [] when none does. Intake refuses a master file that accepts the medication but does
        not declare each of them among its accepted codes."""
        ...

    def product_dose(
        self, dose: DoseIn, codings: Sequence[MedicationCode], *, medication_field: str
    ) -> tuple[DoseIn, int]:
        """The dose `accept_dose` is then asked to judge, and how many units of the product the
        codings name one dose is: `(dose, 1)` unless the dose is counted in units of such a
        product, which the family turns into an amount of its ingredient. ValidationFailed
        naming `medication_field` or `dose.field` and the reason when it cannot."""
        ...

    def check_product(
        self,
        dose: Quantity,
        codings: Sequence[MedicationCode],
        *,
        medication_field: str,
        dose_field: str,
    ) -> None:
        """The dose as `accept_dose` returned it must agree with the strength of every product
        the codings name; ValidationFailed naming `dose_field` and the reason otherwise."""
        ...


class NoProductCodes:
    """The product-code members of `PrescriptionKit` for a family that knows no product codes:
    no coding names a product, the dose is judged as written, one dose is one unit."""

    def product_codes(self, codings: Sequence[MedicationCode]) -> list[MedicationCode]:
        return []

    def product_dose(
        self, dose: DoseIn, codings: Sequence[MedicationCode], *, medication_field: str
    ) -> tuple[DoseIn, int]:
        return dose, 1

    def check_product(
        self,
        dose: Quantity,
        codings: Sequence[MedicationCode],
        *,
        medication_field: str,
        dose_field: str,
    ) -> None:
        return None


class PrescriptionKits(Protocol):
    """Finds a product family's prescription part (bootstrap passes the family registry's
    design service; tests may pass anything with this method)."""

    def prescription(self, family: str) -> PrescriptionKit:
        """ValidationFailed naming `product_family` when no such family is registered."""
        ...


@dataclass(frozen=True)
class ObservationIn:
    """One observation of the patient (a FHIR Observation's valueQuantity), as stored: the code
    (system + code, LOINC for vital signs), the value and its unit (the UCUM code when the
    sender gave one, else the written unit), when it was made, and its row id."""

    id: str
    system: str
    code: str
    value: float
    unit: str
    effective_at: datetime


@dataclass(frozen=True)
class ProposedDose:
    """A family's answer to "what dose does the rule give now": the dose per unit (as the order
    keeps it), the observations it used (their ids), and its working, shown to the clinician
    and kept with the proposal (every number the rule computed, named)."""

    dose: Quantity
    used: tuple[str, ...]
    working: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class DoseRuleKit(Protocol):
    """The optional dose-adjustment part of a family's prescription kit: a master file's
    `dose_rule` section, and the dose it gives from the patient's observations."""

    def check_dose_rule(self, rule: Mapping[str, Any]) -> None:
        """ValidationFailed naming `dose_rule.<key>` and the reason when the section is wrong
        (asked when a master file is drafted)."""
        ...

    def propose_dose(
        self,
        rule: Mapping[str, Any],
        *,
        current: Quantity,
        doses_per_day: float | None,
        observations: Sequence[ObservationIn],
        on: datetime,
    ) -> ProposedDose:
        """The dose the rule gives from the latest usable observations (newest first in
        `observations`); ValidationFailed naming `observations` and what is missing (or too
        old) when it cannot, or naming `dose_rule` when no dose within the rule's range can be
        made."""
        ...
