"""GS1 identification of dispensable units: GTINs, serials, element strings, Digital Link.

A unit is identified by GTIN (AI 01), expiry (AI 17), batch (AI 10) and serial (AI 21), the
four data that EU FMD-style verification and a dispense check rely on. `parse_scan` accepts
what a scanner or a person gives and is strict in the way GS1's reference syntax engine is:
`biip` interprets the data, and the rules where biip is more lenient (mixed-case URI schemes,
zero-suppressed GTINs in Digital Link paths, repeated AIs, unterminated variable-length
fields, qualifiers given as query attributes...) are enforced here.
"""

from __future__ import annotations

import calendar
import re
import secrets
from dataclasses import dataclass
from datetime import date, datetime
from urllib.parse import quote, unquote, unquote_plus, urlsplit

from biip import ParseConfig, ParseError
from biip import parse as biip_parse
from biip.gs1_application_identifiers import GS1ApplicationIdentifier
from biip.gs1_element_strings import GS1ElementString

from nearfab.common.errors import ValidationFailed

# GTIN rules live in common (master files need them too); re-exported here
from nearfab.common.gs1 import gtin_check_digit as gtin_check_digit
from nearfab.common.gs1 import mod10 as _mod10
from nearfab.common.gs1 import validate_gtin as validate_gtin

GS = "\x1d"
"""ASCII group separator: how scanners transmit FNC1 between GS1 element strings."""

SERIAL_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
"""`new_serial` draws from this: upper-case letters and digits without 0/O, 1/I/L."""

_CSET82 = re.compile(r"[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]*")
_CONFIG = ParseConfig(gs1_element_strings_verify_date=True, separator_chars=(GS,))
_REQUIRED = {"01": "GTIN", "17": "expiry", "10": "batch", "21": "serial"}
# Symbology identifiers (ISO/IEC 15424) whose data is a GS1 element string (FNC1 in first).
_GS1_MODE = {"]C1", "]e0", "]d2", "]Q3", "]J1"}
# Non-GS1 modes of 2D symbols that may carry a GS1 Digital Link URI as plain text.
_URI_MODE = {"]d1", "]Q1", "]J0"}
# GS1 Digital Link primary keys and their alternative ordered qualifier sequences
# (the "dlpkey" attribute of GS1's Barcode Syntax Dictionary).
_DL_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "00": ((),),
    "01": (("22", "10", "21"), ("235",)),
    "253": ((),),
    "255": ((),),
    "401": ((),),
    "402": ((),),
    "414": (("254",), ("7040",)),
    "415": (("8020",),),
    "417": (("7040",),),
    "8003": ((),),
    "8004": (("7040",),),
    "8006": (("22", "10", "21"),),
    "8010": (("8011",),),
    "8013": ((),),
    "8017": (("8019",),),
    "8018": (("8019",),),
}
# Invalid pairings ("ex=") and mandatory associations ("req=") of the syntax dictionary that
# involve the AIs a unit identifier uses.
_EXCLUSIVE = (
    ("01", "02"),
    ("01", "255"),
    ("01", "37"),
    ("01", "8006"),
    ("21", "235"),
)
_REQUIRES = {
    "10": ("01", "02", "03", "8006", "8026"),
    "17": ("01", "02", "03", "255", "8006", "8026"),
    "21": ("01", "03", "8006"),
}
# Keys with a GS1 check digit inside the value: AI -> (start, end) of the digits it closes.
_EMBEDDED_CSUM = {
    "00": (0, 18),
    "01": (0, 14),
    "02": (0, 14),
    "03": (0, 14),
    "253": (0, 13),
    "255": (0, 13),
    "402": (0, 17),
    "410": (0, 13),
    "411": (0, 13),
    "412": (0, 13),
    "413": (0, 13),
    "414": (0, 13),
    "415": (0, 13),
    "416": (0, 13),
    "417": (0, 13),
    "8003": (1, 14),
    "8006": (0, 14),
    "8017": (0, 18),
    "8018": (0, 18),
}
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.?)(?::[0-9]{1,5})?"
)

Elements = tuple[tuple[str, str], ...]
"""Ordered (AI, value) pairs."""


def _fail(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, field=field)


# --- GTIN -------------------------------------------------------------------------------


# --- serials, batches, dates ----------------------------------------------------------------


def new_serial(length: int = 12) -> str:
    """A cryptographically random serial for AI 21 from `SERIAL_ALPHABET` (8-20 characters)."""
    if isinstance(length, bool) or not isinstance(length, int) or not 8 <= length <= 20:
        raise _fail("length", f"serial length must be an integer from 8 to 20, not {length!r}.")
    return "".join(secrets.choice(SERIAL_ALPHABET) for _ in range(length))


def _check_x20(field: str, ai: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(field, f"{field} must be text, not {type(value).__name__}.")
    if not value:
        raise _fail(field, f"{field} (AI {ai}) must not be empty.")
    if len(value) > 20:
        raise _fail(field, f"{field} (AI {ai}) has {len(value)} characters; at most 20 allowed.")
    if not _CSET82.fullmatch(value):
        bad = next(c for c in value if not _CSET82.fullmatch(c))
        raise _fail(
            field,
            f"{field} (AI {ai}) contains {bad!r}, which is outside the GS1 AI encodable "
            "character set 82 (letters, digits and !\"%&'()*+,-./:;<=>?_ only).",
        )
    return value


def _century_year(yy: int, today: date) -> int:
    """GS1 General Specifications 7.12: a YY within -49..+50 years of the current year."""
    current = today.year
    century = current - current % 100
    diff = yy - current % 100
    if 51 <= diff <= 99:
        return century - 100 + yy
    if -99 <= diff <= -50:
        return century + 100 + yy
    return century + yy


def _yymmdd(d: date) -> str:
    return f"{d.year % 100:02d}{d.month:02d}{d.day:02d}"


def decode_yymmdd(value: str, *, today: date | None = None) -> date:
    """A GS1 YYMMDD date; DD=00 means the last day of the month. Raises ValueError."""
    if len(value) != 6 or not value.isascii() or not value.isdigit():
        raise ValueError(f"{value!r} is not six digits YYMMDD")
    yy, mm, dd = int(value[:2]), int(value[2:4]), int(value[4:])
    year = _century_year(yy, today or date.today())
    if not 1 <= mm <= 12:
        raise ValueError(f"month {mm:02d} does not exist")
    last = calendar.monthrange(year, mm)[1]
    if dd > last:
        raise ValueError(f"{year}-{mm:02d} has no day {dd:02d}")
    return date(year, mm, dd or last)


# --- the identifier ------------------------------------------------------------------------


def _escape_bracketed(value: str) -> str:
    return value.replace("(", "\\(")


def _dl_escape(value: str) -> str:
    return quote(value, safe="")


def dl_percent_encode(value: str) -> str:
    """Percent-encode a Digital Link path value: all but A-Z a-z 0-9 - . _ ~ as %XX."""
    return _dl_escape(value)


def join_elements(elements: Elements, separator: str = GS) -> str:
    """Unbracketed element data, `separator` (FNC1) after variable-length values but the last."""
    parts: list[str] = []
    for index, (ai, value) in enumerate(elements):
        parts.append(ai + value)
        if index < len(elements) - 1 and _ai(ai).separator_required:
            parts.append(separator)
    return "".join(parts)


@dataclass(frozen=True)
class UnitIdentifier:
    """GTIN + serial + batch + expiry of one unit, valid by construction."""

    gtin: str
    serial: str
    batch: str
    expiry: date

    def __post_init__(self) -> None:
        if not isinstance(self.gtin, str) or len(self.gtin) != 14:
            raise _fail("gtin", f"GTIN must be given as 14 digits, got {self.gtin!r}.")
        validate_gtin(self.gtin)
        _check_x20("serial", "21", self.serial)
        _check_x20("batch", "10", self.batch)
        if isinstance(self.expiry, datetime) or not isinstance(self.expiry, date):
            raise _fail("expiry", f"expiry must be a date, not {type(self.expiry).__name__}.")
        today = date.today()
        if _century_year(self.expiry.year % 100, today) != self.expiry.year:
            raise _fail(
                "expiry",
                f"expiry {self.expiry.isoformat()} cannot be encoded as GS1 YYMMDD: a reader "
                "today would take its year for another century.",
            )

    @property
    def elements(self) -> Elements:
        """(AI, value) pairs in label order 01, 17, 10, 21."""
        return (
            ("01", self.gtin),
            ("17", _yymmdd(self.expiry)),
            ("10", self.batch),
            ("21", self.serial),
        )

    def element_string(self) -> str:
        """Bracketed GS1 element string, e.g. "(01)09506000134352(17)261231(10)B123(21)ABC".

        A "(" inside the batch or serial is written "\\(" (GS1 bracketed syntax) so the
        string reads back unambiguously.
        """
        return "".join(f"({ai}){_escape_bracketed(value)}" for ai, value in self.elements)

    def datamatrix_data(self) -> str:
        """Unbracketed data with GS (FNC1) after variable-length fields, for a GS1 DataMatrix."""
        return join_elements(self.elements)

    def digital_link(self, base: str = "https://id.gs1.org") -> str:
        """GS1 Digital Link URI: {base}/01/{gtin}/10/{batch}/21/{serial}?17=YYMMDD."""
        stem = _check_base(base)
        return (
            f"{stem}/01/{self.gtin}/10/{_dl_escape(self.batch)}/21/{_dl_escape(self.serial)}"
            f"?17={_yymmdd(self.expiry)}"
        )


def _check_base(base: str) -> str:
    if not isinstance(base, str) or not base.startswith(("https://", "http://")):
        raise _fail("base", f"Digital Link base must be an http(s) URL, got {base!r}.")
    if not _URI_CHARS.fullmatch(base) or "?" in base or "#" in base:
        raise _fail("base", f"Digital Link base {base!r} must be a plain URL without ? or #.")
    stem = base.rstrip("/")
    host = urlsplit(stem).netloc
    if not host or not _HOST.fullmatch(host):
        raise _fail("base", f"Digital Link base {base!r} has no valid host name.")
    return stem


def make_identifier(gtin: str, serial: str, batch: str, expiry: date) -> UnitIdentifier:
    """Validate each field (gtin/serial/batch/expiry) and build the identifier."""
    return UnitIdentifier(gtin=validate_gtin(gtin), serial=serial, batch=batch, expiry=expiry)


# --- reading scans ----------------------------------------------------------------------


def _ai(code: str) -> GS1ApplicationIdentifier:
    """The biip AI definition for exactly `code`; ParseError when GS1 defines no such AI."""
    ai = GS1ApplicationIdentifier.extract(code)
    if ai.ai != code:
        raise ParseError(f"({code}) is not a GS1 Application Identifier")
    return ai


def _explain(ai: str, value: str) -> str | None:
    """A plain-language reason why `value` is wrong for one of the unit AIs, if it is."""
    if ai == "01":
        if len(value) != 14 or not value.isdigit():
            return f"AI (01) GTIN must be 14 digits, got {value!r}."
        try:
            validate_gtin(value)
        except ValidationFailed as exc:
            return f"AI (01): {exc.message}"
    elif ai == "17":
        try:
            decode_yymmdd(value)
        except ValueError as exc:
            return f"AI (17) expiry {value!r} is not a valid YYMMDD date: {exc}."
    elif ai in ("10", "21"):
        try:
            _check_x20(_REQUIRED[ai], ai, value)
        except ValidationFailed as exc:
            return exc.message
    return None


def _element(ai: str, value: str) -> GS1ElementString:
    """One element interpreted by biip (full match), with check digits enforced."""
    reason = _explain(ai, value)
    if reason:
        raise _fail("scan", reason)
    try:
        _ai(ai)
        element = GS1ElementString.parse(ai + value, config=_CONFIG)
    except ParseError as exc:
        raise _fail("scan", f"AI ({ai}) value {value!r} is not valid: {exc}") from exc
    _check_embedded(element)
    return element


def _check_embedded(element: GS1ElementString) -> None:
    """Check digits inside keys (GTIN, SSCC, GLN, GDTI, GRAI, ...), which biip partly skips."""
    error = element.gtin_error or element.sscc_error or element.gln_error
    span = _EMBEDDED_CSUM.get(element.ai.ai)
    if not error and span:
        digits = element.value[span[0] : span[1]]
        complete = len(digits) == span[1] - span[0] and digits.isdigit()
        if complete and _mod10(digits[:-1]) != digits[-1]:
            error = f"check digit {digits[-1]} of {digits} should be {_mod10(digits[:-1])}"
    if error:
        raise _fail("scan", f"AI ({element.ai.ai}) value {element.value!r} is not valid: {error}")


def _bracketed(text: str) -> Elements:
    """GS1 bracketed syntax "(AI)value...", where "\\(" is a literal parenthesis."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        if text[i] != "(":
            raise _fail("scan", "bracketed element string must start with an (AI).")
        close = text.find(")", i)
        ai = text[i + 1 : close] if close > 0 else ""
        if close < 0 or not ai.isdigit() or not ai.isascii() or not 2 <= len(ai) <= 4:
            raise _fail("scan", f"malformed AI near {text[i : i + 6]!r}: expected (NN) to (NNNN).")
        i = close + 1
        chars: list[str] = []
        while i < len(text) and text[i] != "(":
            if text.startswith("\\(", i):
                chars.append("(")
                i += 2
            else:
                chars.append(text[i])
                i += 1
        if not chars:
            raise _fail("scan", f"AI ({ai}) has no value.")
        out.append((ai, "".join(chars)))
    for ai, value in out:
        _element(ai, value)
    return tuple(out)


def _element_data(data: str) -> Elements:
    """Unbracketed GS1 element data with GS separators, interpreted by biip."""
    data = data.lstrip(GS)
    if not data:
        raise _fail("scan", "the GS1 symbol carries no data.")
    result = biip_parse("]d2" + data, config=_CONFIG)
    message = result.gs1_message
    if message is None:
        why = _diagnose(data) or result.gs1_message_error or "unreadable"
        raise _fail("scan", f"not valid GS1 element data: {why}")
    # biip stops a variable-length value at 20/30/... characters even when no GS follows;
    # GS1 requires a GS (FNC1) after every variable-length value that is not last.
    position = 0
    out: list[tuple[str, str]] = []
    for element in message.element_strings:
        position += len(element)
        problem = _explain(element.ai.ai, element.value)
        if problem:
            raise _fail("scan", problem)
        _check_embedded(element)
        following = data[position : position + 1]
        if element.ai.separator_required and following not in ("", GS):
            raise _fail(
                "scan",
                f"AI ({element.ai.ai}) value is too long or not terminated by a GS (FNC1).",
            )
        while data[position : position + 1] == GS:
            position += 1
        out.append((element.ai.ai, element.value))
    return tuple(out)


def _diagnose(data: str) -> str | None:
    """A clearer reason for the first broken unit AI in element data, when one is recognisable."""
    rest = data
    while rest:
        try:
            ai = GS1ApplicationIdentifier.extract(rest)
        except ParseError:
            return f"no GS1 Application Identifier at {rest[:8]!r}."
        if ai.ai not in _REQUIRED:
            return None
        width = {"01": 14, "17": 6}.get(ai.ai)
        body = rest[len(ai.ai) :]
        value = body[:width] if width else body.split(GS, 1)[0]
        reason = _explain(ai.ai, value)
        if reason:
            return reason
        rest = body[len(value) :].lstrip(GS)
    return None


def _digital_link(uri: str) -> Elements:
    """A GS1 Digital Link URI, checked to the GS1 URI syntax and interpreted by biip."""
    if not uri.startswith(("http://", "https://", "HTTP://", "HTTPS://")):
        if uri.lower().startswith(("http://", "https://")):
            raise _fail("scan", "Digital Link URI scheme must be all lower or all upper case.")
        raise _fail("scan", "Digital Link URI must start with http:// or https://.")
    if not _URI_CHARS.fullmatch(uri):
        bad = next(c for c in uri if not _URI_CHARS.fullmatch(c))
        raise _fail("scan", f"Digital Link URI contains {bad!r}, which a URI may not contain.")
    parts = urlsplit(uri)
    if not parts.netloc or not _HOST.fullmatch(parts.netloc):
        raise _fail("scan", "Digital Link URI has no valid host name.")
    segments = parts.path.split("/")[1:]
    if not segments or segments[-1] == "":
        raise _fail("scan", "Digital Link URI path must end with a GS1 key value, not '/'.")
    # The path info starts at the rightmost primary key followed only by (AI, value) pairs.
    start = None
    for i in range(len(segments) - 2, -1, -2):
        if segments[i] in _DL_KEYS:
            start = i
            break
        if not segments[i].isdigit():
            break
    if start is None:
        raise _fail("scan", "Digital Link URI path holds no GS1 primary key such as /01/{GTIN}.")
    path = segments[start:]
    key, key_value = path[0], unquote(path[1])
    if key == "01" and len(key_value) != 14:
        raise _fail("scan", "Digital Link GTIN (01) must be written with all 14 digits.")
    qualifiers = path[2::2]
    if not any(_in_order(qualifiers, seq) for seq in _DL_KEYS[key]):
        allowed = " or ".join(",".join(seq) for seq in _DL_KEYS[key] if seq) or "none"
        raise _fail(
            "scan",
            f"Digital Link path qualifiers {qualifiers} are not valid for key ({key}); "
            f"allowed in order: {allowed}.",
        )
    in_path = {key, *qualifiers}
    key_qualifiers = {q for seq in _DL_KEYS[key] for q in seq}
    if set(qualifiers) & {"235"}:
        key_qualifiers = {"235"}
    seen: set[str] = set()
    query_ais: list[str] = []
    for item in parts.query.split("&"):
        name, has_value, value = item.partition("=")
        if not name.isdigit():
            continue  # non-AI parameters are allowed and ignored
        try:
            _ai(name)
        except ParseError as exc:
            raise _fail("scan", f"Digital Link query parameter {name} is not a GS1 AI.") from exc
        if not has_value or not value:
            raise _fail("scan", f"Digital Link query AI ({name}) has an empty value.")
        if name in seen or name in in_path:
            raise _fail("scan", f"Digital Link URI gives AI ({name}) more than once.")
        if name in key_qualifiers:
            raise _fail("scan", f"AI ({name}) qualifies key ({key}) and belongs in the URI path.")
        if name == "01" and len(unquote_plus(value)) != 14:
            raise _fail("scan", "Digital Link GTIN (01) must be written with all 14 digits.")
        reason = _explain(name, unquote_plus(value))
        if reason:
            raise _fail("scan", reason)
        seen.add(name)
        query_ais.append(name)
    for ai, raw in zip(path[::2], path[1::2], strict=True):
        reason = _explain(ai, unquote(raw))
        if reason:
            raise _fail("scan", reason)
    canonical = f"https://{parts.netloc}/{'/'.join(path)}" + (
        f"?{parts.query}" if parts.query else ""
    )
    result = biip_parse(canonical, config=_CONFIG)
    link = result.gs1_digital_link_uri
    if link is None:
        raise _fail(
            "scan", f"not a valid GS1 Digital Link URI: {result.gs1_digital_link_uri_error}"
        )
    out: list[tuple[str, str]] = []
    for element in link.element_strings:
        reason = _explain(element.ai.ai, element.value)
        if reason:
            raise _fail("scan", reason)
        _check_embedded(element)
        out.append((element.ai.ai, element.value))
    # biip lists path elements then query elements in order of first appearance.
    return tuple(out)


def _in_order(qualifiers: list[str], sequence: tuple[str, ...]) -> bool:
    position = 0
    for q in qualifiers:
        try:
            position = sequence.index(q, position) + 1
        except ValueError:
            return False
    return True


def _check_associations(elements: Elements) -> None:
    values: dict[str, str] = {}
    for ai, value in elements:
        if values.setdefault(ai, value) != value:
            raise _fail("scan", f"AI ({ai}) appears twice with different values.")
    for a, b in _EXCLUSIVE:
        if a in values and b in values:
            raise _fail("scan", f"AI ({a}) and AI ({b}) must not appear together.")
    for ai, needs in _REQUIRES.items():
        if ai in values and not any(n in values for n in needs):
            raise _fail("scan", f"AI ({ai}) needs a GTIN-type key such as AI (01) with it.")


def scan_elements(payload: str, *, associations: bool = True) -> Elements:
    """Interpret a scan (bracketed, raw with GS, "]d2"/"]Q3"/"]C1"..., Digital Link) as AIs.

    With `associations`, also refuse repeated AIs with different values and the invalid or
    incomplete pairings that involve AIs 01, 10, 17 and 21.
    """
    if not isinstance(payload, str):
        raise _fail("scan", "scan must be text.")
    text = payload.strip()  # also drops GS (FNC1) and CR/LF a scanner puts at either end
    if not text:
        raise _fail("scan", "scan is empty.")
    if text.startswith("]"):
        symbology, data = text[:3], text[3:]
        if symbology in _GS1_MODE:
            elements = _element_data(data)
        elif symbology in _URI_MODE and "://" in data:
            elements = _digital_link(data)
        else:
            raise _fail(
                "scan",
                f"symbology identifier {symbology!r} does not mark GS1 data "
                "(expected ]d2 GS1 DataMatrix, ]Q3 GS1 QR, ]C1 GS1-128 or a Digital Link).",
            )
    elif text.startswith("("):
        # People type spaces between element strings; a space inside a value stays and fails.
        elements = _bracketed(re.sub(r"\s+(?=\()|(?<=\))\s+", "", text))
    elif text[:2].isascii() and text[:2].isdigit():
        elements = _element_data(text)
    elif "://" in text:
        elements = _digital_link(text)
    else:
        raise _fail(
            "scan",
            "scan is not GS1 data: expected a GS1 DataMatrix scan, a bracketed element "
            "string such as (01)…(17)…(10)…(21)…, or a GS1 Digital Link URI.",
        )
    if associations:
        _check_associations(elements)
    return elements


# the fixed-length unit AIs and their widths (GS1 General Specifications, figure 3.2-1)
_FIXED_WIDTH = {"01": 14, "17": 6}


def _unit_data(payload: str) -> UnitIdentifier | None:
    """The unit identifier of a scan that is exactly the four unit AIs as a label prints them:
    GS1 element data (after a GS1 symbology identifier, or bare), AIs (01), (17), (10) and (21)
    each once in any order, a GS after a variable-length value that is not last and nowhere
    else; every value checked as the full reading checks it (`_explain`, the identifier's own
    checks). None for anything else, which the full reading (`scan_elements`, through biip)
    then reads or refuses with its reason. Where this answers, the full reading gives the same
    identifier (tests/custody/test_gs1.py compares the two); it only spares the scan of a
    label the full reading of every AI (a tenth of a millisecond and more at every scan)."""
    if not isinstance(payload, str):
        return None
    text = payload.strip()
    if text[:3] in _GS1_MODE:
        data = text[3:]
    elif text[:2].isascii() and text[:2].isdigit():
        data = text
    else:
        return None
    data = data.lstrip(GS)
    values: dict[str, str] = {}
    at, end = 0, len(data)
    while at < end:
        ai = data[at : at + 2]
        if ai in values:
            return None
        width = _FIXED_WIDTH.get(ai)
        if width is not None:
            value = data[at + 2 : at + 2 + width]
            at += 2 + width
        elif ai in ("10", "21"):
            stop = data.find(GS, at + 2)
            if stop < 0:
                stop = end
            elif stop == end - 1:
                return None  # a GS with nothing after it
            value = data[at + 2 : stop]
            at = stop + 1
        else:
            return None
        if not value.isascii() or _explain(ai, value) is not None:
            return None
        values[ai] = value
    if len(values) != len(_REQUIRED):
        return None
    try:
        return UnitIdentifier(
            gtin=values["01"],
            serial=values["21"],
            batch=values["10"],
            expiry=decode_yymmdd(values["17"]),
        )
    except (ValidationFailed, ValueError):
        return None


def parse_scan(payload: str) -> UnitIdentifier:
    """The unit identifier in a scan; other valid AIs in it are ignored."""
    plain = _unit_data(payload)
    if plain is not None:
        return plain
    return _parse_elements(payload)


def _parse_elements(payload: str) -> UnitIdentifier:
    """`parse_scan` by the full reading of every AI of the scan (biip)."""
    elements = dict(scan_elements(payload))
    missing = [f"({ai}) {name}" for ai, name in _REQUIRED.items() if ai not in elements]
    if missing:
        raise _fail("scan", f"scan lacks required AI {', '.join(missing)}.")
    try:
        expiry = decode_yymmdd(elements["17"])
    except ValueError as exc:  # pragma: no cover - already checked by _explain
        raise _fail("scan", f"AI (17) expiry is not a valid date: {exc}.") from exc
    try:
        return UnitIdentifier(
            gtin=elements["01"], serial=elements["21"], batch=elements["10"], expiry=expiry
        )
    except ValidationFailed as exc:
        raise _fail("scan", exc.message) from exc
