"""GTIN check digits: needed by master files (lower) and custody (higher), so it lives here."""

from __future__ import annotations

from nearfab.common.errors import ValidationFailed


def gtin_check_digit(body: str) -> str:
    """GS1 mod-10 check digit for the digits before it (weights 3,1,3,... from the right)."""
    if not body.isdigit():
        raise ValidationFailed("GTIN body must be digits", field="gtin")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)


def validate_gtin(gtin: str, *, field: str = "gtin") -> str:
    """Accept a GTIN-8/12/13/14 and return its 14-digit form, or say what is wrong."""
    value = gtin.strip()
    if not value.isdigit():
        raise ValidationFailed(f"GTIN {gtin!r} must contain only digits", field=field)
    if len(value) not in (8, 12, 13, 14):
        raise ValidationFailed(
            f"GTIN {gtin!r} has {len(value)} digits; a GTIN has 8, 12, 13 or 14", field=field
        )
    expected = gtin_check_digit(value[:-1])
    if value[-1] != expected:
        raise ValidationFailed(
            f"GTIN {gtin!r} has check digit {value[-1]}; it should be {expected}", field=field
        )
    return value.zfill(14)
