"""GS1 identifiers: check digits, serials, element strings, DataMatrix data, Digital Link, scans."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

import pytest

from nearfab.common.errors import ValidationFailed
from nearfab.custody.gs1 import (
    GS,
    SERIAL_ALPHABET,
    UnitIdentifier,
    dl_percent_encode,
    gtin_check_digit,
    make_identifier,
    new_serial,
    parse_scan,
    scan_elements,
    validate_gtin,
)

GTIN = "09506000134352"
UNIT = make_identifier(GTIN, "ABC123", "B123", date(2026, 12, 31))


def _refusal(call: Callable[..., object], *args: object, field: str) -> str:
    with pytest.raises(ValidationFailed) as caught:
        call(*args)
    assert caught.value.field == field
    assert caught.value.message
    return caught.value.message


# --- check digits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "digit"),
    [
        # 0950600013435: digits from the right x3,x1,...: 5*3+3+4*3+3+1*3+0+0+0+6*3+0+5*3+9+0
        # = 78 -> (10 - 8) % 10 = 2
        ("0950600013435", "2"),
        # GTIN-8 0234567: 7*3+6+5*3+4+3*3+2+0 = 57 -> 3
        ("0234567", "3"),
        # GTIN-12 41600033610: 0+1+6*3+3+3*3+0+0+0+6*3+1+4*3 = 62 -> 8
        ("41600033610", "8"),
        # GTIN-13 211234567890: 0+9+8*3+7+6*3+5+4*3+3+2*3+1+1*3+2 = 90 -> 0
        ("211234567890", "0"),
        # GTIN-14 1234567890123: 3*3+2+1*3+0+9*3+8+7*3+6+5*3+4+3*3+2+1*3 = 109 -> 1
        ("1234567890123", "1"),
    ],
)
def test_check_digit_known_values(body: str, digit: str) -> None:
    assert gtin_check_digit(body) == digit


@pytest.mark.parametrize("body", ["", "123456", "12345678", "12345678901234", "12345A7", "١٢٣٤٥٦٧"])
def test_check_digit_refuses_bad_bodies(body: str) -> None:
    _refusal(gtin_check_digit, body, field="gtin")


@pytest.mark.parametrize(
    ("gtin", "gtin14"),
    [
        ("09506000134352", "09506000134352"),
        ("02345673", "00000002345673"),
        ("416000336108", "00416000336108"),
        ("2112345678900", "02112345678900"),
        ("12345678901231", "12345678901231"),
    ],
)
def test_validate_gtin_returns_14_digits(gtin: str, gtin14: str) -> None:
    assert validate_gtin(gtin) == gtin14


@pytest.mark.parametrize(
    ("gtin", "reason"),
    [
        ("09506000134353", "check digit"),
        ("9506000134353", "expected 2"),  # GTIN-13 form of the same number, wrong digit
        ("02345674", "expected 3"),
        ("416000336109", "expected 8"),
        ("0950600013435X", "only digits"),
        (" 09506000134352", "only digits"),
        ("", "only digits"),
        ("1234567", "7"),
        ("123456789012345", "15"),
    ],
)
def test_validate_gtin_refusals_name_the_reason(gtin: str, reason: str) -> None:
    message = _refusal(validate_gtin, gtin, field="gtin")
    assert reason in message


def test_validate_gtin_refuses_non_text() -> None:
    _refusal(validate_gtin, 9506000134352, field="gtin")


# --- serials ------------------------------------------------------------------------------


def test_new_serial_default_length_and_charset() -> None:
    serial = new_serial()
    assert len(serial) == 12
    assert set(serial) <= set(SERIAL_ALPHABET)
    assert not set("01OIL") & set(SERIAL_ALPHABET)
    assert all(c.isdigit() or c.isupper() for c in SERIAL_ALPHABET)


@pytest.mark.parametrize("length", [8, 16, 20])
def test_new_serial_lengths(length: int) -> None:
    assert len(new_serial(length)) == length


@pytest.mark.parametrize("length", [0, 7, 21, -1, True, 12.0])
def test_new_serial_refuses_bad_lengths(length: object) -> None:
    _refusal(new_serial, length, field="length")


def test_new_serial_does_not_repeat_over_10000_draws() -> None:
    serials = [new_serial() for _ in range(10_000)]
    assert len(set(serials)) == len(serials)
    assert all(make_identifier(GTIN, s, "B1", date(2027, 1, 1)) for s in serials[:50])


# --- the identifier -------------------------------------------------------------------------


def test_element_string_and_datamatrix_data() -> None:
    assert UNIT.element_string() == "(01)09506000134352(17)261231(10)B123(21)ABC123"
    # 01 and 17 are fixed length: no separator; 10 is variable and not last: GS; 21 last.
    assert UNIT.datamatrix_data() == "010950600013435217261231" + "10B123" + GS + "21ABC123"


def test_element_string_escapes_parenthesis_in_values() -> None:
    unit = make_identifier(GTIN, "S(1)", "B(2)", date(2026, 12, 31))
    assert unit.element_string() == r"(01)09506000134352(17)261231(10)B\(2)(21)S\(1)"
    assert parse_scan(unit.element_string()) == unit


def test_make_identifier_normalises_gtin_13_to_14() -> None:
    unit = make_identifier("9506000134352", "S1", "B1", date(2027, 3, 1))
    assert unit.gtin == GTIN


def test_digital_link() -> None:
    assert UNIT.digital_link() == "https://id.gs1.org/01/09506000134352/10/B123/21/ABC123?17=261231"
    unit = make_identifier(GTIN, "A/B+1", "L%1&2", date(2026, 12, 31))
    link = unit.digital_link("https://example.com/dl/")
    assert link == "https://example.com/dl/01/09506000134352/10/L%251%262/21/A%2FB%2B1?17=261231"


@pytest.mark.parametrize(
    "base", ["ftp://example.com", "https://", "https://a b", "https://x.org/?q=1", "example.com"]
)
def test_digital_link_refuses_bad_base(base: str) -> None:
    _refusal(UNIT.digital_link, base, field="base")


def test_dl_percent_encode_leaves_only_unreserved() -> None:
    assert dl_percent_encode("Az09-._~") == "Az09-._~"
    assert dl_percent_encode("!\"%&'()*+,/:;<=>?") == (
        "%21%22%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3C%3D%3E%3F"
    )


# a fresh random serial each run; its test id is fixed (pytest-xdist workers must collect the
# same ids)
RANDOM_UNIT = make_identifier(GTIN, new_serial(20), "LOT-2026/11.A", date(2027, 2, 28))
IDENTIFIERS = [
    UNIT,
    make_identifier(GTIN, "A" * 20, "B" * 20, date(2030, 1, 31)),
    RANDOM_UNIT,
    make_identifier("02345673", "x!\"%&'()*+,-./:;<=>?", "_z'9:;<=>?(A)", date(2028, 2, 29)),
    make_identifier("416000336108", "1", "1", date(2026, 1, 1)),
]


@pytest.mark.parametrize(
    "unit", IDENTIFIERS, ids=lambda u: f"{'random' if u is RANDOM_UNIT else u.serial}|{u.batch}"
)
@pytest.mark.parametrize(
    "form",
    [
        "element_string",
        "datamatrix_data",
        "]d2",
        "]Q3",
        "]C1",
        "digital_link",
        "digital_link_upper",
        "]Q1digital_link",
        "scanner_suffix",
    ],
)
def test_parse_scan_round_trips(unit: UnitIdentifier, form: str) -> None:
    payload = {
        "element_string": unit.element_string(),
        "datamatrix_data": unit.datamatrix_data(),
        "]d2": "]d2" + unit.datamatrix_data(),
        "]Q3": "]Q3" + unit.datamatrix_data(),
        "]C1": "]C1" + unit.datamatrix_data(),
        "digital_link": unit.digital_link(),
        "digital_link_upper": "HTTPS://" + unit.digital_link("https://example.com").split("://")[1],
        "]Q1digital_link": "]Q1" + unit.digital_link("https://example.com/stem"),
        "scanner_suffix": "]d2" + unit.datamatrix_data() + GS + "\r\n",
    }[form]
    assert parse_scan(payload) == unit


def test_parse_scan_accepts_any_element_order_and_extra_ais() -> None:
    payload = "]d2" + "21ABC123" + GS + "10B123" + GS + "11260101" + "0109506000134352" + "17261231"
    assert parse_scan(payload) == UNIT
    assert parse_scan("(01)09506000134352(21)ABC123(17)261231(10)B123(710)NHRN1") == UNIT


def test_parse_scan_accepts_spaces_between_bracketed_elements() -> None:
    assert parse_scan(" (01) 09506000134352 (17) 261231 (10) B123 (21) ABC123 ") == UNIT


@pytest.mark.parametrize(
    ("yymmdd", "expected"),
    [
        ("261100", date(2026, 11, 30)),
        ("270200", date(2027, 2, 28)),
        ("280200", date(2028, 2, 29)),  # leap year
        ("261200", date(2026, 12, 31)),
        ("260400", date(2026, 4, 30)),
    ],
)
def test_day_00_means_last_day_of_month(yymmdd: str, expected: date) -> None:
    for payload in (
        f"(01){GTIN}(17){yymmdd}(10)B123(21)ABC123",
        f"]d201{GTIN}17{yymmdd}10B123{GS}21ABC123",
        f"https://id.gs1.org/01/{GTIN}/10/B123/21/ABC123?17={yymmdd}",
    ):
        assert parse_scan(payload).expiry == expected


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("", "empty"),
        ("   \r\n", "empty"),
        (GS, "empty"),
        ("hello", "not GS1"),
        ("ABC", "not GS1"),
        ("]d2", "no data"),
        ("]E02112345678900", "does not mark GS1"),  # EAN-13: a bare GTIN, no AIs
        (f"]d101{GTIN}17261231", "does not mark GS1"),  # DataMatrix not in GS1 mode
        ("]XX0109506000134352", "does not mark GS1"),
        ("ftp://id.gs1.org/01/09506000134352", "http"),
        ("9506000134352", "AI"),
        ("(01)09506000134352(17)261231(10)B123", "(21) serial"),
        ("(01)09506000134352(17)261231(21)ABC123", "(10) batch"),
        ("(01)09506000134352(10)B123(21)ABC123", "(17) expiry"),
        ("(17)261231(10)B123(21)ABC123", "(01)"),
        (f"]d201{GTIN}17261231", "(10) batch, (21) serial"),
        (f"https://id.gs1.org/01/{GTIN}/10/B123/21/ABC123", "(17) expiry"),
        ("(01)09506000134353(17)261231(10)B123(21)ABC123", "check digit"),
        (f"]d20109506000134353172612311 0B123{GS}21ABC123".replace(" ", ""), "check digit"),
        ("https://id.gs1.org/01/09506000134353/10/B123/21/ABC123?17=261231", "check digit"),
        ("(01)0950600013435(17)261231(10)B123(21)ABC123", "14 digits"),
        ("(01)09506000134352(17)261331(10)B123(21)ABC123", "month 13"),
        ("(01)09506000134352(17)260230(10)B123(21)ABC123", "no day 30"),
        ("(01)09506000134352(17)270229(10)B123(21)ABC123", "no day 29"),
        ("(01)09506000134352(17)2612(10)B123(21)ABC123", "YYMMDD"),
        (f"]d201{GTIN}1726023110B123{GS}21ABC123", "no day 31"),
        ("https://id.gs1.org/01/09506000134352/10/B123/21/ABC123?17=261232", "no day 32"),
        ("(01)09506000134352(17)261231(10)B 123(21)ABC123", "character set 82"),
        ("(01)09506000134352(17)261231(10)B123(21)" + "S" * 21, "at most 20"),
        (f"]d201{GTIN}17261231" + "10" + "B" * 21 + GS + "21ABC123", "at most 20"),
        (f"]d201{GTIN}1726123110B123{GS}21ABC123{GS}10OTHER", "twice"),
        ("(01)09506000134352(17)261231(10)B123(21)ABC123(235)TPX", "together"),
        ("(01)09506000134352(17)261231(10)B123(21)ABC123(99", "malformed AI"),
        ("(01)09506000134352(17)261231(10)(21)ABC123", "no value"),
        ("(01)09506000134352(17)261231(10)B123(21)ABC123(89)X", "not valid"),
        ("HtTps://id.gs1.org/01/09506000134352/10/B123/21/ABC123?17=261231", "case"),
        ("https://id.gs1.org/01/9506000134352/10/B123/21/ABC123?17=261231", "14 digits"),
        ("https://id.gs1.org/01/09506000134352?10=B123&21=ABC123&17=261231", "URI path"),
        ("https://id.gs1.org/01/09506000134352/21/ABC123/10/B123?17=261231", "qualifiers"),
        ("https://id.gs1.org/01/09506000134352/10/B123/21/ABC123?17=261231&17=261231", "once"),
        ("https://id.gs1.org/01/09506000134352/10/B 1/21/ABC123?17=261231", "URI may not"),
        ("https:///01/09506000134352/10/B123/21/ABC123?17=261231", "host"),
        ("https://id.gs1.org/gtin/09506000134352/lot/B123/ser/ABC123?exp=261231", "primary key"),
    ],
)
def test_parse_scan_refusals(payload: str, reason: str) -> None:
    message = _refusal(parse_scan, payload, field="scan")
    assert reason in message, message


def test_parse_scan_refuses_non_text() -> None:
    _refusal(parse_scan, b"(01)09506000134352", field="scan")


def test_scan_elements_keeps_other_ais_in_order() -> None:
    assert scan_elements(f"]d201{GTIN}310300018910AB") == (
        ("01", GTIN),
        ("3103", "000189"),
        ("10", "AB"),
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"gtin": "09506000134353"}, "gtin"),
        ({"gtin": "0950600013435A"}, "gtin"),
        ({"gtin": "123"}, "gtin"),
        ({"serial": ""}, "serial"),
        ({"serial": "S" * 21}, "serial"),
        ({"serial": "AB CD"}, "serial"),
        ({"serial": "AB^CD"}, "serial"),
        ({"serial": "ÄBC"}, "serial"),
        ({"serial": 123}, "serial"),
        ({"batch": ""}, "batch"),
        ({"batch": "B" * 21}, "batch"),
        ({"batch": "B~1"}, "batch"),
        ({"batch": "B" + GS + "1"}, "batch"),
        ({"expiry": "2026-12-31"}, "expiry"),
        ({"expiry": datetime(2026, 12, 31, 12, 0)}, "expiry"),
        ({"expiry": date(2080, 1, 31)}, "expiry"),  # YY 80 would read as 1980 today
    ],
)
def test_make_identifier_refusals(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {
        "gtin": GTIN,
        "serial": "ABC123",
        "batch": "B123",
        "expiry": date(2026, 12, 31),
    }
    args.update(kwargs)
    with pytest.raises(ValidationFailed) as caught:
        make_identifier(**args)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert field in caught.value.message or "GTIN" in caught.value.message


def test_unit_identifier_itself_refuses_short_gtin() -> None:
    with pytest.raises(ValidationFailed) as caught:
        UnitIdentifier(gtin="9506000134352", serial="S", batch="B", expiry=date(2026, 12, 31))
    assert caught.value.field == "gtin"


def test_identifier_is_frozen() -> None:
    with pytest.raises(AttributeError):
        UNIT.serial = "X"  # type: ignore[misc]
