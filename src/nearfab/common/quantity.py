"""A quantity with its unit, as the core carries a family's numbers without knowing them.

The unit is a UCUM code (https://ucum.org) or a family's own unit string; the core compares and
prints quantities but never converts them: which units a product takes, and how, is the family's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nearfab.common.errors import ValidationFailed


@dataclass(frozen=True)
class Quantity:
    value: float
    unit: str

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValidationFailed(f"quantity {self.value!r} is not a finite number", field="value")
        if not self.unit.strip():
            raise ValidationFailed("a quantity needs a unit", field="unit")

    def __str__(self) -> str:
        return f"{self.value:g} {self.unit}"
