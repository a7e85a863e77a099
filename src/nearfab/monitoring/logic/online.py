"""Streaming SPC: one reading at a time against phase-I centre and σ, O(1) per reading.

`OnlineMonitor` keeps the state of an individuals chart with Western Electric rules 1-4, a
moving-range chart, an EWMA and a two-sided tabular CUSUM, and says which of them fired for each
reading. It gives the same signals as the batch functions in `spc` and `rules` run over the whole
series with the same parameters (phase II: `imr_chart(x, mean=, sigma=)`, `ewma_chart`,
`cusum_chart`, `check_rules(..., ruleset=WESTERN_ELECTRIC)`). Its state is a handful of floats
and a ring buffer of the last 5 zones, so it can be persisted with `to_dict` / `from_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from nearfab.common.errors import ValidationFailed
from nearfab.monitoring.logic.spc import (
    IMR_D2,
    IMR_D4,
    check_lambda,
    require_finite,
    require_positive,
)

_STATE_VERSION: Final = 1
# WE rule 3 looks back furthest among the zone rules (4 of 5), so 5 zones are remembered.
_RING: Final = 5
_RUN: Final = 8  # WE rule 4: 8 in a row on one side


class Signal(StrEnum):
    """What can fire for one reading."""

    WE1 = "we1"  # 1 point beyond 3σ
    WE2 = "we2"  # 2 of 3 beyond 2σ, same side
    WE3 = "we3"  # 4 of 5 beyond 1σ, same side
    WE4 = "we4"  # 8 in a row on one side
    MOVING_RANGE = "moving_range"  # MR above D4 d2 σ
    EWMA = "ewma"
    CUSUM_UPPER = "cusum_upper"
    CUSUM_LOWER = "cusum_lower"


@dataclass(frozen=True, slots=True)
class Update:
    """The monitor's view after one reading (index counts from 0 since the last reset)."""

    index: int
    value: float
    z: float
    moving_range: float | None
    ewma: float
    ewma_lcl: float
    ewma_ucl: float
    cusum_upper: float
    cusum_lower: float
    signals: tuple[Signal, ...]

    @property
    def in_control(self) -> bool:
        return not self.signals


def _state_number(data: Mapping[str, Any], key: str) -> float:
    if key not in data:
        raise ValidationFailed(f"monitor state lacks {key!r}", field=key)
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed(f"{key} must be a number, got {value!r}", field=key)
    return require_finite(value, key)


def _state_count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationFailed(f"{key} must be a non-negative integer, got {value!r}", field=key)
    return value


class OnlineMonitor:
    """I-MR + WE rules 1-4, EWMA and tabular CUSUM updated one reading at a time.

    `center` and `sigma` come from a phase-I study. EWMA: weight `lam`, limits `L` σ wide (exact
    time-varying limits when `exact_ewma`, else asymptotic). CUSUM: reference `k` and decision
    interval `h`, both in σ units; its sums are not reset by a signal (call `reset` after the
    assignable cause is removed).
    """

    __slots__ = (
        "_above",
        "_below",
        "_center",
        "_count",
        "_decay",
        "_ewma",
        "_exact",
        "_h",
        "_inv_sigma",
        "_k",
        "_keep",
        "_keep2",
        "_lam",
        "_last",
        "_limit",
        "_lower",
        "_mr_ucl",
        "_pos",
        "_ratio",
        "_sigma",
        "_slack",
        "_upper",
        "_width",
        "_width_sigma",
        "_zones",
    )

    def __init__(
        self,
        center: float,
        sigma: float,
        *,
        lam: float = 0.2,
        L: float = 3.0,
        k: float = 0.5,
        h: float = 5.0,
        exact_ewma: bool = True,
    ) -> None:
        self._center = require_finite(center, "center")
        self._sigma = require_positive(sigma, "sigma")
        self._lam = check_lambda(lam)
        self._width = require_positive(L, "L")
        self._k = require_finite(k, "k")
        if self._k < 0:
            raise ValidationFailed(f"k must not be negative, got {k!r}", field="k")
        self._h = require_positive(h, "h")
        self._exact = bool(exact_ewma)
        self._inv_sigma = 1.0 / self._sigma
        self._keep = 1.0 - self._lam
        self._keep2 = self._keep * self._keep
        self._ratio = self._lam / (2.0 - self._lam)
        self._width_sigma = self._width * self._sigma
        self._mr_ucl = IMR_D4 * IMR_D2 * self._sigma
        self._slack = self._k * self._sigma
        self._limit = self._h * self._sigma
        self.reset()

    def reset(self) -> None:
        """Forget every reading: EWMA back at the centre, CUSUM sums and runs at zero."""
        self._count = 0
        self._last: float | None = None
        self._ewma = self._center
        self._decay = 1.0  # (1-λ)^(2i)
        self._upper = 0.0
        self._lower = 0.0
        self._above = 0
        self._below = 0
        self._zones = [0] * _RING  # signed zone of recent points: ±1 B, ±2 A, ±3 beyond
        self._pos = 0

    @property
    def center(self) -> float:
        return self._center

    @property
    def sigma(self) -> float:
        return self._sigma

    @property
    def count(self) -> int:
        """Readings seen since the last reset."""
        return self._count

    def update(self, value: float) -> Update:
        """Take one reading and report what fired for it."""
        x = float(value)
        if not math.isfinite(x):
            raise ValidationFailed(f"reading must be a finite number, got {value!r}", field="value")
        fired: list[Signal] = []
        z = (x - self._center) * self._inv_sigma

        if z > 0.0:
            self._above += 1
            self._below = 0
            side = 1
        elif z < 0.0:
            self._below += 1
            self._above = 0
            side = -1
        else:
            self._above = self._below = 0
            side = 0
        distance = abs(z)
        level = 3 if distance > 3.0 else 2 if distance > 2.0 else 1 if distance > 1.0 else 0
        pos = self._pos + 1
        if pos == _RING:
            pos = 0
        self._pos = pos
        zones = self._zones
        zones[pos] = side * level
        if level == 3:
            fired.append(Signal.WE1)
        # Negative list indexes wrap around the ring, so zones[pos - j] is j readings back.
        if level >= 2 and (zones[pos - 1] * side >= 2) + (zones[pos - 2] * side >= 2) >= 1:
            fired.append(Signal.WE2)
        if level >= 1:
            behind = sum(zones[pos - j] * side >= 1 for j in range(1, _RING))
            if behind >= 3:
                fired.append(Signal.WE3)
        if self._above >= _RUN or self._below >= _RUN:
            fired.append(Signal.WE4)

        moving_range: float | None = None
        if self._last is not None:
            moving_range = abs(x - self._last)
            if moving_range > self._mr_ucl:
                fired.append(Signal.MOVING_RANGE)
        self._last = x

        ewma = self._lam * x + self._keep * self._ewma
        self._ewma = ewma
        if self._exact:
            self._decay *= self._keep2
            half = self._width_sigma * math.sqrt(self._ratio * (1.0 - self._decay))
        else:
            half = self._width_sigma * math.sqrt(self._ratio)
        lcl = self._center - half
        ucl = self._center + half
        if ewma > ucl or ewma < lcl:
            fired.append(Signal.EWMA)

        deviation = x - self._center
        upper = self._upper + deviation - self._slack
        self._upper = upper = upper if upper > 0.0 else 0.0
        lower = self._lower - deviation - self._slack
        self._lower = lower = lower if lower > 0.0 else 0.0
        if upper > self._limit:
            fired.append(Signal.CUSUM_UPPER)
        if lower > self._limit:
            fired.append(Signal.CUSUM_LOWER)

        index = self._count
        self._count = index + 1
        return Update(index, x, z, moving_range, ewma, lcl, ucl, upper, lower, tuple(fired))

    def update_many(self, values: Iterable[float]) -> list[Update]:
        """`update` for each value in turn."""
        return [self.update(v) for v in values]

    # --- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Parameters and state as plain JSON-serialisable values (zones oldest first)."""
        ring = [self._zones[(self._pos + 1 + j) % _RING] for j in range(_RING)]
        return {
            "version": _STATE_VERSION,
            "center": self._center,
            "sigma": self._sigma,
            "lam": self._lam,
            "L": self._width,
            "k": self._k,
            "h": self._h,
            "exact_ewma": self._exact,
            "count": self._count,
            "last": self._last,
            "ewma": self._ewma,
            "decay": self._decay,
            "cusum_upper": self._upper,
            "cusum_lower": self._lower,
            "run_above": self._above,
            "run_below": self._below,
            "zones": ring,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OnlineMonitor:
        """A monitor restored from `to_dict` output; ValidationFailed if any field is bad."""
        version = data.get("version")
        if version != _STATE_VERSION:
            raise ValidationFailed(
                f"unsupported monitor state version {version!r}", field="version"
            )
        exact = data.get("exact_ewma")
        if not isinstance(exact, bool):
            raise ValidationFailed("exact_ewma must be true or false", field="exact_ewma")
        monitor = cls(
            _state_number(data, "center"),
            _state_number(data, "sigma"),
            lam=_state_number(data, "lam"),
            L=_state_number(data, "L"),
            k=_state_number(data, "k"),
            h=_state_number(data, "h"),
            exact_ewma=exact,
        )
        count = _state_count(data, "count")
        last = data.get("last")
        if last is None:
            if count:
                raise ValidationFailed("last is missing although readings were seen", field="last")
        else:
            last = _state_number(data, "last")
        decay = _state_number(data, "decay")
        if not 0.0 <= decay <= 1.0:
            raise ValidationFailed(f"decay must be in [0, 1], got {decay!r}", field="decay")
        upper = _state_number(data, "cusum_upper")
        lower = _state_number(data, "cusum_lower")
        if upper < 0 or lower < 0:
            raise ValidationFailed("CUSUM sums cannot be negative", field="cusum_upper")
        zones = data.get("zones")
        if (
            not isinstance(zones, list)
            or len(zones) != _RING
            or not all(
                isinstance(v, int) and not isinstance(v, bool) and -3 <= v <= 3 for v in zones
            )
        ):
            raise ValidationFailed(
                f"zones must be a list of {_RING} integers in -3..3, got {zones!r}", field="zones"
            )
        monitor._count = count
        monitor._last = last
        monitor._ewma = _state_number(data, "ewma")
        monitor._decay = decay
        monitor._upper = upper
        monitor._lower = lower
        monitor._above = _state_count(data, "run_above")
        monitor._below = _state_count(data, "run_below")
        monitor._zones = list(zones)
        monitor._pos = _RING - 1
        return monitor


__all__ = ["OnlineMonitor", "Signal", "Update"]
