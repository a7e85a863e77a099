"""nearfab's GS1 reading and writing against GS1's own reference vectors (../shared/data).

Sources (see ../shared/data/standards/MANIFEST.tsv):
- gs1-syntax-engine (gs1/gs1-syntax-engine@50657dbd04ce): vectors harvested from the C unit
  tests of GS1's reference engine. "^" is FNC1; `should_succeed` is the engine's verdict with
  its default options unless `non_default_options` says otherwise.
- gs1-syntax-dictionary (gs1/gs1-syntax-dictionary@ff2eb4bfc8f6): linter vectors for check
  digits (csum), dates (yymmd0) and the AI encodable character set 82.

Every vector is its own test. The engine's verdict is the reference and nearfab must match it,
with these deliberate classes of difference, each asserted (not skipped) unless said:
- nearfab runs the engine's *default* options. Vectors that pass only because an option loosens
  the rules (convenience alphas such as /gtin/, zero-suppressed GTINs in Digital Link URIs,
  unknown AIs) must be refused by nearfab.
- Symbols that carry no AI data (plain-text QR/DataMatrix/DotCode, EAN/UPC with a bare GTIN,
  a mixed-case URI scheme the engine does not extract) are valid scans for the engine but not
  GS1 element data; `scan_elements` refuses them and invents nothing.
- biip's AI table is older than the engine's in one place that matters here: it wants AI 8010
  (CPID) to have at least 5 characters, the dictionary allows 1. The one vector that reads
  back such a CPID is skipped with that reason (AI 8010 is not a unit-identifier AI).
- Association rules (`ai_association_rules.json`) are checked for repeats of any AI and for
  the pairings that involve AIs 01/10/17/21; other pairings (e.g. (02) needs (37), (8030) needs
  a serialised key) are skipped with that reason, and so are the vectors using the unknown AI
  (89), which the engine runs with unknown AIs permitted.
- Where biip alone is more lenient than the engine (mixed-case URI schemes, GTIN-8/12/13 in a
  Digital Link, repeated query AIs, qualifiers given as query attributes, unterminated
  variable-length values, check digits inside keys such as GRAI), nearfab adds the rule, so
  those vectors are asserted like the rest.
- `scandata_generate.json`: only the GS1 DataMatrix vectors are encoded and read back; plain
  (non-GS1) DataMatrix data and a superfluous trailing FNC1 are skipped with that reason.
Skipped entirely when ../shared/data is absent.
"""

from __future__ import annotations

import calendar
import io
import json
import os
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from biip import ParseConfig, ParseError
from biip.gs1_messages import GS1Message

from nearfab.common.errors import ValidationFailed
from nearfab.custody.gs1 import (
    GS,
    decode_yymmdd,
    dl_percent_encode,
    gtin_check_digit,
    join_elements,
    make_identifier,
    parse_scan,
    scan_elements,
    validate_gtin,
)
from nearfab.custody.labels import datamatrix_image, decode_datamatrix

pytestmark = pytest.mark.shared_data

ENGINE = Path("standards") / "gs1-syntax-engine"
DICTIONARY = Path("standards") / "gs1-syntax-dictionary"
ABSENT = pytest.param(None, id="shared-data-absent")
LOOSENING = (
    "permitConvenienceAlphas",
    "setPermitZeroSuppressedGTINinDLuris",
    "setPermitUnknownAIs",
)
# Where biip's AI table is stricter than the engine's dictionary, for AIs outside the unit AIs.
STRICTER_ELSEWHERE = {
    "(8010)0200(3133)333333(3300)000000(99)57(3133)333333(3300)000000(01)04065093955756(10)0"
    "(3133)333333(3300)000000(01)04065093955756": "biip requires AI 8010 (CPID) to have 5-30 "
    "characters; the current GS1 dictionary allows 1-30. Not a unit-identifier AI.",
}
UNIT_AIS = {"01", "10", "17", "21"}
# AIs that the syntax dictionary pairs (ex=/req=) with a unit AI, plus (99), which has no rules.
UNIT_PARTNERS = {"02", "03", "37", "235", "255", "8006", "8026", "99"}


def _shared_root() -> Path | None:
    """Same rule as tests/conftest.py (used at collection time, before fixtures exist)."""
    env = os.environ.get("NEARFAB_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return path if path.is_dir() else None


def _load(relative: Path) -> Any:
    root = _shared_root()
    if root is None:
        return None
    return json.loads((root / relative).read_text(encoding="utf-8"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "empty"


def _params(relative: Path, key: str) -> list[Any]:
    data = _load(relative)
    if data is None:
        return [ABSENT]
    out = []
    for vector in data["vectors"]:
        line = vector.get("source", "").rpartition("#")[2] or "?"
        verdict = "pass" if vector.get("should_succeed", True) else "fail"
        out.append(pytest.param(vector, id=f"{line}-{verdict}-{_slug(str(vector[key]))}"))
    return out


def _fnc1(elements: tuple[tuple[str, str], ...]) -> str:
    """The engine's notation: "^" for FNC1 in first position and for every separator."""
    return "^" + join_elements(elements, separator="^")


def _refused(payload: str, **kwargs: Any) -> str:
    with pytest.raises(ValidationFailed) as caught:
        scan_elements(payload, **kwargs)
    assert caught.value.field == "scan"
    return caught.value.message


def _loosened(vector: dict[str, Any]) -> bool:
    options = vector.get("non_default_options") or {}
    return any(k in options for k in LOOSENING) or any(
        str(v).replace(" ", "").endswith(",false") for v in options.values()
    )


# --- (a) GTIN check digits ----------------------------------------------------------------------


def _passing_fnc1_strings() -> list[str]:
    """AI data ("^..." notation) that the engine accepted or produced."""
    strings: list[str] = []
    for v in _load(ENGINE / "scandata_process.json")["vectors"]:
        if v["should_succeed"]:
            strings.append(v["expect_data_str"])
            strings.append(v.get("expect_dl_extracted_fnc1_data") or "")
    for v in _load(ENGINE / "scandata_generate.json")["vectors"]:
        if v["expect_scan_data"]:
            strings += v["data_str"].split("|")
    for name in ("dl_uri_to_ai.json", "bracketed_ai_to_fnc1.json"):
        strings += [
            v["expect_fnc1_data"] or ""
            for v in _load(ENGINE / name)["vectors"]
            if v["should_succeed"]
        ]
    strings += [
        v["fnc1_data"]
        for v in _load(ENGINE / "fnc1_ai_validate.json")["vectors"]
        if v["should_succeed"]
    ]
    return [s for s in strings if s.startswith("^")]


def _gtin_params() -> list[Any]:
    if _shared_root() is None:
        return [ABSENT]
    gtins: set[str] = set()
    config = ParseConfig(separator_chars=("^",))
    for data in _passing_fnc1_strings():
        try:
            message = GS1Message.parse(data.lstrip("^"), config=config)
        except ParseError:  # an AI biip does not know (vectors run with unknown AIs permitted)
            gtins |= set(re.findall(r"^\^01(\d{14})", data))
            continue
        gtins |= {e.value for e in message.element_strings if e.ai.ai == "01"}
    assert len(gtins) >= 10, "expected the engine's passing vectors to hold several GTINs"
    return [pytest.param(g, id=g) for g in sorted(gtins)]


@pytest.mark.parametrize("gtin", _gtin_params())
def test_gtin_of_every_passing_vector_is_valid(shared_data: Path, gtin: str) -> None:
    assert validate_gtin(gtin) == gtin
    assert gtin_check_digit(gtin[:13]) == gtin[13]
    # The same GTIN with any other check digit is refused.
    wrong = gtin[:13] + str((int(gtin[13]) + 1) % 10)
    with pytest.raises(ValidationFailed, match="check digit"):
        validate_gtin(wrong)


def _linter_params(linter: str) -> list[Any]:
    data = _load(DICTIONARY / "linter_vectors.json")
    if data is None:
        return [ABSENT]
    return [
        pytest.param(v, id=f"{i}-{'pass' if v['should_pass'] else 'fail'}-{_slug(v['input'])}")
        for i, v in enumerate(data["linters"][linter])
    ]


@pytest.mark.parametrize("vector", _linter_params("csum"))
def test_csum_linter_vectors(shared_data: Path, vector: dict[str, Any]) -> None:
    value = vector["input"]
    is_gtin_length = len(value) in (8, 12, 13, 14)
    if vector["should_pass"] and is_gtin_length:
        assert validate_gtin(value) == value.zfill(14)
        assert gtin_check_digit(value[:-1]) == value[-1]
    else:  # a failing check digit, or a length that is no GTIN (e.g. an 18-digit SSCC)
        with pytest.raises(ValidationFailed) as caught:
            validate_gtin(value)
        assert caught.value.field == "gtin"


@pytest.mark.parametrize("vector", _linter_params("yymmd0"))
def test_yymmd0_linter_vectors_for_expiry(shared_data: Path, vector: dict[str, Any]) -> None:
    value = vector["input"]
    payload = f"(01)09506000134352(17){value.replace('(', chr(92) + '(')}(10)B1(21)S1"
    if not vector["should_pass"]:
        with pytest.raises(ValueError):
            decode_yymmdd(value)
        with pytest.raises(ValidationFailed):
            parse_scan(payload)
        return
    today = date.today()
    yy, mm, dd = int(value[:2]), int(value[2:4]), int(value[4:])
    year = next(y for y in range(today.year - 49, today.year + 51) if y % 100 == yy)
    expected = date(year, mm, dd or calendar.monthrange(year, mm)[1])
    assert decode_yymmdd(value) == expected
    assert parse_scan(payload).expiry == expected


@pytest.mark.parametrize("vector", _linter_params("cset82"))
def test_cset82_linter_vectors_for_serial_and_batch(
    shared_data: Path, vector: dict[str, Any]
) -> None:
    value = vector["input"]
    if not value or len(value) > 20:
        pytest.skip("AI 10/21 values are 1 to 20 characters; length is tested elsewhere")
    if vector["should_pass"]:
        unit = make_identifier("09506000134352", value, value, date(2027, 1, 31))
        assert parse_scan(unit.datamatrix_data()) == unit
        assert parse_scan(unit.digital_link()) == unit
        assert parse_scan(unit.element_string()) == unit
    else:
        for field in ("serial", "batch"):
            args = {"serial": "S1", "batch": "B1", field: value}
            with pytest.raises(ValidationFailed) as caught:
                make_identifier("09506000134352", expiry=date(2027, 1, 31), **args)
            assert caught.value.field == field


# --- (b) scans, Digital Link URIs, bracketed and FNC1 data --------------------------------------


@pytest.mark.parametrize("vector", _params(ENGINE / "scandata_process.json", "scan_data"))
def test_scandata_process(shared_data: Path, vector: dict[str, Any]) -> None:
    scan = vector["scan_data"]
    expected_ai_data = vector.get("expect_dl_extracted_fnc1_data") or (
        vector["expect_data_str"] if vector["expect_data_str"].startswith("^") else ""
    )
    if vector["should_succeed"] and expected_ai_data:
        assert _fnc1(scan_elements(scan)) == expected_ai_data
        # None of the engine's scans carries all four unit AIs.
        with pytest.raises(ValidationFailed, match="lacks required AI"):
            parse_scan(scan)
    else:
        # Engine failure, or a valid symbol without AI data (plain text, a bare EAN/UPC
        # GTIN, a URI the engine does not extract): no AI data may come out of it.
        _refused(scan)
        with pytest.raises(ValidationFailed):
            parse_scan(scan)


@pytest.mark.parametrize("vector", _params(ENGINE / "dl_uri_to_ai.json", "dl_uri"))
def test_dl_uri_to_ai(shared_data: Path, vector: dict[str, Any]) -> None:
    uri = vector["dl_uri"]
    if vector["should_succeed"] and not _loosened(vector):
        assert _fnc1(scan_elements(uri)) == vector["expect_fnc1_data"]
    else:
        _refused(uri)


@pytest.mark.parametrize("vector", _params(ENGINE / "bracketed_ai_to_fnc1.json", "bracketed_ai"))
def test_bracketed_ai_to_fnc1(shared_data: Path, vector: dict[str, Any]) -> None:
    # The engine's test_parseAIdata checks syntax only: associations (e.g. (10) needs (01))
    # are not part of its verdict, so they are not checked here either.
    text = vector["bracketed_ai"]
    if vector["should_succeed"]:
        assert _fnc1(scan_elements(text, associations=False)) == vector["expect_fnc1_data"]
    else:
        _refused(text, associations=False)


@pytest.mark.parametrize("vector", _params(ENGINE / "fnc1_ai_validate.json", "fnc1_data"))
def test_fnc1_ai_validate(shared_data: Path, vector: dict[str, Any]) -> None:
    data = vector["fnc1_data"]
    # FNC1 in first position is what a "]d2" symbology identifier reports; without it the
    # symbol is not in GS1 mode ("]d1"). Later FNC1s reach us as GS. Associations are not part
    # of the engine's test_processAIdata verdict.
    scan = "]d2" + data[1:].replace("^", GS) if data.startswith("^") else "]d1" + data
    if vector["should_succeed"] and not _loosened(vector):
        elements = scan_elements(scan, associations=False)
        # Same AIs and values; the engine also tolerates superfluous FNC1s, which we drop.
        assert "".join(ai + value for ai, value in elements) == data.replace("^", "")
        assert _fnc1(elements).replace("^", "") == data.replace("^", "")
    else:
        _refused(scan, associations=False)


def _association_params() -> list[Any]:
    data = _load(ENGINE / "ai_association_rules.json")
    if data is None:
        return [pytest.param(None, [], id="shared-data-absent")]
    out = []
    for i, v in enumerate(data["vectors"]):
        ais = re.findall(r"\((\d+)\)", v["bracketed_ai"])
        verdict = "pass" if v["should_succeed"] else "fail"
        out.append(pytest.param(v, ais, id=f"{i}-{verdict}-{_slug(v['bracketed_ai'])}"))
    return out


@pytest.mark.parametrize(("vector", "ais"), _association_params())
def test_ai_association_rules(shared_data: Path, vector: dict[str, Any], ais: list[str]) -> None:
    if "89" in ais:
        pytest.skip("AI 89 is unknown; these vectors run the engine with unknown AIs permitted")
    rule = vector["validation"]
    if rule == "validateAIrepeats":
        pass  # enforced for every AI
    elif not (set(ais) & UNIT_AIS and set(ais) <= UNIT_AIS | UNIT_PARTNERS):
        pytest.skip("pairing rule of AIs outside 01/10/17/21: not enforced by nearfab")
    text = vector["bracketed_ai"]
    if vector["should_succeed"]:
        scan_elements(text)
    else:
        # Refused for the association itself, not for some other fault in the vector.
        assert re.search("twice|together|needs", _refused(text))
        scan_elements(text, associations=False)


@pytest.mark.parametrize("vector", _params(ENGINE / "ai_to_dl_uri.json", "bracketed_ai"))
def test_engine_generated_dl_uris_read_back(shared_data: Path, vector: dict[str, Any]) -> None:
    if not vector["should_succeed"]:
        pytest.skip("no URI generated: nothing to read back")
    uri = vector["expect_dl_uri"]
    if vector["bracketed_ai"] in STRICTER_ELSEWHERE:
        pytest.skip(STRICTER_ELSEWHERE[vector["bracketed_ai"]])
    if _loosened(vector):
        _refused(uri)  # unknown AI (89) as a data attribute
        return
    expected = set(scan_elements(vector["bracketed_ai"], associations=False))
    assert set(scan_elements(uri, associations=False)) <= expected
    # The engine drops a repeated AI and keeps every distinct one.
    assert {ai for ai, _ in scan_elements(uri, associations=False)} == {ai for ai, _ in expected}


def _generate_params() -> list[Any]:
    data = _load(ENGINE / "scandata_generate.json")
    if data is None:
        return [ABSENT]
    return [
        pytest.param(v, id=f"{v['source'].rpartition('#')[2]}-{_slug(v['data_str'])}")
        for v in data["vectors"]
        if v["symbology"] == "DM"
    ]


@pytest.mark.parametrize("vector", _generate_params())
def test_datamatrix_encoder_matches_engine_scan_data(
    shared_data: Path, vector: dict[str, Any]
) -> None:
    data = vector["data_str"]
    if not data.startswith("^"):
        pytest.skip("not GS1 data: nearfab encodes only GS1 DataMatrix")
    if data.endswith("^"):
        pytest.skip("a trailing FNC1 is superfluous; nearfab's encoder does not emit one")
    image = datamatrix_image(data[1:].replace("^", GS), module_px=3)
    out = io.BytesIO()
    image.save(out, format="PNG")
    scanned = decode_datamatrix(out.getvalue())
    assert scanned == vector["expect_scan_data"]
    assert _fnc1(scan_elements(scanned)) == data


@pytest.mark.parametrize("vector", _params(ENGINE / "uri_escape.json", "input"))
def test_uri_escape_path_component(shared_data: Path, vector: dict[str, Any]) -> None:
    # nearfab puts only AI 17 (digits) in the query, so only the path escaping is exercised.
    assert dl_percent_encode(vector["input"]) == vector["expect_path_component"]
