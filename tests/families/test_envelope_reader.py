"""The design-envelope reader both families share (nearfab.common.envelope): a `{min, max}`
range is read end by end with the family's own number reader, and every refusal names the key.
Expected messages are written out by hand from the rule, not taken from the code."""

from __future__ import annotations

from typing import Any

import pytest

from nearfab.common.envelope import min_max, positive_int, required
from nearfab.common.errors import ValidationFailed


def _float(value: Any, key: str) -> float:
    if not isinstance(value, int | float) or value <= 0:
        raise ValidationFailed(f"bad {key}", field=f"design_envelope.{key}")
    return float(value)


def test_a_range_is_read_with_the_given_reader() -> None:
    assert min_max({"k": {"min": 1, "max": 2.5}}, "k", _float) == (1.0, 2.5)
    assert min_max({"k": {"min": 3, "max": 3}}, "k", positive_int) == (3, 3)


@pytest.mark.parametrize(
    ("envelope", "read", "fmt", "field", "message"),
    [
        ({}, _float, str, "design_envelope.k", "design_envelope.k is missing"),
        ({"k": None}, _float, str, "design_envelope.k", "design_envelope.k is missing"),
        (
            {"k": [1, 2]},
            _float,
            str,
            "design_envelope.k",
            "design_envelope.k must be an object with min and max",
        ),
        # the ends are named key.min / key.max for the family's reader
        ({"k": {"max": 2}}, _float, str, "design_envelope.k.min", "bad k.min"),
        # min above max: written with `fmt` (str writes a float 2.0, `:g` writes 2)
        (
            {"k": {"min": 2, "max": 1}},
            _float,
            str,
            "design_envelope.k",
            "design_envelope.k: min 2.0 is above max 1.0",
        ),
        (
            {"k": {"min": 2, "max": 1}},
            _float,
            lambda v: f"{v:g}",
            "design_envelope.k",
            "design_envelope.k: min 2 is above max 1",
        ),
        (
            {"k": {"min": 0, "max": 1}},
            positive_int,
            str,
            "design_envelope.k.min",
            "design_envelope.k.min must be a positive integer, not 0",
        ),
        (
            {"k": {"min": True, "max": 1}},
            positive_int,
            str,
            "design_envelope.k.min",
            "design_envelope.k.min must be a positive integer, not True",
        ),
    ],
)
def test_a_bad_range_is_refused_naming_the_key(
    envelope: dict[str, Any], read: Any, fmt: Any, field: str, message: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        min_max(envelope, "k", read, fmt)
    assert caught.value.field == field
    assert caught.value.message == message


def test_required_gives_the_value() -> None:
    assert required({"k": 0}, "k") == 0
