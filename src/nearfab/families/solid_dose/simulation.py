"""solid_dose's `simulation` part: implements nearfab.simulation.kit.SimulationKit.

A prescription of a scenario's mix says, in this family's words:

    {dose_mg: 2.0, units: 21, patient_group: child}

`dose_mg` is the dose per tablet in mg (required), `units` the tablets in the course (1 when
not given), `patient_group` the patient's group (neonate, infant, child, adolescent, adult) or
absent when unknown. The design is the one order intake makes (`design_tablet`, with the
master file's envelope); the machine time and material are the family's `duration_s` and
`material_needed_g`, as the scheduler plans them. The family has no failure model: the
scenario's batch failure probability is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nearfab.common.errors import ValidationFailed
from nearfab.families.solid_dose.logic import Envelope, design_tablet
from nearfab.orders import Order

MG = "mg"
DOSE, UNITS, GROUP = "dose_mg", "units", "patient_group"
KEYS = (DOSE, UNITS, GROUP)


def _units(value: Any) -> Any:
    # YAML may write a count as 21.0; a fractional count is left for design_tablet to refuse
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class SolidDoseSimulation:
    """The network simulator's model of a tablet printer's batch."""

    def design(
        self, envelope: Mapping[str, Any], prescription: Mapping[str, Any]
    ) -> dict[str, Any]:
        unknown = sorted(set(prescription) - set(KEYS))
        if unknown:
            raise ValidationFailed(
                f"a tablet prescription says {', '.join(KEYS)} (and weight), not {unknown[0]!r}",
                field=unknown[0],
            )
        if DOSE not in prescription:
            raise ValidationFailed(
                f"a tablet prescription needs {DOSE}, the dose per tablet in {MG}", field=DOSE
            )
        group = prescription.get(GROUP)
        if group is not None and not isinstance(group, str):
            raise ValidationFailed(
                f"the patient group must be a word such as 'child', not {group!r}", field=GROUP
            )
        return design_tablet(
            dose_mg=prescription[DOSE],
            units=_units(prescription.get(UNITS, 1)),
            group=group,
            envelope=Envelope.from_dict(envelope),
        ).to_dict()

    def failure_probability(self, design: Mapping[str, Any]) -> float | None:
        return None

    def prescription_of(self, order: Order) -> dict[str, Any] | None:
        dose = order.dose
        if dose.unit != MG:
            return None
        says: dict[str, Any] = {DOSE: float(dose.value), UNITS: int(order.units)}
        if order.patient_group is not None:
            says[GROUP] = order.patient_group
        return says
