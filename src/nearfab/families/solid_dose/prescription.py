"""solid_dose's `prescription` part: implements nearfab.orders.kit.PrescriptionKit.

A printed tablet carries an absolute mass of drug: the dose must be a mass per administration,
made in mg (kg, g, ug and ng are converted), and one tablet is one dose, so the course needs as
many tablets as the prescription gives or implies doses. A dose per kg of body weight is
refused: the prescriber works out the tablet's strength, not the platform.

A prescription may name a tablet product (an RxNorm SCD such as "propranolol hydrochloride
10 MG Oral Tablet", from the shipped code data in `codes/`): a master file must declare it among
its accepted codes, a dose counted in tablets of it ("2 tablets") is that many times its
strength (20 mg, made as one printed tablet), and the dose must be a whole number of its
strength (20 mg of a 10 mg tablet agrees, 25 mg does not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from nearfab.common.errors import ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.families.solid_dose import dosing
from nearfab.families.solid_dose.codes import ProductCode, product_code
from nearfab.orders import FhirInputError
from nearfab.orders.kit import DoseIn, MedicationCode, ObservationIn, ProposedDose
from nearfab.orders.services import dose_text

MG = "mg"
# UCUM mass code → (multiply by, divide by) to get milligrams; division keeps 75 ug == 0.075 mg
TO_MG: dict[str, tuple[float, float]] = {
    "kg": (1_000_000.0, 1.0),
    "g": (1000.0, 1.0),
    "mg": (1.0, 1.0),
    "ug": (1.0, 1000.0),
    "ng": (1.0, 1_000_000.0),
}
# a mass's UCUM code -> mg (what a product code's strength is compared in)
_MG = {"kg": 1e6, "g": 1e3, "mg": 1.0, "ug": 1e-3, "ng": 1e-6}
# how close a dose must be to a whole number of tablets of the coded product (relative)
_WHOLE = 1e-9


def _products(codings: Sequence[MedicationCode]) -> list[ProductCode]:
    """The product codes (with a known strength) among the medication's codings, each once."""
    found = (product_code(c.system, c.code) for c in codings)
    return list({(p.system, p.code): p for p in found if p is not None}.values())


class SolidDosePrescription:
    """What a tablet prescription must say: a mass per dose, and a number of tablets."""

    def accept_dose(self, dose: DoseIn) -> Quantity:
        if dose.per_kg:
            raise FhirInputError(
                f"{dose.field}: dose unit {dose.read_as!r} is a ratio (per body weight, area or "
                "time): an absolute dose per administration is required",
                field=dose.field,
            )
        factor = TO_MG.get(dose.ucum or "") if dose.kind == "mass" else None
        if factor is None:
            raise ValidationFailed(
                f"dose unit {dose.unit!r} is not a mass; tablets are dosed in mg",
                field=f"{dose.field}.unit",
            )
        multiply, divide = factor
        return Quantity(dose.value * multiply / divide, MG)

    def units_for_course(self, stated: int | None, *, field: str) -> int:
        if stated is None:
            raise ValidationFailed(
                "the number of tablets cannot be worked out: give dispenseRequest.quantity, or "
                "expectedSupplyDuration with a dosage timing",
                field=field,
            )
        return stated

    def product_codes(self, codings: Sequence[MedicationCode]) -> list[MedicationCode]:
        return [MedicationCode(p.system, p.code, p.display) for p in _products(codings)]

    def product_dose(
        self, dose: DoseIn, codings: Sequence[MedicationCode], *, medication_field: str
    ) -> tuple[DoseIn, int]:
        """A dose in tablets of the coded product ("2 tablets" of propranolol 10 mg tablets)
        is that many times the product's strength, a mass (20 mg, made as one tablet); a
        fraction of a tablet is refused. Any other dose is judged as written, one dose a
        tablet."""
        products = _products(codings)
        if not products or dose.kind != "count" or dose.per_kg:
            return dose, 1
        product = products[0]
        strengths = {(p.strength_value, p.strength_unit) for p in products}
        if len(strengths) > 1:
            raise ValidationFailed(
                f"{medication_field}: the medication's product codings name different "
                f"strengths ({', '.join(p.strength_text for p in products)})",
                field=medication_field,
            )
        units = dose.value
        if abs(units - round(units)) > _WHOLE * max(1.0, units) or round(units) < 1:
            raise ValidationFailed(
                f"{dose.field}: {units:g} {dose.unit} is not a whole number of "
                f"{product.display} ({product.strength_text}); prescribe the dose as a mass",
                field=dose.field,
            )
        mass = round(units) * product.strength_value
        made = DoseIn(
            value=mass,
            unit=product.strength_unit,
            read_as=f"{units:g} {dose.unit} x {product.strength_text}",
            kind="mass",
            ucum=product.strength_unit,
            per_kg=False,
            weight=dose.weight,
            field=dose.field,
        )
        return made, round(units)

    def check_product(
        self,
        dose: Quantity,
        codings: Sequence[MedicationCode],
        *,
        medication_field: str,
        dose_field: str,
    ) -> None:
        """The dose, as accepted, must be a whole number (at least one) of tablets of every
        coded product's strength: 20 mg of a 10 mg tablet agrees, 25 mg does not."""
        for product in _products(codings):
            where = f"{medication_field} ({product.system} {product.code})"
            factor = _MG.get(dose.unit)
            strength = product.strength_value * _MG[product.strength_unit]
            if factor is None:
                raise ValidationFailed(
                    f"{dose_field}: the dose {dose_text(dose)} cannot be compared with the "
                    f"strength of {product.display}, {product.strength_text} ({where})",
                    field=dose_field,
                )
            units = dose.value * factor / strength
            if round(units) < 1 or abs(units - round(units)) > _WHOLE * max(1.0, units):
                raise ValidationFailed(
                    f"{dose_field}: the dose {dose_text(dose)} does not agree with the "
                    f"strength of the prescribed product {product.display}, "
                    f"{product.strength_text} ({where}): it is {units:g} {product.per}s, not "
                    "a whole number",
                    field=dose_field,
                )

    # --- dose adjustment (orders.kit.DoseRuleKit; families/solid_dose/dosing.py) --------------
    def check_dose_rule(self, rule: Mapping[str, Any]) -> None:
        dosing.check_rule(rule)

    def propose_dose(
        self,
        rule: Mapping[str, Any],
        *,
        current: Quantity,
        doses_per_day: float | None,
        observations: Sequence[ObservationIn],
        on: datetime,
    ) -> ProposedDose:
        return dosing.propose(
            rule,
            current=current,
            doses_per_day=doses_per_day,
            observations=observations,
            on=on,
        )
