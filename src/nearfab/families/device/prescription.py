"""device's `prescription` part: implements nearfab.orders.kit.PrescriptionKit.

A flowmeter is ordered as one device per dose (doseQuantity 1 "each": a count), for one
patient. What makes it the patient's own is the fit the prescriber states, carried on the
MedicationRequest as identifiers in the family's systems (the core reads MedicationRequest
only; DeviceRequest.parameter would be FHIR's own place for them):

    https://nearfab.org/fhir/device/uroflow-qmax-ml-s | 25     the patient's maximum flow, mL/s
    https://nearfab.org/fhir/device/uroflow-size      | M      the size option

`fit_of` reads them for the design; the envelope check is the design's. The web form asks for
them too (`FORM`: orders.form.ExtraField), checked against the chosen master file's envelope
with the design's own words before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.families.device.geometry import Envelope, check_qmax, check_size
from nearfab.orders.form import ExtraField, PrescriptionForm
from nearfab.orders.kit import DoseIn, NoProductCodes

DEVICE = "{device}"
QMAX_SYSTEM = "https://nearfab.org/fhir/device/uroflow-qmax-ml-s"
SIZE_SYSTEM = "https://nearfab.org/fhir/device/uroflow-size"


class DevicePrescription(NoProductCodes):
    """One flowmeter a dose; the course is the number of devices dispensed (1 unless said)."""

    def accept_dose(self, dose: DoseIn) -> Quantity:
        if dose.kind != "count" or dose.per_kg:
            raise ValidationFailed(
                f"a flowmeter is ordered as a count of devices (1 each), not {dose.read_as!r}",
                field=f"{dose.field}.unit",
            )
        if dose.value != 1:
            raise ValidationFailed(
                f"one flowmeter a dose, not {dose.value:g}", field=f"{dose.field}.value"
            )
        return Quantity(1.0, DEVICE)

    def units_for_course(self, stated: int | None, *, field: str) -> int:
        return 1 if stated is None else stated


def fit_of(identifiers: Sequence[str]) -> tuple[float, str]:
    """(maximum flow in mL/s, size option) from the prescription's identifiers; Refused
    (code fit_missing) naming the missing one."""
    found: dict[str, str] = {}
    for joined in identifiers:
        system, _, value = joined.partition("|")
        if system in (QMAX_SYSTEM, SIZE_SYSTEM):
            found[system] = value.strip()
    if QMAX_SYSTEM not in found:
        raise Refused(
            f"the prescription does not state the patient's maximum flow ({QMAX_SYSTEM})",
            field="qmax_ml_s",
            code="fit_missing",
        )
    if SIZE_SYSTEM not in found:
        raise Refused(
            f"the prescription does not state the size option ({SIZE_SYSTEM})",
            field="size",
            code="fit_missing",
        )
    try:
        qmax = float(found[QMAX_SYSTEM])
    except ValueError:
        raise Refused(
            f"maximum flow {found[QMAX_SYSTEM]!r} is not a number of mL/s",
            field="qmax_ml_s",
            code="fit_missing",
        ) from None
    return qmax, found[SIZE_SYSTEM]


def qmax_field(value: str, envelope: Mapping[str, Any]) -> str:
    """The form's maximum flow: a number of mL/s within the master file's envelope (the
    design's own check and words)."""
    try:
        qmax = float(value.strip().replace(",", "."))
    except ValueError:
        raise Refused(
            f"maximum flow {value!r} is not a number of mL/s", field="qmax_ml_s", code="fit_missing"
        ) from None
    check_qmax(qmax, Envelope.from_dict(envelope))
    return f"{qmax:g}"


def size_field(value: str, envelope: Mapping[str, Any]) -> str:
    return check_size(value.strip(), Envelope.from_dict(envelope))


# the prescription form (orders.form): one device a dose, no course, no body weight; the fit
FORM = PrescriptionForm(
    dose_units=(("1", "one device"),),
    body_weight=False,
    course=False,
    extra=(
        ExtraField(
            "qmax_ml_s",
            "Maximum flow Qmax (mL/s)",
            QMAX_SYSTEM,
            placeholder="25",
            check=qmax_field,
        ),
        ExtraField("size", "Size option", SIZE_SYSTEM, choices="sizes", check=size_field),
    ),
)
