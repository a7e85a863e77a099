"""The design of one autologous cell product from its dose: pure rules, no I/O.

The prescription gives a dose of viable cells per kg of body weight and the patient's weight;
the product must hold target = dose per kg x weight viable cells. The culture grows
target / process yield viable cells (what is lost in harvest, wash and formulation) from the
validated seeding count, and the growth model (logic/growth.py) says how many whole days that
takes; the harvest is on a whole day, never before the shortest validated culture. The cells
are formulated at no more than the validated concentration into as few bags of a validated
volume as hold them. The culture draws its medium: the vessel's volume plus the daily feed.

Everything is checked against the master file's design envelope, and anything outside it is
refused naming the design key and the limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nearfab.common.envelope import ENVELOPE as _ENV
from nearfab.common.envelope import min_max, positive_int, required
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.families.cell_therapy.logic.growth import days_to_reach, growth_rate_per_day

# a relative slack on the envelope's limits: a dose of 2.0e6/kg worked back from a total of
# cells and a weight may differ from 2.0e6 in its last bit
_SLACK = 1e-9


def sci(value: float) -> str:
    """A count as people write it: 1.4 × 10^8."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    exponent = math.floor(math.log10(abs(value)))
    mantissa = value / 10**exponent
    if abs(exponent) < 3:
        return f"{value:g}"
    return f"{mantissa:.3g} × 10^{exponent}"


# -- reading the envelope --------------------------------------------------------------------


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed(
            f"{_ENV}.{key} must be a number, not {value!r}", field=f"{_ENV}.{key}"
        )
    number = float(value)
    if not math.isfinite(number):
        raise ValidationFailed(f"{_ENV}.{key} must be finite", field=f"{_ENV}.{key}")
    return number


def _positive(value: Any, key: str) -> float:
    number = _number(value, key)
    if number <= 0:
        raise ValidationFailed(
            f"{_ENV}.{key} must be a positive number, not {value!r}", field=f"{_ENV}.{key}"
        )
    return number


def _fraction(value: Any, key: str) -> float:
    number = _positive(value, key)
    if number > 1:
        raise ValidationFailed(
            f"{_ENV}.{key} is a fraction and cannot exceed 1, not {value!r}",
            field=f"{_ENV}.{key}",
        )
    return number


def _range(d: Mapping[str, Any], key: str) -> tuple[float, float]:
    return min_max(d, key, _positive, lambda v: f"{v:g}")


KEYS = (
    "dose_per_kg",
    "body_weight_kg",
    "max_total_cells",
    "seed_cells",
    "culture_volume_ml",
    "max_density_cells_per_ml",
    "doubling_time_h",
    "doubling_time_cv",
    "process_yield",
    "expansion_days",
    "viability_min",
    "cells_per_ml_max",
    "bag_volume_ml",
    "medium_ml_per_day",
)


@dataclass(frozen=True)
class Envelope:
    """The design space a cell product's master file validates."""

    dose_per_kg_min: float  # viable cells per kg of body weight
    dose_per_kg_max: float
    body_weight_kg_min: float
    body_weight_kg_max: float
    max_total_cells: float  # viable cells in one product, whatever the weight
    seed_cells: float  # viable cells seeded into the culture
    culture_volume_ml: float
    max_density_cells_per_ml: float  # the vessel's carrying capacity per mL
    doubling_time_h: float  # median population doubling time of the validated process
    doubling_time_cv: float  # its donor-to-donor coefficient of variation (0: none stated)
    process_yield: float  # fraction of harvested viable cells that reach the bags
    expansion_days_min: int
    expansion_days_max: int
    viability_min: float  # release limit, a fraction
    cells_per_ml_max: float  # the highest validated concentration in a bag
    bag_volume_ml_min: float
    bag_volume_ml_max: float
    medium_ml_per_day: float  # fresh medium fed (perfused) per day of culture

    @property
    def capacity_cells(self) -> float:
        return self.max_density_cells_per_ml * self.culture_volume_ml

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Envelope:
        """Read the master file's `design_envelope`; every key of KEYS is required, another
        is refused (a misspelt limit must not be ignored)."""
        if not isinstance(d, Mapping):
            raise ValidationFailed(f"{_ENV} must be an object", field=_ENV)
        unknown = sorted(set(d) - set(KEYS))
        if unknown:
            raise ValidationFailed(
                f"{_ENV} has no key {unknown[0]!r} (keys: {', '.join(KEYS)})",
                field=f"{_ENV}.{unknown[0]}",
            )
        dose_min, dose_max = _range(d, "dose_per_kg")
        weight_min, weight_max = _range(d, "body_weight_kg")
        seed = _positive(required(d, "seed_cells"), "seed_cells")
        volume = _positive(required(d, "culture_volume_ml"), "culture_volume_ml")
        density = _positive(required(d, "max_density_cells_per_ml"), "max_density_cells_per_ml")
        if seed >= density * volume:
            raise ValidationFailed(
                f"{_ENV}.seed_cells {sci(seed)} is not below the vessel's capacity "
                f"{sci(density * volume)} (max_density_cells_per_ml × culture_volume_ml)",
                field=f"{_ENV}.seed_cells",
            )
        cv = _number(required(d, "doubling_time_cv"), "doubling_time_cv")
        if cv < 0:
            raise ValidationFailed(
                f"{_ENV}.doubling_time_cv must be 0 or more, not {cv:g}",
                field=f"{_ENV}.doubling_time_cv",
            )
        days_min, days_max = min_max(d, "expansion_days", positive_int)
        viability = _fraction(required(d, "viability_min"), "viability_min")
        bag_min, bag_max = _range(d, "bag_volume_ml")
        feed = _number(required(d, "medium_ml_per_day"), "medium_ml_per_day")
        if feed < 0:
            raise ValidationFailed(
                f"{_ENV}.medium_ml_per_day must be 0 or more, not {feed:g}",
                field=f"{_ENV}.medium_ml_per_day",
            )
        return cls(
            dose_per_kg_min=dose_min,
            dose_per_kg_max=dose_max,
            body_weight_kg_min=weight_min,
            body_weight_kg_max=weight_max,
            max_total_cells=_positive(required(d, "max_total_cells"), "max_total_cells"),
            seed_cells=seed,
            culture_volume_ml=volume,
            max_density_cells_per_ml=density,
            doubling_time_h=_positive(required(d, "doubling_time_h"), "doubling_time_h"),
            doubling_time_cv=cv,
            process_yield=_fraction(required(d, "process_yield"), "process_yield"),
            expansion_days_min=days_min,
            expansion_days_max=days_max,
            viability_min=viability,
            cells_per_ml_max=_positive(required(d, "cells_per_ml_max"), "cells_per_ml_max"),
            bag_volume_ml_min=bag_min,
            bag_volume_ml_max=bag_max,
            medium_ml_per_day=feed,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dose_per_kg": {"min": self.dose_per_kg_min, "max": self.dose_per_kg_max},
            "body_weight_kg": {"min": self.body_weight_kg_min, "max": self.body_weight_kg_max},
            "max_total_cells": self.max_total_cells,
            "seed_cells": self.seed_cells,
            "culture_volume_ml": self.culture_volume_ml,
            "max_density_cells_per_ml": self.max_density_cells_per_ml,
            "doubling_time_h": self.doubling_time_h,
            "doubling_time_cv": self.doubling_time_cv,
            "process_yield": self.process_yield,
            "expansion_days": {"min": self.expansion_days_min, "max": self.expansion_days_max},
            "viability_min": self.viability_min,
            "cells_per_ml_max": self.cells_per_ml_max,
            "bag_volume_ml": {"min": self.bag_volume_ml_min, "max": self.bag_volume_ml_max},
            "medium_ml_per_day": self.medium_ml_per_day,
        }


# -- the design ------------------------------------------------------------------------------


class OutsideEnvelope(Refused):
    """The prescription cannot be made within the validated design envelope."""

    code = "outside_envelope"


@dataclass(frozen=True)
class CellProductDesign:
    dose_per_kg: float
    body_weight_kg: float
    target_cells: float  # viable cells the patient receives
    harvest_cells: float  # viable cells to grow
    seed_cells: float
    culture_volume_ml: float
    max_density_cells_per_ml: float
    doubling_time_h: float
    doubling_time_cv: float
    process_yield: float
    growth_days: float  # the growth model's time to the harvest count
    expansion_days: int  # whole days of culture expected
    expansion_days_min: int
    expansion_days_max: int
    viability_min: float
    bags: int
    bag_volume_ml: float
    infusion_volume_ml: float
    cells_per_ml: float  # concentration in the bags
    medium_ml_per_day: float
    medium_ml: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "dose_per_kg": self.dose_per_kg,
            "body_weight_kg": self.body_weight_kg,
            "target_cells": self.target_cells,
            "harvest_cells": self.harvest_cells,
            "seed_cells": self.seed_cells,
            "culture_volume_ml": self.culture_volume_ml,
            "max_density_cells_per_ml": self.max_density_cells_per_ml,
            "doubling_time_h": self.doubling_time_h,
            "doubling_time_cv": self.doubling_time_cv,
            "process_yield": self.process_yield,
            "growth_days": self.growth_days,
            "expansion_days": self.expansion_days,
            "expansion_days_min": self.expansion_days_min,
            "expansion_days_max": self.expansion_days_max,
            "viability_min": self.viability_min,
            "bags": self.bags,
            "bag_volume_ml": self.bag_volume_ml,
            "infusion_volume_ml": self.infusion_volume_ml,
            "cells_per_ml": self.cells_per_ml,
            "medium_ml_per_day": self.medium_ml_per_day,
            "medium_ml": self.medium_ml,
        }


def _finite_positive(value: Any, field: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed(f"{what} must be a number, not {value!r}", field=field)
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValidationFailed(f"{what} must be a positive number, not {value!r}", field=field)
    return number


def _within(value: float, low: float, high: float) -> bool:
    return low * (1 - _SLACK) <= value <= high * (1 + _SLACK)


def _ceil(value: float) -> int:
    """The whole number at or above `value`, ignoring floating-point dust (7.0000000001 -> 7)."""
    return math.ceil(value - 1e-9)


def design_product(
    *, target_cells: float, body_weight_kg: float, envelope: Envelope
) -> CellProductDesign:
    """The product for `target_cells` viable cells (the dose per kg × the body weight) for a
    patient of `body_weight_kg`; OutsideEnvelope naming the design key otherwise."""
    weight = _finite_positive(body_weight_kg, "body_weight_kg", "the body weight in kg")
    target = _finite_positive(target_cells, "target_cells", "the dose in viable cells")
    if not _within(weight, envelope.body_weight_kg_min, envelope.body_weight_kg_max):
        raise OutsideEnvelope(
            f"body weight {weight:g} kg is outside the validated range "
            f"{envelope.body_weight_kg_min:g}–{envelope.body_weight_kg_max:g} kg",
            field="body_weight_kg",
        )
    per_kg = target / weight
    if not _within(per_kg, envelope.dose_per_kg_min, envelope.dose_per_kg_max):
        raise OutsideEnvelope(
            f"dose {sci(per_kg)} viable cells/kg is outside the validated range "
            f"{sci(envelope.dose_per_kg_min)}–{sci(envelope.dose_per_kg_max)} cells/kg",
            field="dose_per_kg",
        )
    if target > envelope.max_total_cells * (1 + _SLACK):
        raise OutsideEnvelope(
            f"{sci(target)} viable cells ({sci(per_kg)}/kg × {weight:g} kg) is above the "
            f"validated maximum of {sci(envelope.max_total_cells)} per product",
            field="target_cells",
        )
    harvest = target / envelope.process_yield
    capacity = envelope.capacity_cells
    if harvest >= capacity:
        raise OutsideEnvelope(
            f"growing {sci(harvest)} viable cells ({sci(target)} / process yield "
            f"{envelope.process_yield:g}) needs more than the vessel's capacity of "
            f"{sci(capacity)}",
            field="target_cells",
        )
    rate = growth_rate_per_day(envelope.doubling_time_h)
    growth_days = days_to_reach(envelope.seed_cells, capacity, rate, harvest)
    needed = _ceil(growth_days)
    if needed > envelope.expansion_days_max:
        raise OutsideEnvelope(
            f"growing {sci(harvest)} viable cells from {sci(envelope.seed_cells)} takes "
            f"{growth_days:.1f} days at a {envelope.doubling_time_h:g} h doubling time; the "
            f"validated culture is at most {envelope.expansion_days_max} days",
            field="expansion_days",
        )
    days = max(envelope.expansion_days_min, needed)

    volume_needed = target / envelope.cells_per_ml_max
    bags = max(1, _ceil(volume_needed / envelope.bag_volume_ml_max))
    # a bag holds at least the validated minimum; volumes to 0.1 mL, rounded up so the
    # concentration never exceeds the validated one
    bag_volume = max(envelope.bag_volume_ml_min, _ceil(volume_needed / bags * 10) / 10)
    if bag_volume > envelope.bag_volume_ml_max * (1 + _SLACK):
        bag_volume = envelope.bag_volume_ml_max
    infusion_volume = round(bags * bag_volume, 6)
    return CellProductDesign(
        dose_per_kg=per_kg,
        body_weight_kg=weight,
        target_cells=target,
        harvest_cells=harvest,
        seed_cells=envelope.seed_cells,
        culture_volume_ml=envelope.culture_volume_ml,
        max_density_cells_per_ml=envelope.max_density_cells_per_ml,
        doubling_time_h=envelope.doubling_time_h,
        doubling_time_cv=envelope.doubling_time_cv,
        process_yield=envelope.process_yield,
        growth_days=round(growth_days, 4),
        expansion_days=days,
        expansion_days_min=envelope.expansion_days_min,
        expansion_days_max=envelope.expansion_days_max,
        viability_min=envelope.viability_min,
        bags=bags,
        bag_volume_ml=bag_volume,
        infusion_volume_ml=infusion_volume,
        cells_per_ml=target / infusion_volume,
        medium_ml_per_day=envelope.medium_ml_per_day,
        medium_ml=envelope.culture_volume_ml + envelope.medium_ml_per_day * days,
    )
