"""GTIN check digits: master files (lower) and custody (higher) both need them."""

from __future__ import annotations

from nearfab.common.errors import ValidationFailed


def mod10(body: str) -> str:
    """GS1 mod-10: weights 3,1,3,1... from the rightmost body digit."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)


def gtin_check_digit(body: str) -> str:
    """The GS1 mod-10 check digit for a 7, 11, 12 or 13 digit GTIN body."""
    if not body.isascii() or not body.isdigit():
        raise ValidationFailed(f"GTIN body {body!r} must contain only digits 0-9.", field="gtin")
    if len(body) not in (7, 11, 12, 13):
        raise ValidationFailed(
            f"GTIN body must have 7, 11, 12 or 13 digits, not {len(body)}.", field="gtin"
        )
    return mod10(body)


def validate_gtin(gtin: str) -> str:
    """Check a GTIN-8/12/13/14 and return it as 14 digits (GTIN-14 form, zero-padded)."""
    if not isinstance(gtin, str) or not gtin.isascii() or not gtin.isdigit():
        raise ValidationFailed(f"GTIN {gtin!r} must contain only digits 0-9.", field="gtin")
    if len(gtin) not in (8, 12, 13, 14):
        raise ValidationFailed(
            f"GTIN must have 8, 12, 13 or 14 digits, not {len(gtin)}.", field="gtin"
        )
    expected = gtin_check_digit(gtin[:-1])
    if gtin[-1] != expected:
        raise ValidationFailed(
            f"GTIN {gtin} has a wrong check digit: {gtin[-1]}, expected {expected}.", field="gtin"
        )
    return gtin.zfill(14)
