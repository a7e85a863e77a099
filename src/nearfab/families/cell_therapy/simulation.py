"""cell_therapy's `simulation` part: implements nearfab.simulation.kit.SimulationKit.

A prescription of a scenario's mix says, in this family's words:

    {dose_per_kg: 2.0e6, body_weight_kg: 70}

`dose_per_kg` is the dose in viable cells per kg of body weight and `body_weight_kg` the
patient's weight, both required. The design is the one order intake makes (`design_product`
with the master file's envelope, for dose per kg × weight viable cells); the machine time is
the family's `duration_s` (the expected days of expansion, fixed for a design) and the material
its `material_needed_g` (the culture medium), as the scheduler plans them.

The failure model is the growth model's: a batch fails when the run's doubling time (log-normal
around the envelope's median with its donor-to-donor CV) is too long to grow the harvest count
within the longest validated culture (logic/growth.py, `growth_failure_probability`). Other
failures (contamination, equipment) are the scenario's to add through its sites.

The network simulator also reads the family's `collection(design)` (family.py: the fresh
apheresis is seeded within 24 h, the product infused 48 h after harvest at the earliest), and a
failed run there means a new apheresis and a new run (docs/simulation.md, "Autologous cell
therapy").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nearfab.common.errors import ValidationFailed
from nearfab.families.cell_therapy.logic.design import Envelope, design_product
from nearfab.families.cell_therapy.logic.growth import growth_failure_probability
from nearfab.families.cell_therapy.prescription import CELLS
from nearfab.orders import Order

DOSE, WEIGHT = "dose_per_kg", "body_weight_kg"
KEYS = (DOSE, WEIGHT)


def _number(prescription: Mapping[str, Any], key: str, what: str) -> float:
    if key not in prescription:
        raise ValidationFailed(f"a cell therapy prescription needs {key}, {what}", field=key)
    value = prescription[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed(f"{key} must be a number ({what}), not {value!r}", field=key)
    return float(value)


class CellTherapySimulation:
    """The network simulator's model of a micro-factory's expansion run."""

    def design(
        self, envelope: Mapping[str, Any], prescription: Mapping[str, Any]
    ) -> dict[str, Any]:
        unknown = sorted(set(prescription) - set(KEYS))
        if unknown:
            raise ValidationFailed(
                f"a cell therapy prescription says {', '.join(KEYS)} (and weight), not "
                f"{unknown[0]!r}",
                field=unknown[0],
            )
        per_kg = _number(prescription, DOSE, "the dose in viable cells per kg of body weight")
        weight = _number(prescription, WEIGHT, "the patient's body weight in kg")
        return design_product(
            target_cells=per_kg * weight,
            body_weight_kg=weight,
            envelope=Envelope.from_dict(envelope),
        ).to_dict()

    def failure_probability(self, design: Mapping[str, Any]) -> float | None:
        return growth_failure_probability(
            n0=float(design["seed_cells"]),
            capacity=float(design["max_density_cells_per_ml"]) * float(design["culture_volume_ml"]),
            cells=float(design["harvest_cells"]),
            doubling_time_h=float(design["doubling_time_h"]),
            cv=float(design["doubling_time_cv"]),
            max_days=float(design["expansion_days_max"]),
        )

    def prescription_of(self, order: Order) -> dict[str, Any] | None:
        design = order.design or {}
        if order.dose.unit != CELLS or WEIGHT not in design:
            return None
        weight = float(design[WEIGHT])
        return {DOSE: float(order.dose.value) / weight, WEIGHT: weight}
