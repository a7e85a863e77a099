"""A release rule's `in_process` list, shared by the families whose laboratory results may be
stood in for by the machine's in-process data (cell_therapy, bioprint)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nearfab.common.errors import ValidationFailed


def check_in_process(rule: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """`release_rule.in_process` must be a list naming only tests in `allowed`; otherwise
    ValidationFailed naming `release_rule.in_process`."""
    listed = rule.get("in_process", [])
    if isinstance(listed, str) or not isinstance(listed, Sequence):
        raise ValidationFailed(
            "release_rule.in_process must be a list of test names",
            field="release_rule.in_process",
        )
    refused = [t for t in listed if t not in allowed]
    if refused:
        raise ValidationFailed(
            f"release_rule.in_process lists {', '.join(repr(t) for t in refused)}; only"
            f" {', '.join(allowed)} may be evaluated from in-process data",
            field="release_rule.in_process",
        )
