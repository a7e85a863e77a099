"""ISBT 128 chain-of-identity logic, tested against published examples.

Every expected value below comes from a published source, named beside it:

[ST-001]  ICCBBA, ISBT 128 Standard Technical Specification, ST-001 v6.2.2 (April 2023), read
          in the public transcription github.com/pdesiatnyk/ISBT128
          @ c99b365b94db15417af69bcb97bcd0e0f36a0010, documents/iccbba.md (sections cited per
          test).
[JPAC]    UK Blood Transfusion Services "Red Book", Annex 2 "ISBT 128 check character calculation",
          https://www.transfusionguidelines.org/red-book/annex-2-isbt-128-check-character-calculation
          (Table A2.2).
[stdnum]  arthurdejong/python-stdnum @ 37a2afd6f970c73680209e212cb425ac2c92dbec,
          tests/test_iso7064.doctest (MOD 37-2 section).
[dtw]     danieltwagner/iso7064 @ 2632e1d5a5fa37948c513f4d1949ee51cd91c8ab,
          src/test/java/com/github/danieltwagner/iso7064/Mod37_2Test.java.
[pdes]    pdesiatnyk/ISBT128 @ c99b365b94db15417af69bcb97bcd0e0f36a0010,
          csharp/Iccbba.Isbt128.Tests/ParserTests.cs (examples it quotes from ICCBBA ST-017 §3.1
          Figure 2 and ST-012 §6.2).
[ISO7064] ISO/IEC 7064:2003 pure systems: a string a_n..a_1 whose position 1 is the check
          character is valid when  Σ a_i · r^(i-1) ≡ 1 (mod M);  MOD 37-2 is r = 2, M = 37, with
          the 0-9, A-Z, * value table (= ST-001 Table 35). Definition as quoted in
          https://math.techqa.club/what-properties-does-a-radix-in-the-context-of-iso-iec-7064-pure-check-digit-system-require-4115822
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from nearfab.common.errors import ValidationFailed
from nearfab.families.isbt128.structures import (
    COLLECTION_TYPES,
    DonationIdentificationNumber,
    FlagType,
    Isbt128Invalid,
    din_check_character,
    flag_characters,
    mod37_2_check_character,
    mod37_2_checksum,
    parse_din,
    parse_printed_din,
    parse_processing_facility_code,
    parse_product_code,
    parse_scanned_din,
    type3_flags,
)

TABLE_35 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"  # [ST-001] Table 35 / [JPAC] Table A2.1

# (13-character DIN, MOD 37-2 checksum, check character K, source)
PUBLISHED_CHECKS = [
    ("G123417654321", 10, "A", "[ST-001] Appendix A.1 worked example"),
    ("G123498654321", 17, "H", "[JPAC] Table A2.2; [stdnum] mod_37_2 'G123498654321' -> 'H'"),
    ("G123489654321", 34, "Y", "[dtw] testBasic: G123489654321 -> G123489654321Y"),
    ("W000009123456", 16, "G", "[ST-001] §7.4.1 flag example 'W0000 09 123456 02 G'"),
    ("A999818123456", 23, "N", "[ST-001] §7.5.1.1 boxed check character example"),
    ("A999921123456", 3, "3", "[ST-001] §2.4.1 Figure 2 (A9999 21 123456, flags 01, K 3)"),
    ("A999820123456", 14, "E", "[ST-001] Appendix C blood label example 'A9998 20 123456'"),
]


def _iso7064_is_valid(data: str, check: str) -> bool:
    """[ISO7064] definition, written out: Σ a_i · 2^(i-1) ≡ 1 (mod 37), i = 1 at the right."""
    values = [TABLE_35.index(c) for c in data + check]
    total = sum(v * 2 ** (i - 1) for i, v in enumerate(reversed(values), start=1))
    return total % 37 == 1


def _field_of(exc: pytest.ExceptionInfo[Isbt128Invalid]) -> str | None:
    return exc.value.field


# --- MOD 37-2 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("din", "checksum", "k", "source"), PUBLISHED_CHECKS)
def test_check_character_matches_published_examples(
    din: str, checksum: int, k: str, source: str
) -> None:
    assert mod37_2_checksum(din) == checksum, source
    assert din_check_character(din) == k, source
    assert mod37_2_check_character(din) == k, source


@pytest.mark.parametrize(("din", "checksum", "k", "source"), PUBLISHED_CHECKS)
def test_published_examples_satisfy_the_iso_7064_definition(
    din: str, checksum: int, k: str, source: str
) -> None:
    assert _iso7064_is_valid(din, k), source


def test_hand_calculation_of_the_st001_example_against_iso_7064() -> None:
    """G1234 17 654321 by hand, both ways.

    ST-001 Appendix A.1 steps (weights 2^n, n counted from the right, n = 13 for 'G'):
      G 16·8192=131072  1 1·4096=4096  2 2·2048=4096  3 3·1024=3072  4 4·512=2048
      1 1·256=256  7 7·128=896  6 6·64=384  5 5·32=160  4 4·16=64  3 3·8=24  2 2·4=8  1 1·2=2
      sum = 146178 = 37·3950 + 28;  38 - 28 = 10;  10 mod 37 = 10  ->  K = Table 35[10] = 'A'.
    ISO/IEC 7064 definition (check character at position 1, weight 2^0 = 1):
      146178 + 10·1 = 146188 = 37·3951 + 1  ≡ 1 (mod 37)   ✓
    """
    weighted = [16 * 8192, 4096, 2 * 2048, 3 * 1024, 4 * 512, 256, 7 * 128, 6 * 64, 5 * 32]
    weighted += [4 * 16, 3 * 8, 2 * 4, 1 * 2]
    assert sum(weighted) == 146178 == 37 * 3950 + 28
    assert (38 - 28) % 37 == 10 and TABLE_35[10] == "A"
    assert 146178 + 10 == 37 * 3951 + 1
    assert mod37_2_checksum("G123417654321") == 10


def test_hand_calculation_of_the_jpac_example() -> None:
    """[JPAC] Table A2.2: sum 148354, mod 37 = 21, 38 - 21 = 17 -> 'H', bar code flags 77.
    ISO/IEC 7064: 148354 + 17 = 148371 = 37·4010 + 1 ≡ 1 (mod 37)."""
    assert 148354 == 37 * 4009 + 21 and 148354 + 17 == 37 * 4010 + 1
    assert mod37_2_checksum("G123498654321") == 17
    assert type3_flags("G123498654321") == "77"


def test_supplementary_check_character_star_by_hand() -> None:
    """'1' alone: 1·2^1 = 2; c = (1 - 2) mod 37 = 36 -> '*' (Table 35). '0': c = 1 -> '1'."""
    assert mod37_2_check_character("1") == "*"
    assert mod37_2_check_character("0") == "1"


def test_random_strings_satisfy_the_iso_7064_definition() -> None:
    rng = random.Random(128)
    alphabet = TABLE_35[:36]
    for _ in range(500):
        data = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))
        assert _iso7064_is_valid(data, mod37_2_check_character(data)), data


def test_every_single_substitution_and_adjacent_transposition_is_detected() -> None:
    """ISO/IEC 7064 pure systems detect all single substitution and transposition errors."""
    din, k = "G123417654321", "A"
    for i, original in enumerate(din):
        for c in TABLE_35[:36]:
            if c != original:
                typo = din[:i] + c + din[i + 1 :]
                assert mod37_2_check_character(typo) != k, typo
    for i in range(len(din) - 1):
        if din[i] != din[i + 1]:
            swapped = din[:i] + din[i + 1] + din[i] + din[i + 2 :]
            assert mod37_2_check_character(swapped) != k, swapped


def test_mod37_2_refuses_characters_outside_the_alphabet() -> None:
    for bad in ("", "g123", "G12-3", "G12*3"):
        with pytest.raises(Isbt128Invalid):
            mod37_2_checksum(bad)


# --- Flag characters (ST-001 Table 3 [RT004]) --------------------------------------------------


@pytest.mark.parametrize(
    ("ff", "kind", "printed"),
    [
        ("00", FlagType.NOT_USED, False),  # flag not used
        ("01", FlagType.TYPE_1, True),  # container 1 of a set
        ("07", FlagType.TYPE_1, True),  # test tube label
        ("19", FlagType.TYPE_1, True),  # container 9 of a set
        ("14", FlagType.RESERVED, False),  # reserved for future assignment
        ("20", FlagType.TYPE_2, True),  # 20-59 local
        ("59", FlagType.TYPE_2, True),
        ("60", FlagType.TYPE_3, False),  # 60-96 checksum, never printed (Appendix A.2)
        ("96", FlagType.TYPE_3, False),
        ("97", FlagType.RESERVED, False),  # 97-99 reserved
        ("A0", FlagType.RESERVED, False),  # alphanumeric values reserved
    ],
)
def test_flag_types_follow_table_3(ff: str, kind: FlagType, printed: bool) -> None:
    flag = flag_characters(ff)
    assert flag.type is kind
    assert flag.printed is printed


def test_flag_meanings_from_table_3() -> None:
    assert flag_characters("01").meaning == "container 1 of a set"
    assert flag_characters("07").meaning == "test tube label"
    assert flag_characters("60").checksum == 0 and flag_characters("96").checksum == 36


@pytest.mark.parametrize("ff", ["I0", "O0", "Q1", "Z9", "0", "000", "a1"])
def test_flag_characters_outside_the_allowed_set_are_refused(ff: str) -> None:
    """§2.4.1: ff from {0-9} and {A-H, J-N, P, R-Y}."""
    with pytest.raises(Isbt128Invalid) as exc:
        flag_characters(ff)
    assert _field_of(exc) == "din.flags"


def test_type3_flags_of_the_st001_example() -> None:
    """[ST-001] Appendix A.2: checksum 10 + 60 = 70; data content G12341765432170."""
    assert type3_flags("G123417654321") == "70"
    din = DonationIdentificationNumber("G1234", "17", "654321").with_type3_flags()
    assert din.scanned() == "=G12341765432170"


# --- DIN: scanned form (data structure 001) ----------------------------------------------------


def test_parse_scanned_din_example_from_st017() -> None:
    """[pdes] ParsesStandaloneDin: '=A99991712345600' -> A9999 / 17 / 123456 / 00."""
    din = parse_scanned_din("=A99991712345600")
    assert (din.fin, din.year, din.sequence, din.flags) == ("A9999", "17", "123456", "00")
    assert din.din == "A999917123456"
    assert din.flag.type is FlagType.NOT_USED
    assert din.scanned() == "=A99991712345600"


def test_scanned_din_with_type3_flags_is_verified() -> None:
    """[ST-001] A.2 / [pdes]: '=G12341765432170' is right, '...71' carries a wrong checksum."""
    din = parse_scanned_din("=G12341765432170")
    assert din.flag.type is FlagType.TYPE_3 and din.check_character == "A"
    with pytest.raises(Isbt128Invalid) as exc:
        parse_scanned_din("=G12341765432171")
    assert _field_of(exc) == "din.flags"
    assert "70" in exc.value.reason


@pytest.mark.parametrize(
    ("compact", "fin", "year", "sequence"),
    [
        # [ST-001] §7.4.1 display examples; the second and third are spaced differently.
        ("V004314499999", "V0043", "14", "499999"),
        ("A123414012346", "A1234", "14", "012346"),
        ("7004203123456", "70042", "03", "123456"),  # α may be a digit 1-9
    ],
)
def test_din_fields_of_the_display_examples(
    compact: str, fin: str, year: str, sequence: str
) -> None:
    din = parse_scanned_din(f"={compact}00")
    assert (din.fin, din.year, din.sequence) == (fin, year, sequence)


@pytest.mark.parametrize(
    ("code", "field"),
    [
        ("A99991712345600", "din"),  # no data identifier
        ("=A999917123456", "din"),  # flags missing: 13 characters after '='
        ("=A9999171234560000", "din"),  # too long
        ("=O99991712345600", "din.fin"),  # α excludes O
        ("=099991712345600", "din.fin"),  # α excludes 0
        ("=a99991712345600", "din.fin"),  # lower case
        ("=AB9991712345600", "din.fin"),  # pppp numeric in current usage
        ("=A9999X712345600", "din.year"),
        ("=A99991712345A00", "din.sequence"),
        ("=A999917123456I0", "din.flags"),
    ],
)
def test_malformed_scanned_din_names_the_field(code: str, field: str) -> None:
    with pytest.raises(Isbt128Invalid) as exc:
        parse_scanned_din(code)
    assert _field_of(exc) == field
    assert exc.value.reason
    assert isinstance(exc.value, ValidationFailed)  # answered 422 by the API layer
    assert exc.value.to_dict()["field"] == field


# --- DIN: printed (eye-readable) form ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "din13", "flags"),
    [
        ("G1234 17 654321 A", "G123417654321", "00"),  # [ST-001] A.1 / Figure 18
        ("G1234 17 654321 [A]", "G123417654321", "00"),  # the box typed as brackets
        ("G123 498 654 321 H", "G123498654321", "00"),  # [JPAC] spacing
        ("g123 498 654 321 (h)", "G123498654321", "00"),  # typed in lower case
        ("A9998 18 123456 N", "A999818123456", "00"),  # [ST-001] §7.5.1.1
        ("W0000 09 123456 02 G", "W000009123456", "02"),  # [ST-001] §7.4.1, flags 02
        ("A9999 21 123456 01 |3|", "A999921123456", "01"),  # [ST-001] Figure 2, flags 01
    ],
)
def test_parse_printed_din(text: str, din13: str, flags: str) -> None:
    din = parse_printed_din(text)
    assert din.din == din13
    assert din.flags == flags
    assert parse_din(text) == din


def test_parse_din_dispatches_on_the_data_identifier() -> None:
    assert (
        parse_din("=G12341765432170") == parse_printed_din("G1234 17 654321 A").with_type3_flags()
    )


def test_wrong_check_character_is_a_keyboard_entry_error() -> None:
    with pytest.raises(Isbt128Invalid) as exc:
        parse_printed_din("G1234 17 654321 B")  # K is A ([ST-001] A.1)
    assert _field_of(exc) == "din.check_character"
    assert "'A'" in exc.value.reason


def test_one_mistyped_digit_is_caught() -> None:
    """[JPAC] G123 498 654 321 has K = H; typing 654 312 instead of 654 321 must fail."""
    with pytest.raises(Isbt128Invalid) as exc:
        parse_printed_din("G123 498 654 312 H")
    assert _field_of(exc) == "din.check_character"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("G1234 17 654321", "din.check_character"),  # K left out
        ("G1234 17 654321 70 A", "din.flags"),  # Type 3 flags are never printed (A.2)
        ("G1234 17 654321 00 A", "din.flags"),  # 00 is not printed either (§7.4.1)
        ("G1234 17 65432 A", "din"),  # a digit short
        ("", "din"),
        ("O1234 17 654321 A", "din.fin"),
    ],
)
def test_malformed_printed_din_names_the_field(text: str, field: str) -> None:
    with pytest.raises(Isbt128Invalid) as exc:
        parse_printed_din(text)
    assert _field_of(exc) == field


def test_eye_readable_text() -> None:
    """§7.4.1: Type 1/2 flags printed after the DIN, Type 3 and 00 not; K boxed last."""
    assert parse_printed_din("W0000 09 123456 02 G").eye_readable() == "W0000 09 123456 02 [G]"
    assert parse_din("=G12341765432170").eye_readable() == "G1234 17 654321 [A]"


def test_non_text_input_is_refused() -> None:
    nothing: Any = None
    for parse in (parse_din, parse_scanned_din, parse_printed_din, parse_product_code):
        with pytest.raises(Isbt128Invalid):
            parse(nothing)


# --- Product Code (data structure 003) ---------------------------------------------------------


def test_e_code_from_st001_figure_1() -> None:
    """[ST-001] §2.1 Figure 1: '=<' + 'E1234V00'."""
    code = parse_product_code("=<E1234V00")
    assert code.description_code == "E1234"
    assert code.category == "blood components"
    assert code.collection_type == "V"
    assert COLLECTION_TYPES["V"].startswith("volunteer homologous")  # Table 7 default
    assert code.division == "00" and not code.divided
    assert code.scanned() == "=<E1234V00"


def test_e_code_printed_on_the_appendix_c_label() -> None:
    """[ST-001] Appendix C: 'Product: E4306V00' (text form, no data identifier)."""
    code = parse_product_code("E4306V00")
    assert (code.description_code, code.collection_type, code.division) == ("E4306", "V", "00")


def test_cellular_therapy_code_from_st001_figure_3() -> None:
    """[ST-001] §2.4.3 Figure 3: S12954A0 = PDC S1295, collection type 4, division A0."""
    code = parse_product_code("S12954A0")
    assert code.category == "cellular therapy"
    assert code.collection_type == "4" and COLLECTION_TYPES["4"] == "designated"
    assert code.division == "A0" and code.divided


def test_tissue_codes_have_a_three_digit_division() -> None:
    """[ST-001] §2.4.3 Figure 4: T1295003; [pdes] (ST-012 §6.2): '=<T0416003'."""
    code = parse_product_code("T1295003")
    assert code.category == "tissue" and code.collection_type is None
    assert code.division == "003"
    assert parse_product_code("=<T0416003").division == "003"


def test_autologous_collection_types_of_table_7() -> None:
    assert COLLECTION_TYPES["1"] == "for autologous use only"
    assert COLLECTION_TYPES["A"] == "autologous, eligible for crossover"
    assert parse_product_code("=<S12951A0").collection_type == "1"


@pytest.mark.parametrize(
    ("code", "field"),
    [
        ("=<E1234V0", "product_code"),  # 7 characters
        ("=<e1234V00", "product_code.description_code"),
        ("=<G1234V00", "product_code.description_code"),  # G is not an assigned product type
        ("=<Y1234V00", "product_code.description_code"),  # clinical trials run YA000-YZ999
        ("=<E1234Z00", "product_code.collection_type"),  # Z not in Table 7
        ("=<E1234V0A", "product_code.division"),  # s is lower case
        ("=<E1234Va0", "product_code.division"),  # d is upper case
        ("=<T12950A3", "product_code.division"),  # tissue: three digits
        ("=<X1234001", "product_code.tds"),  # X1-X9: 000 reserved
    ],
)
def test_malformed_product_code_names_the_field(code: str, field: str) -> None:
    with pytest.raises(Isbt128Invalid) as exc:
        parse_product_code(code)
    assert _field_of(exc) == field


# --- Processing Facility Information Code (data structure 033) --------------------------------


def test_processing_facility_code_from_st001_figure_8() -> None:
    """[ST-001] §2.4.33 Figure 8: A9999 (FIN(P)) + AB3456 (facility-defined product code)."""
    pfic = parse_processing_facility_code("&+A9999AB3456")
    assert (pfic.fin, pfic.facility_product_code) == ("A9999", "AB3456")
    assert parse_processing_facility_code("A9999AB3456") == pfic
    assert pfic.scanned() == "&+A9999AB3456"


@pytest.mark.parametrize(
    ("code", "field"),
    [
        ("&+A9999AB345", "processing_facility"),
        ("&+O9999AB3456", "processing_facility.fin"),
        ("&+A9999ab3456", "processing_facility.facility_product_code"),
    ],
)
def test_malformed_processing_facility_code_names_the_field(code: str, field: str) -> None:
    with pytest.raises(Isbt128Invalid) as exc:
        parse_processing_facility_code(code)
    assert _field_of(exc) == field
