"""A chain of identity named by an ISBT 128 DIN (pure, no I/O): shared by every family whose
starting material carries a Donation Identification Number (cell_therapy's patient collection,
bioprint's donor islet isolation).

The collection or donation is named by its DIN (ICCBBA ST-001 §2.4.1), scanned (data structure
001, ``=`` + DIN + flags) or typed from the eye-readable text with its keyboard entry check
character K (§7.4.1, §7.5.1.1). Two readings name the same donation when their 13-character
DINs (FIN, year, sequence) are equal: the flag characters say which label or container was
scanned (ST-001 Table 3), not whose cells it holds, so they are not compared.

- At collection or receipt (`collection_din`): the scanned DIN is the one the chain carries from
  then on; when the prescription already named a DIN, the two must be the same donation.
- At each hand-over (`din_mismatch`): the DIN scanned on each side must be the chain's DIN; a
  reading that is not a DIN (a wrong check character, a malformed scan) is a mismatch too: it
  stops the chain as a wrong DIN does.
"""

from __future__ import annotations

from nearfab.common.errors import Refused
from nearfab.families.isbt128.structures import (
    DonationIdentificationNumber,
    Isbt128Invalid,
    parse_din,
)


def collection_din(expected: str | None, presented: str, *, field: str) -> str:
    """The DIN scanned at collection, as the chain keeps it (data structure 001).

    Isbt128Invalid (a ValidationFailed naming `field`.*) when it is not a DIN; Refused
    (identity_mismatch, `field`) when the prescription named another collection."""
    try:
        din = parse_din(presented)
    except Isbt128Invalid as exc:  # din.check_character -> <field>.check_character
        part = (exc.field or "din").removeprefix("din").lstrip(".")
        raise Isbt128Invalid(f"{field}.{part}" if part else field, exc.reason) from exc
    if expected:
        named = parse_din(expected)
        if named.din != din.din:
            raise Refused(
                f"{field}: the collection bag's DIN {din.eye_readable()} is not the DIN the"
                f" prescription names for this patient ({named.eye_readable()})",
                field=field,
                code="identity_mismatch",
            )
    return din.scanned()


def din_mismatch(expected: str, presented: str) -> str | None:
    """Why `presented` does not name the chain's DIN `expected` (None: it does)."""
    want: DonationIdentificationNumber = parse_din(expected)
    if not isinstance(presented, str) or not presented.strip():
        return "no DIN was scanned"
    try:
        got = parse_din(presented.strip())
    except Isbt128Invalid as exc:
        return f"{presented.strip()!r} is not a valid DIN ({exc.message})"
    if got.din != want.din:
        return f"DIN {got.eye_readable()} is not this product's DIN {want.eye_readable()}"
    return None
