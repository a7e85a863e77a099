"""The short reading of a plain unit label (`gs1._unit_data`) against the full reading of every
AI through biip (`gs1._parse_elements`): where the short one answers, the full one gives the
same identifier; where the label is anything else, the short one declines and the scan is
read (or refused, with its reason) the full way. Verification reads every scan this way."""

from __future__ import annotations

import itertools
import random
from datetime import date

import pytest

from nearfab.common.errors import ValidationFailed
from nearfab.custody.gs1 import (
    GS,
    UnitIdentifier,
    _parse_elements,
    _unit_data,
    gtin_check_digit,
    parse_scan,
)

# GS1 AI encodable character set 82 (GS1 General Specifications 7.11, figure 7.11-1)
CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
SYMBOLOGIES = ("]d2", "]C1", "]Q3", "]e0", "]J1", "")


def _full(scan: str) -> UnitIdentifier | str:
    try:
        return _parse_elements(scan)
    except ValidationFailed as exc:
        return f"refused: {exc.field}: {exc.message}"


def _read(scan: str) -> UnitIdentifier | str:
    try:
        return parse_scan(scan)
    except ValidationFailed as exc:
        return f"refused: {exc.field}: {exc.message}"


def test_a_label_by_hand() -> None:
    """GS1 DataMatrix data written out by hand: GTIN 0950600013435 + check digit 2
    (3×(0+5+6+0+1+4+5) + (9+0+0+0+3+3) = 78, 80 − 78 = 2), expiry 31 December 2026, batch
    B123 ended by GS, serial ABC123 last."""
    scan = "]d20109506000134352" + "17261231" + "10B123" + GS + "21ABC123"
    expected = UnitIdentifier(
        gtin="09506000134352", serial="ABC123", batch="B123", expiry=date(2026, 12, 31)
    )
    assert _unit_data(scan) == expected
    assert _full(scan) == expected
    # DD = 00 is the last day of the month (GS1 General Specifications 3.4.6)
    feb = "0109506000134352" + "17280200" + "21S1" + GS + "10L1"
    assert (
        _unit_data(feb)
        == _full(feb)
        == UnitIdentifier(gtin="09506000134352", serial="S1", batch="L1", expiry=date(2028, 2, 29))
    )


def _gtin(rng: random.Random) -> str:
    body = "".join(rng.choice("0123456789") for _ in range(13))
    return body + gtin_check_digit(body)


def _value(rng: random.Random) -> str:
    return "".join(rng.choice(CSET82) for _ in range(rng.randint(1, 20)))


def _label(rng: random.Random) -> str:
    """A unit label's element data: the four AIs in a random order, GS after a
    variable-length value that is not last, behind a random GS1 symbology identifier."""
    day = rng.choice([0, 1, 15, 28, 29, 30, 31])
    expiry = f"{rng.randint(0, 99):02d}{rng.randint(1, 12):02d}{day:02d}"
    parts = [("01", _gtin(rng)), ("17", expiry), ("10", _value(rng)), ("21", _value(rng))]
    rng.shuffle(parts)
    data = ""
    for index, (ai, value) in enumerate(parts):
        data += ai + value
        if ai in ("10", "21") and index < len(parts) - 1:
            data += GS
    return rng.choice(SYMBOLOGIES) + data


def test_labels_read_the_same_both_ways() -> None:
    rng = random.Random(20261207)
    short = 0
    for _ in range(1500):
        scan = _label(rng)
        full = _full(scan)
        fast = _unit_data(scan)
        if fast is not None:
            short += 1
            assert fast == full, scan
        else:  # declined: only what the full reading refuses (a date that does not exist)
            assert isinstance(full, str), (scan, full)
        assert _read(scan) == full, scan
    assert short > 1000  # most labels take the short reading


def _mutations(scan: str, rng: random.Random) -> list[str]:
    out = [
        scan + GS,
        GS + scan,
        scan[:-1],
        scan + "0",
        scan.replace(GS, ""),
        scan.replace(GS, GS + GS),
    ]
    alphabet = "0123456789" + GS + "A(a)%~ é"
    for _ in range(12):
        at = rng.randrange(len(scan))
        what = rng.choice(alphabet)
        out.append(scan[:at] + what + scan[at + 1 :])  # a character changed
        out.append(scan[:at] + what + scan[at:])  # one inserted
        out.append(scan[:at] + scan[at + 1 :])  # one dropped
    out.append(scan + "21X")  # an AI twice, different values
    out.append(scan + GS + "11261201")  # another AI (production date)
    out.append(scan + GS + "30" + "5")  # a count
    out.append(scan + GS + "10" + "X" * 21)  # too long
    return out


def test_damaged_labels_read_the_same_both_ways() -> None:
    """Changed, dropped and inserted characters, GS where none belongs, AIs twice, other AIs,
    values too long: where the short reading answers, the full one answers the same; every
    scan is answered by `parse_scan` exactly as by the full reading (same identifier, or the
    same refusal and reason)."""
    rng = random.Random(7)
    answered = 0
    for scan in [_label(rng) for _ in range(80)]:
        for damaged in _mutations(scan, rng):
            full = _full(damaged)
            fast = _unit_data(damaged)
            if fast is not None:
                answered += 1
                assert fast == full, repr(damaged)
            assert _read(damaged) == full, repr(damaged)
    assert answered > 0


@pytest.mark.parametrize(
    "scan",
    [
        "]d20109506000134352" + "17261231" + GS + "10B1" + GS + "21S1",  # GS after a fixed one
        "]d20109506000134352" + "17261231" + "10B1" + GS + GS + "21S1",  # two GS
        "]d20109506000134352" + "17261231" + "10B1" + GS + "21S1" + GS + "21S1",  # 21 twice
        "]d20109506000134352" + "17261231" + "10B1" + GS + "21S1" + GS + "3010",  # a count
        "]d20109506000134352" + "17261231" + "10B1",  # no serial
        "]d20109506000134353" + "17261231" + "10B1" + GS + "21S1",  # check digit
        "]d20109506000134352" + "17261332" + "10B1" + GS + "21S1",  # no month 13
        "]d20109506000134352" + "17261231" + "10" + "B" * 21 + GS + "21S1",  # 21 characters
        "]d20109506000134352" + "17261231" + "10B 1" + GS + "21S1",  # a space
        "]d10109506000134352" + "17261231" + "10B1" + GS + "21S1",  # not GS1 mode
        "(01)09506000134352(17)261231(10)B1(21)S1",  # bracketed: read the full way
        "https://id.gs1.org/01/09506000134352/10/B1/21/S1?17=261231",  # Digital Link
    ],
)
def test_the_short_reading_declines_anything_else(scan: str) -> None:
    assert _unit_data(scan) is None
    assert _read(scan) == _full(scan)


def test_every_order_of_the_four() -> None:
    parts = [("01", "09506000134352"), ("17", "261231"), ("10", "B1"), ("21", "S1")]
    for order in itertools.permutations(parts):
        data = ""
        for index, (ai, value) in enumerate(order):
            data += ai + value + (GS if ai in ("10", "21") and index < 3 else "")
        assert (
            _unit_data(data)
            == _full(data)
            == UnitIdentifier(
                gtin="09506000134352", serial="S1", batch="B1", expiry=date(2026, 12, 31)
            )
        )
