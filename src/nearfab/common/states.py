"""Helpers for status enums whose allowed transitions sit beside them."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

from nearfab.common.errors import InvalidTransition

S = TypeVar("S", bound=StrEnum)


def check_transition(what: str, current: S, target: S, allowed: Mapping[S, frozenset[S]]) -> None:
    """Raise InvalidTransition unless `current -> target` is listed in `allowed`."""
    if target not in allowed.get(current, frozenset()):
        options = ", ".join(sorted(s.value for s in allowed.get(current, frozenset()))) or "none"
        raise InvalidTransition(
            f"{what} cannot go from {current.value} to {target.value} (allowed: {options})",
            field="status",
        )
