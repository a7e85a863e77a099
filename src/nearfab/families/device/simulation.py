"""device's `simulation` part: implements nearfab.simulation.kit.SimulationKit.

A prescription of a scenario's mix says, in this family's words:

    {qmax_ml_s: 25, size: M, units: 1}

`qmax_ml_s` (the patient's maximum flow, required) and `size` (an option of the envelope,
required) make the design order intake makes (`design_flowmeter`); `units` is 1 unless given.
The machine time and filament are the family's `duration_s` and `material_needed_g` (heat-up +
the printed volume at the nozzle's volumetric rate), as the scheduler books them.

The failure model is a per-layer one: each layer of the build fails (a skipped or shifted layer
that the coupon or the leak check would catch) with probability PER_LAYER, independently, so a
build of n layers fails with 1 - (1 - PER_LAYER)^n: taller columns fail more often.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from nearfab.common.errors import ValidationFailed
from nearfab.families.device.geometry import LAYER_MM, Envelope, design_flowmeter
from nearfab.families.device.prescription import DEVICE

QMAX, SIZE, UNITS = "qmax_ml_s", "size", "units"
KEYS = (QMAX, SIZE, UNITS)
# chance that one layer of an FDM build goes wrong (assumption: about 1 build in 30 of a
# 130 mm column, in line with the study's pharmacy prints; docs/device.md)
PER_LAYER = 5e-5


def build_layers(design: Mapping[str, Any]) -> int:
    return math.ceil((float(design["column_height_mm"]) + float(design["base_mm"])) / LAYER_MM)


class DeviceSimulation:
    """The network simulator's model of one flowmeter build."""

    def design(
        self, envelope: Mapping[str, Any], prescription: Mapping[str, Any]
    ) -> dict[str, Any]:
        unknown = sorted(set(prescription) - set(KEYS))
        if unknown:
            raise ValidationFailed(
                f"a flowmeter prescription says {', '.join(KEYS)} (and weight), not {unknown[0]!r}",
                field=unknown[0],
            )
        for key in (QMAX, SIZE):
            if key not in prescription:
                raise ValidationFailed(f"a flowmeter prescription needs {key}", field=key)
        units = prescription.get(UNITS, 1)
        if isinstance(units, float) and units.is_integer():
            units = int(units)
        return design_flowmeter(
            qmax_ml_s=prescription[QMAX],
            size=prescription[SIZE],
            units=units,
            envelope=Envelope.from_dict(envelope),
        )

    def failure_probability(self, design: Mapping[str, Any]) -> float | None:
        return 1.0 - (1.0 - PER_LAYER) ** build_layers(design)

    def prescription_of(self, order: Any) -> dict[str, Any] | None:
        design = order.design
        if order.dose_unit != DEVICE or not design:
            return None
        return {QMAX: float(design[QMAX]), SIZE: str(design[SIZE]), UNITS: int(order.units)}
