"""Reading a master file's design envelope, the parts every product family reads alike.

A family's envelope is a mapping of its own keys; a bad value is refused with ValidationFailed
naming the key under `design_envelope` (`design_envelope.<key>.min`). How a family reads a
single number (what it calls positive, finite) stays the family's: it is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from nearfab.common.errors import ValidationFailed

ENVELOPE = "design_envelope"

N = TypeVar("N", int, float)


def required(d: Mapping[str, Any], key: str) -> Any:
    """`d[key]`; ValidationFailed when it is missing or null."""
    if key not in d or d[key] is None:
        raise ValidationFailed(f"{ENVELOPE}.{key} is missing", field=f"{ENVELOPE}.{key}")
    return d[key]


def positive_int(value: Any, key: str) -> int:
    """`value` as an integer >= 1 (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationFailed(
            f"{ENVELOPE}.{key} must be a positive integer, not {value!r}",
            field=f"{ENVELOPE}.{key}",
        )
    return value


def min_max(
    d: Mapping[str, Any],
    key: str,
    read: Callable[[Any, str], N],
    fmt: Callable[[N], str] = str,
) -> tuple[N, N]:
    """The range `d[key]`, an object `{min, max}`, each end read by `read` (named
    `key.min`, `key.max`), min not above max; `fmt` writes the ends in that message."""
    value = required(d, key)
    if not isinstance(value, Mapping):
        raise ValidationFailed(
            f"{ENVELOPE}.{key} must be an object with min and max", field=f"{ENVELOPE}.{key}"
        )
    low = read(value.get("min"), f"{key}.min")
    high = read(value.get("max"), f"{key}.max")
    if low > high:
        raise ValidationFailed(
            f"{ENVELOPE}.{key}: min {fmt(low)} is above max {fmt(high)}",
            field=f"{ENVELOPE}.{key}",
        )
    return low, high
