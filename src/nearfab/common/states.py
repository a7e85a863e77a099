"""Helpers for status enums whose allowed transitions sit beside them."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

from nearfab.common.errors import InvalidTransition, ValidationFailed

S = TypeVar("S", bound=StrEnum)


def check_transition(what: str, current: S, target: S, allowed: Mapping[S, frozenset[S]]) -> None:
    """Raise InvalidTransition unless `current -> target` is listed in `allowed`."""
    if target not in allowed.get(current, frozenset()):
        options = ", ".join(sorted(s.value for s in allowed.get(current, frozenset()))) or "none"
        raise InvalidTransition(
            f"{what} cannot go from {current.value} to {target.value} (allowed: {options})",
            field="status",
        )


def parse_state(enum: type[S], value: str, *, field: str = "status") -> S:
    """The enum member for `value`, or a ValidationFailed naming the field and the choices."""
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(m.value for m in enum)
        raise ValidationFailed(
            f"unknown {field} {value!r}; use one of: {choices}", field=field
        ) from None
