"""Storage and thaw rules of a cryopreserved autologous cell product (pure, no I/O).

- Storage: at or below -150 °C, in the vapour phase of liquid nitrogen (below the glass
  transition of the DMSO cryoprotectant, about -123 °C, with margin): a reading above the
  limit is an excursion.
- Shelf life after thaw: the product is infused within the master file's time after thawing
  (default 180 minutes); it is never refrozen. Infusion after that is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from nearfab.common.errors import Refused, ValidationFailed

STORAGE_MAX_C = -150.0
# the chain of identity of an autologous product: every hand-over between these steps checks
# the unit's identity on both sides (custody's hand-over)
CHAIN_STEPS = ("collection", "micro_factory", "cryostore", "infusion")
STORAGE_TEXT = "Store at or below -150 °C in the vapour phase of liquid nitrogen"
DEFAULT_THAW_SHELF_LIFE_MIN = 180
# a product that may wait longer than a day after thaw is not a cryopreserved cell product
MAX_THAW_SHELF_LIFE_MIN = 24 * 60


def check_storage_temperature(celsius: float, *, field: str = "temperature_c") -> None:
    """Refused (code storage_excursion) when a storage reading is above -150 °C."""
    if isinstance(celsius, bool) or not isinstance(celsius, int | float):
        raise ValidationFailed(f"{field} must be a number of °C, got {celsius!r}", field=field)
    if not math.isfinite(celsius):
        raise ValidationFailed(f"{field} must be finite, got {celsius!r}", field=field)
    if celsius > STORAGE_MAX_C:
        raise Refused(
            f"{field} {celsius:g} °C is above the storage limit {STORAGE_MAX_C:g} °C",
            field=field,
            code="storage_excursion",
        )


def thaw_shelf_life(minutes: int | None = None) -> timedelta:
    """The shelf life after thaw: the master file's minutes, else the family's default."""
    if minutes is None:
        minutes = DEFAULT_THAW_SHELF_LIFE_MIN
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, int)
        or not 0 < minutes <= MAX_THAW_SHELF_LIFE_MIN
    ):
        raise ValidationFailed(
            f"thaw_shelf_life_min must be whole minutes in 1-{MAX_THAW_SHELF_LIFE_MIN},"
            f" got {minutes!r}",
            field="thaw_shelf_life_min",
        )
    return timedelta(minutes=minutes)


def _aware(value: datetime, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValidationFailed(f"{field} must be a date and time with its zone", field=field)
    return value


@dataclass(frozen=True)
class Thaw:
    """One thaw of a product: when it was thawed and by when it must be infused."""

    thawed_at: datetime
    shelf_life: timedelta

    def __post_init__(self) -> None:
        _aware(self.thawed_at, "thawed_at")

    @property
    def infuse_by(self) -> datetime:
        return self.thawed_at + self.shelf_life

    def check_infusion(self, at: datetime) -> None:
        """Refused (code thaw_expired, field thawed_at) when `at` is after the shelf life."""
        _aware(at, "infused_at")
        if at < self.thawed_at:
            raise ValidationFailed("infused_at is before thawed_at", field="infused_at")
        if at > self.infuse_by:
            late = at - self.infuse_by
            raise Refused(
                f"thawed at {self.thawed_at.isoformat()}: its shelf life after thaw"
                f" ({self.shelf_life.total_seconds() / 60:g} min) ended"
                f" {late.total_seconds() / 60:.0f} min ago; it must not be infused",
                field="thawed_at",
                code="thaw_expired",
            )
