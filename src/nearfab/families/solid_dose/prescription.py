"""solid_dose's `prescription` part: implements nearfab.orders.kit.PrescriptionKit.

A printed tablet carries an absolute mass of drug: the dose must be a mass per administration,
made in mg (kg, g, ug and ng are converted), and one tablet is one dose, so the course needs as
many tablets as the prescription gives or implies doses. A dose per kg of body weight is
refused: the prescriber works out the tablet's strength, not the platform.
"""

from __future__ import annotations

from nearfab.common.errors import ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.orders import FhirInputError
from nearfab.orders.kit import DoseIn

MG = "mg"
# UCUM mass code → (multiply by, divide by) to get milligrams; division keeps 75 ug == 0.075 mg
TO_MG: dict[str, tuple[float, float]] = {
    "kg": (1_000_000.0, 1.0),
    "g": (1000.0, 1.0),
    "mg": (1.0, 1.0),
    "ug": (1.0, 1000.0),
    "ng": (1.0, 1_000_000.0),
}


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
