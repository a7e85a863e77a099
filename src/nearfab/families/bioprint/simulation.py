"""bioprint's `simulation` part: implements nearfab.simulation.kit.SimulationKit.

A prescription of a scenario's mix is {dose_per_kg: IEQ/kg, body_weight_kg: kg}; the design is
the one order intake makes. The family has no failure model of its own (the scenario's
batch_failure_probability applies).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from nearfab.common.errors import ValidationFailed
from nearfab.families.bioprint.design import Envelope, design_product

DOSE, WEIGHT = "dose_per_kg", "body_weight_kg"


def _number(prescription: Mapping[str, Any], key: str) -> float:
    value = prescription.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationFailed(f"{key} must be a number, got {value!r}", field=key)
    if value <= 0:
        raise ValidationFailed(f"{key} must be positive", field=key)
    return float(value)


class BioprintSimulation:
    def design(
        self, envelope: Mapping[str, Any], prescription: Mapping[str, Any]
    ) -> dict[str, Any]:
        unknown = sorted(set(prescription) - {DOSE, WEIGHT, "weight"})
        if unknown:
            raise ValidationFailed(
                f"an islet prescription says {DOSE} and {WEIGHT}, not {unknown[0]}",
                field=unknown[0],
            )
        per_kg, weight = _number(prescription, DOSE), _number(prescription, WEIGHT)
        return design_product(per_kg * weight, weight, Envelope.from_dict(envelope))

    def failure_probability(self, design: Mapping[str, Any]) -> float | None:
        return None

    def prescription_of(self, order: Any) -> dict[str, Any] | None:
        design = getattr(order, "design", None) or {}
        if DOSE not in design or WEIGHT not in design:
            return None
        return {DOSE: float(design[DOSE]), WEIGHT: float(design[WEIGHT])}
