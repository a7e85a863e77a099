"""EPC URIs and GS1 Digital Links -> the constrained canonical Digital Link (https://id.gs1.org).

Used by the EPCIS event-hash algorithm (CBV 2.0 §8.9): every identifier is hashed in one form,
whatever syntax the event was written in. `canonical_dl` answers None for text that is not a
convertible identifier. Check digits already present are kept as given (they are data).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit

DL_HOST = "https://id.gs1.org"

# Digital Link short names (DL 1.2 §4.4) -> AI
_ALIASES = {
    "gtin": "01",
    "sscc": "00",
    "gln": "414",
    "party": "417",
    "giai": "8004",
    "grai": "8003",
    "gsrn": "8018",
    "gsrnp": "8017",
    "gdti": "253",
    "gcn": "255",
    "ginc": "401",
    "gsin": "402",
    "itip": "8006",
    "cpid": "8010",
    "cpv": "22",
    "lot": "10",
    "ser": "21",
    "glnx": "254",
    "cpsn": "8011",
    "tpx": "235",
}
# primary key -> (allowed qualifiers in order of granularity, finest first)
_PRIMARY: dict[str, tuple[str, ...]] = {
    "00": (),
    "01": ("21", "10", "235"),
    "253": (),
    "255": (),
    "401": (),
    "402": (),
    "414": ("254",),
    "417": (),
    "8003": (),
    "8004": (),
    "8006": ("21", "10"),
    "8010": ("8011",),
    "8017": (),
    "8018": (),
}
_QUALIFIERS = {"21", "10", "22", "235", "254", "8011"}
# which qualifiers may follow which primary key (22 is recognised, then dropped)
_QUALIFIER_OF: dict[str, set[str]] = {
    "01": {"22", "10", "21", "235"},
    "8006": {"22", "10", "21"},
    "414": {"254"},
    "8010": {"8011"},
}
_FIXED_LENGTH = {
    "00": 18,
    "01": 14,
    "402": 17,
    "414": 13,
    "417": 13,
    "8006": 18,
    "8017": 18,
    "8018": 18,
}


def gs1_check_digit(digits: str) -> str:
    """The GS1 mod-10 check digit of a numeric string (without its check digit)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        total += int(ch) * (3 if i % 2 == 0 else 1)
    return str((10 - total % 10) % 10)


def _q(value: str) -> str:
    return quote(value, safe="'")


def _enc(value: str) -> str:
    return quote(unquote(value), safe="'")


def _gtin(cp: str, item_ref: str) -> str:
    body = item_ref[:1] + cp + item_ref[1:]
    return body + gs1_check_digit(body)


def _urn_to_dl(text: str) -> str | None:
    m = re.fullmatch(r"urn:epc:(id|class|idpat):([a-z0-9]+):(.*)", text)
    if m is None:
        return None
    kind, scheme, rest = m.groups()
    parts = rest.split(".")
    try:
        if kind == "class":
            if scheme == "lgtin" and len(parts) >= 3:
                return f"{DL_HOST}/01/{_gtin(parts[0], parts[1])}/10/{_enc('.'.join(parts[2:]))}"
            return None
        if kind == "idpat":
            cp = parts[0]
            if scheme in ("sgtin", "upui"):
                return f"{DL_HOST}/01/{_gtin(cp, parts[1])}"
            if scheme in ("grai", "gdti", "sgcn"):
                ai = {"grai": "8003", "gdti": "253", "sgcn": "255"}[scheme]
                body = cp + parts[1]
                lead = "0" if scheme == "grai" else ""
                return f"{DL_HOST}/{ai}/{lead}{body}{gs1_check_digit(body)}"
            if scheme == "cpi":
                return f"{DL_HOST}/8010/{cp}{_enc(parts[1])}"
            if scheme == "itip":
                return f"{DL_HOST}/8006/{_gtin(cp, parts[1])}{parts[2]}{parts[3]}"
            return None
        cp = parts[0]
        if scheme == "sgtin":
            return f"{DL_HOST}/01/{_gtin(cp, parts[1])}/21/{_enc('.'.join(parts[2:]))}"
        if scheme == "sscc":
            body = parts[1][:1] + cp + parts[1][1:]
            return f"{DL_HOST}/00/{body}{gs1_check_digit(body)}"
        if scheme == "sgln":
            body = cp + parts[1]
            gln = body + gs1_check_digit(body)
            ext = ".".join(parts[2:])
            return f"{DL_HOST}/414/{gln}" + (f"/254/{_enc(ext)}" if ext and ext != "0" else "")
        if scheme == "grai":
            body = cp + parts[1]
            return f"{DL_HOST}/8003/0{body}{gs1_check_digit(body)}{_enc('.'.join(parts[2:]))}"
        if scheme == "giai":
            return f"{DL_HOST}/8004/{cp}{_enc('.'.join(parts[1:]))}"
        if scheme in ("gsrn", "gsrnp"):
            body = cp + parts[1]
            ai = "8018" if scheme == "gsrn" else "8017"
            return f"{DL_HOST}/{ai}/{body}{gs1_check_digit(body)}"
        if scheme in ("gdti", "sgcn"):
            body = cp + parts[1]
            ai = "253" if scheme == "gdti" else "255"
            return f"{DL_HOST}/{ai}/{body}{gs1_check_digit(body)}{_enc('.'.join(parts[2:]))}"
        if scheme == "cpi":
            return f"{DL_HOST}/8010/{cp}{_enc(parts[1])}/8011/{_enc('.'.join(parts[2:]))}"
        if scheme == "ginc":
            return f"{DL_HOST}/401/{cp}{_enc('.'.join(parts[1:]))}"
        if scheme == "gsin":
            body = cp + parts[1]
            return f"{DL_HOST}/402/{body}{gs1_check_digit(body)}"
        if scheme == "itip":
            gtin = _gtin(cp, parts[1])
            return f"{DL_HOST}/8006/{gtin}{parts[2]}{parts[3]}/21/{_enc('.'.join(parts[4:]))}"
        if scheme == "upui":
            return f"{DL_HOST}/01/{_gtin(cp, parts[1])}/235/{_enc('.'.join(parts[2:]))}"
        if scheme == "pgln":
            body = cp + parts[1]
            return f"{DL_HOST}/417/{body}{gs1_check_digit(body)}"
    except (IndexError, ValueError):
        return None
    return None


def _dl_to_canonical(text: str) -> str | None:
    try:
        url = urlsplit(text)
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or not url.netloc:
        return None
    segments = [s for s in url.path.split("/") if s != ""]
    start = None
    for i, seg in enumerate(segments):
        ai = _ALIASES.get(seg, seg)
        if ai in _PRIMARY and i + 1 < len(segments):
            start = i
            break
    if start is None:
        return None
    rest = segments[start:]
    if len(rest) % 2:
        return None
    primary = _ALIASES.get(rest[0], rest[0])
    value = unquote(rest[1])
    if primary == "01" and value.isdigit() and len(value) in (8, 12, 13):
        value = value.zfill(14)
    need = _FIXED_LENGTH.get(primary)
    if need is not None and (len(value) != need or not value.isdigit()):
        return None
    quals: dict[str, str] = {}
    for k in range(2, len(rest), 2):
        ai = _ALIASES.get(rest[k], rest[k])
        if ai not in _QUALIFIERS or ai not in _QUALIFIER_OF.get(primary, set()):
            return None
        quals[ai] = unquote(rest[k + 1])
    out = f"{DL_HOST}/{primary}/{_q(value)}"
    for q in _PRIMARY[primary]:
        if q in quals:
            out += f"/{q}/{_q(quals[q])}"
            break
    return out


def canonical_dl(text: str) -> str | None:
    """The constrained canonical GS1 Digital Link of an EPC URI or a Digital Link, else None."""
    if text.startswith("urn:epc:"):
        return _urn_to_dl(text)
    if text.startswith(("http://", "https://")):
        return _dl_to_canonical(text)
    return None
