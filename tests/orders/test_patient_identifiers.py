"""Patient identifiers as hospitals know them (orders/identifiers.py): the NHS number's modulus-11
check digit (NHS Data Dictionary), the GSRN of a wristband (GS1 General Specifications, AI
8018, mod-10 check digit), MRN and prescription ID normalisation, and telling a typed or
scanned identifier apart by its form. Expected values are worked by hand below."""

from __future__ import annotations

from datetime import date

import pytest

from nearfab.common.errors import ValidationFailed
from nearfab.orders.identifiers import (
    IdentifierKind,
    classify,
    gsrn_check_digit,
    is_valid_nhs_number,
    nhs_check_digit,
    normalise_birth_date,
    normalise_gsrn,
    normalise_mrn,
    normalise_nhs_number,
    normalise_prescription_id,
    parse_wristband,
)

# --- NHS number: modulus 11 --------------------------------------------------------------------
#
# 943 476 5919: digits 9 4 3 4 7 6 5 9 1, weights 10 9 8 7 6 5 4 3 2
#   90 + 36 + 24 + 28 + 42 + 30 + 20 + 27 + 2 = 299; 299 mod 11 = 2 (11 x 27 = 297);
#   11 - 2 = 9: the tenth digit is 9. Valid.
# 943 476 5870: 9 4 3 4 7 6 5 8 7
#   90 + 36 + 24 + 28 + 42 + 30 + 20 + 24 + 14 = 308; 308 mod 11 = 0; 11 - 0 = 11 -> 0. Valid.
# 401 023 2137: 4 0 1 0 2 3 2 1 3
#   40 + 0 + 8 + 0 + 12 + 15 + 8 + 3 + 6 = 92; 92 mod 11 = 4 (88); 11 - 4 = 7. Valid.
# 123 456 7890: 1 2 3 4 5 6 7 8 9
#   10 + 18 + 24 + 28 + 30 + 30 + 28 + 24 + 18 = 210; 210 mod 11 = 1 (209); 11 - 1 = 10:
#   no check digit exists, so no NHS number starts 123456789.
HAND_WORKED = [("943476591", 9), ("943476587", 0), ("401023213", 7), ("123456789", None)]


@pytest.mark.parametrize(("nine", "check"), HAND_WORKED)
def test_nhs_check_digit_by_hand(nine: str, check: int | None) -> None:
    assert nhs_check_digit(nine) == check


@pytest.mark.parametrize(
    "number", ["9434765919", "943 476 5919", "943-476-5919", "9434765870", "4010232137"]
)
def test_published_test_numbers_are_valid(number: str) -> None:
    assert is_valid_nhs_number(number)
    assert normalise_nhs_number(number) == number.replace(" ", "").replace("-", "")


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("9434765918", "check digit is 8, the modulus-11 rule gives 9"),  # last digit changed
        ("9434765871", "check digit is 1, the modulus-11 rule gives 0"),
        ("4010232138", "check digit is 8, the modulus-11 rule gives 7"),
        ("1234567890", "no check digit fits"),  # 11 - remainder = 10 (above)
        ("943476591", "10 digits"),
        ("94347659190", "10 digits"),
        ("94347659I9", "10 digits"),
        ("", "no NHS number"),
    ],
)
def test_invalid_nhs_numbers_are_refused_naming_the_field(number: str, why: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        normalise_nhs_number(number)
    assert caught.value.field == "nhs_number"
    assert why in caught.value.message
    assert not is_valid_nhs_number(number)


def test_a_transposition_is_caught() -> None:
    # swapping two adjacent digits changes the weighted sum by their difference: 9434765919
    # with 7 and 6 swapped -> 9434675919; weights 6 and 5 now carry 6 and 7: 299 - 42 - 30 +
    # 36 + 35 = 298, 298 mod 11 = 1, check 10: invalid
    assert nhs_check_digit("943467591") is None
    assert not is_valid_nhs_number("9434675919")


# --- GSRN (AI 8018): GS1 mod-10 ----------------------------------------------------------------
#
# body 9501101530000000 1 (17 digits): weights from the rightmost digit 3, 1, 3, 1, ... so the
# digits in odd positions from the left (1st, 3rd, ... 17th) weigh 3, the even ones 1.
#   odd:  9 + 0 + 1 + 1 + 3 + 0 + 0 + 0 + 1 = 15, x 3 = 45
#   even: 5 + 1 + 0 + 5 + 0 + 0 + 0 + 0 = 11
#   45 + 11 = 56; (10 - 56 mod 10) mod 10 = 4: GSRN 950110153000000014.
# body 12345678901234567: odd 1+3+5+7+9+1+3+5+7 = 41 x 3 = 123; even 2+4+6+8+0+2+4+6 = 32;
#   155 -> (10 - 5) mod 10 = 5: GSRN 123456789012345675.
GSRN = "950110153000000014"
GSRN_2 = "123456789012345675"


def test_gsrn_check_digit_by_hand() -> None:
    assert gsrn_check_digit(GSRN[:17]) == "4"
    assert gsrn_check_digit(GSRN_2[:17]) == "5"
    assert normalise_gsrn(GSRN) == GSRN
    with pytest.raises(ValidationFailed, match="check digit is 3, GS1 mod-10 gives 4") as caught:
        normalise_gsrn(GSRN[:17] + "3")
    assert caught.value.field == "wristband"


@pytest.mark.parametrize(
    "scan",
    [
        f"(8018){GSRN}",
        f"8018{GSRN}",
        f"]d28018{GSRN}",
        f"]C18018{GSRN}",
        f"\x1d8018{GSRN}",
        f"]d28018{GSRN}\x1d10ABC",  # another element after it (FNC1-separated)
        f"(8018){GSRN}(10)ABC",
    ],
)
def test_wristband_gsrn_scans(scan: str) -> None:
    band = parse_wristband(scan)
    assert (band.kind, band.value) == (IdentifierKind.GSRN, GSRN)


@pytest.mark.parametrize("scan", ["9434765919", "]C09434765919", "943 476 5919"])
def test_plain_nhs_number_barcodes(scan: str) -> None:
    band = parse_wristband(scan)
    assert (band.kind, band.value) == (IdentifierKind.NHS_NUMBER, "9434765919")


@pytest.mark.parametrize(
    ("scan", "why"),
    [
        (f"(8018){GSRN[:17]}3", "GS1 mod-10 gives 4"),
        ("9434765918", "not a valid NHS number"),
        ("(01)09501101530003(21)X", "holds 0 GSRN"),
        ("(8018)12345", "not a wristband barcode"),
        ("hello", "not a wristband barcode"),
        ("", "nothing scanned"),
    ],
)
def test_bad_wristband_scans_are_refused(scan: str, why: str) -> None:
    with pytest.raises(ValidationFailed, match=why) as caught:
        parse_wristband(scan)
    assert caught.value.field == "wristband"


# --- MRN, prescription ID, birth date -----------------------------------------------------------


def test_mrn_and_prescription_id_normalised() -> None:
    assert normalise_mrn(" rj1 123456 ") == "RJ1123456"
    assert normalise_prescription_id(" a7b86f-zx1234-11111m ") == "A7B86F-ZX1234-11111M"
    with pytest.raises(ValidationFailed) as caught:
        normalise_mrn("  ")
    assert caught.value.field == "mrn"
    with pytest.raises(ValidationFailed) as caught:
        normalise_mrn("X" * 65)
    assert caught.value.field == "mrn"
    with pytest.raises(ValidationFailed) as caught:
        normalise_prescription_id("")
    assert caught.value.field == "prescription_id"


def test_birth_date() -> None:
    assert normalise_birth_date("2016-02-29") == date(2016, 2, 29)
    with pytest.raises(ValidationFailed) as caught:
        normalise_birth_date("2015-02-29")
    assert caught.value.field == "birth_date"


# --- one field, told apart by form ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "kind", "value"),
    [
        ("PT-ABCD1234", IdentifierKind.PSEUDONYM, "PT-ABCD1234"),
        ("943 476 5919", IdentifierKind.NHS_NUMBER, "9434765919"),
        (f"(8018){GSRN}", IdentifierKind.GSRN, GSRN),
        (f"]d28018{GSRN}", IdentifierKind.GSRN, GSRN),
        ("K123456", IdentifierKind.MRN, "K123456"),
        ("12345678", IdentifierKind.MRN, "12345678"),
    ],
)
def test_classify(typed: str, kind: IdentifierKind, value: str) -> None:
    assert classify(typed) == (kind, value)


def test_classify_refuses_a_mistyped_nhs_number_naming_the_field() -> None:
    with pytest.raises(ValidationFailed, match="not a valid NHS number") as caught:
        classify("943 476 5918")
    assert caught.value.field == "patient"


@pytest.mark.parametrize("typed", ["Patient/pat-123", "urn:uuid:1f0c", "#p1"])
def test_a_fhir_subject_reference_is_explained_not_taken_for_an_mrn(typed: str) -> None:
    # issue 20: a pharmacist typed the prescription's subject reference
    with pytest.raises(ValidationFailed, match="sender's FHIR reference") as caught:
        classify(typed)
    assert caught.value.field == "patient"


# --- an NHS wristband's GSRN carries the NHS number (DCB1077) ----------------------------------
#
# DCB1077 (AIDC for Patient Identification) builds the wristband's GSRN as the NHS GS1 company
# prefix (7 digits), the NHS number (10) and the check digit. With a made-up prefix 1234567
# and NHS number 943 476 5919, the body is 1234567 9434765919:
#   odd positions (x3):  1 + 3 + 5 + 7 + 4 + 4 + 6 + 9 + 9 = 48 -> 144
#   even positions (x1): 2 + 4 + 6 + 9 + 3 + 7 + 5 + 1 = 37
#   144 + 37 = 181; (10 - 1) mod 10 = 9: GSRN 123456794347659199
NHS_GSRN = "123456794347659199"


def test_the_nhs_number_inside_a_wristband_gsrn() -> None:
    assert gsrn_check_digit(NHS_GSRN[:17]) == "9"
    band = parse_wristband(f"(8018){NHS_GSRN}")
    assert (band.kind, band.value, band.nhs_number) == (IdentifierKind.GSRN, NHS_GSRN, "9434765919")
    # a GSRN whose ten digits before the check digit are no NHS number carries none
    assert parse_wristband(f"(8018){GSRN}").nhs_number is None  # 0153000000: check digit fails
    assert parse_wristband("9434765919").nhs_number == "9434765919"


# --- other scripts' digits and unbounded text --------------------------------------------------
# str.isdigit() is True for Arabic-Indic digits ('٩' is U+0669): each reader takes 0-9 only, and
# says so, instead of refusing confusingly ("10 digits; 10 characters given") or hashing an MRN
# that can never match


def test_non_ascii_digits_are_refused_naming_the_field() -> None:
    arabic_indic = "٩٤٣٤٧٦٥٩١٩"  # 943 476 5919 in Arabic-Indic digits
    assert arabic_indic.isdigit()
    with pytest.raises(ValidationFailed, match="not all of them 0-9") as nhs:
        classify(arabic_indic)
    assert nhs.value.field == "patient"
    with pytest.raises(ValidationFailed, match="digits are 0-9") as mrn:
        classify("K١٢٣٤٥٦")
    assert mrn.value.field == "patient"
    with pytest.raises(ValidationFailed) as band:
        parse_wristband("(8018)٩٥٠١١٠١٥٣٠٠٠٠٠٠٠١٤")
    assert band.value.field == "wristband"
    with pytest.raises(ValidationFailed) as born:
        normalise_birth_date("٢٠١٧-٠٣-١٤")
    assert born.value.field == "birth_date"


def test_a_refused_birth_date_is_not_repeated_and_only_yyyy_mm_dd_is_read() -> None:
    for text in ("1917-13-40", "20170314", "x" * 100_000, "2017-03-14T00:00"):
        with pytest.raises(ValidationFailed) as caught:
            normalise_birth_date(text)
        assert caught.value.field == "birth_date"
        assert text[:8] not in caught.value.message and len(caught.value.message) < 80
    assert normalise_birth_date(" 2017-03-14 ") == date(2017, 3, 14)
