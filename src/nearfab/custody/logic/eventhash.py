"""The EPCIS event hash ID (CBV 2.0 §8.9): a pre-hash string in canonical property order,
hashed with SHA-256 into `ni:///sha-256;<hex>?ver=CBV2.0`.

Same event in any JSON-LD spelling (key order, time zone, CURIEs, EPC URNs or Digital Links)
gives the same ID, so a re-captured event is recognised as a duplicate.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from nearfab.custody.logic.dl import canonical_dl

CBV = "https://ref.gs1.org/cbv/"
GS1_VOC = "https://gs1.org/voc/"
EPCIS_NS = "https://ref.gs1.org/epcis/"

# key -> property order of its children (None: a plain value)
Order = list[tuple[str, Any]]
_QTY: Order = [("epcClass", None), ("quantity", None), ("uom", None)]
_REPORT_FIELDS = (
    "type",
    "exception",
    "deviceID",
    "deviceMetadata",
    "rawData",
    "dataProcessingMethod",
    "time",
    "microorganism",
    "chemicalSubstance",
    "value",
    "component",
    "stringValue",
    "booleanValue",
    "hexBinaryValue",
    "uriValue",
    "minValue",
    "maxValue",
    "meanValue",
    "sDev",
    "percRank",
    "percValue",
    "uom",
    "coordinateReferenceSystem",
)
PROP_ORDER: Order = [
    ("eventTime", None),
    ("eventTimeZoneOffset", None),
    ("certificationInfo", None),
    ("epcList", "epc"),
    ("parentID", None),
    ("inputEPCList", "epc"),
    ("childEPCs", "epc"),
    ("quantityList", ("quantityElement", _QTY)),
    ("childQuantityList", ("quantityElement", _QTY)),
    ("inputQuantityList", ("quantityElement", _QTY)),
    ("outputEPCList", "epc"),
    ("outputQuantityList", ("quantityElement", _QTY)),
    ("action", None),
    ("transformationID", None),
    ("bizStep", None),
    ("disposition", None),
    ("persistentDisposition", [("set", None), ("unset", None)]),
    ("readPoint", [("id", None)]),
    ("bizLocation", [("id", None)]),
    ("bizTransactionList", ("", [("type", None), ("bizTransaction", None)])),
    ("destinationList", ("", [("type", None), ("destination", None)])),
    ("sourceList", ("", [("type", None), ("source", None)])),
    (
        "sensorElementList",
        (
            "sensorElement",
            [
                (
                    "sensorMetadata",
                    [
                        ("time", None),
                        ("startTime", None),
                        ("endTime", None),
                        ("deviceID", None),
                        ("deviceMetadata", None),
                        ("rawData", None),
                        ("dataProcessingMethod", None),
                        ("bizRules", None),
                    ],
                ),
                (
                    "sensorReport",
                    [(k, None) for k in _REPORT_FIELDS],
                ),
            ],
        ),
    ),
]
# never hashed: identity and bookkeeping of the event, not its content
_IGNORED = {"type", "eventID", "recordTime", "@context", "errorDeclaration"}
# annotations, not content
_IGNORED_EXPANDED = {"{http://www.w3.org/2000/01/rdf-schema#}comment"}
# bare CBV words -> their Web URI, by the field holding them
_VOCAB_PREFIX = {
    "bizStep": CBV + "BizStep-",
    "disposition": CBV + "Disp-",
    "set": CBV + "Disp-",
    "unset": CBV + "Disp-",
    "reason": CBV + "ER-",
}
_TYPE_PREFIX = {
    "bizTransactionList": CBV + "BTT-",
    "sourceList": CBV + "SDT-",
    "destinationList": CBV + "SDT-",
    "sensorReport": GS1_VOC,
}
_URN_VOCAB = {
    "urn:epcglobal:cbv:bizstep:": CBV + "BizStep-",
    "urn:epcglobal:cbv:disp:": CBV + "Disp-",
    "urn:epcglobal:cbv:btt:": CBV + "BTT-",
    "urn:epcglobal:cbv:sdt:": CBV + "SDT-",
    "urn:epcglobal:cbv:er:": CBV + "ER-",
}
_DEFAULT_PREFIXES = {
    "gs1": GS1_VOC,
    "cbv": CBV,
    "epcis": EPCIS_NS,
    "cbvmda": "urn:epcglobal:cbv:mda:",
}
_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})"
)


def context_prefixes(context: Any) -> dict[str, str]:
    """CURIE prefixes declared inline in a JSON-LD @context (remote contexts add the defaults)."""
    prefixes = dict(_DEFAULT_PREFIXES)
    items = context if isinstance(context, list) else [context]
    for item in items:
        if isinstance(item, Mapping):
            for key, value in item.items():
                if isinstance(value, str) and not key.startswith("@"):
                    prefixes[str(key)] = value
    return prefixes


def normalise_time(text: str) -> str:
    """UTC, millisecond precision (4th decimal rounds half up), 'Z'."""
    m = _TIME.fullmatch(text.strip())
    if m is None:
        return text.strip()
    y, mo, d, h, mi, s, frac, tz = m.groups()
    base = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=UTC)
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        base -= sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    ms = int(Decimal("0." + (frac or "0")).quantize(Decimal("0.001"), ROUND_HALF_UP) * 1000)
    base += timedelta(milliseconds=ms)
    return base.strftime("%Y-%m-%dT%H:%M:%S.") + f"{base.microsecond // 1000:03d}Z"


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value == int(value) else repr(value)
    text = str(value).strip()
    try:
        numeric = float(text)
    except ValueError:
        return text
    if numeric != numeric or numeric in (float("inf"), float("-inf")):
        return text
    return str(int(numeric)) if numeric == int(numeric) else repr(numeric)


def _expand_curie(text: str, prefixes: Mapping[str, str]) -> str:
    if ":" in text and "://" not in text and not text.startswith("urn:"):
        prefix, local = text.split(":", 1)
        if prefix in prefixes:
            return prefixes[prefix] + local
    return text


def canon_value(value: Any, prefixes: Mapping[str, str], vocab: str | None = None) -> str:
    """A value as it appears in the pre-hash string."""
    if not isinstance(value, str):
        return _number(value)
    text = value.strip()
    for urn, web in _URN_VOCAB.items():
        if text.startswith(urn):
            return web + text[len(urn) :]
    if vocab is not None and text and ":" not in text:
        return vocab + text
    text = _expand_curie(text, prefixes)
    dl = canonical_dl(text)
    if dl is not None:
        return dl
    return _number(text)


def _is_time_key(key: str) -> bool:
    low = key.lower()
    return "time" in low and "offset" not in low


def _plain(key: str, value: Any, prefixes: Mapping[str, str], vocab: str | None) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str) and _is_time_key(key):
        return f"{key}={normalise_time(value)}"
    return f"{key}={canon_value(value, prefixes, vocab)}"


def _ext_key(key: str, prefixes: Mapping[str, str]) -> str:
    if ":" in key and "://" not in key:
        prefix, local = key.split(":", 1)
        if prefix in prefixes:
            ns = prefixes[prefix]
            return "{" + ns + "}" + local
    return key


def _generic(key: str, value: Any, prefixes: Mapping[str, str]) -> list[str]:
    """User extensions (and ILMD): `{ns}local=value` with nested parts, sorted per level."""
    name = _ext_key(key, prefixes)
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            out.extend(_generic(key, item, prefixes))
        return out
    if isinstance(value, Mapping):
        inner = sorted(
            s
            for k, v in value.items()
            if not str(k).startswith("@")
            for s in _generic(str(k), v, prefixes)
        )
        return [name + "".join(inner)]
    if value is None:
        return [name]
    if isinstance(value, str) and _is_time_key(key):
        return [f"{name}={normalise_time(value)}"]
    text = canon_value(value, prefixes)
    return [f"{name}={text}" if text != "" else name]


def _ordered(obj: Mapping[str, Any], order: Order, prefixes: Mapping[str, str], parent: str) -> str:
    """Fields of `obj` in `order`; unknown fields (extensions) appended sorted after them."""
    parts: list[str] = []
    for key, sub in order:
        if key not in obj:
            continue
        value = obj[key]
        if sub is None:
            vocab = _VOCAB_PREFIX.get(key)
            if key == "type":
                vocab = _TYPE_PREFIX.get(parent)
            if key == "exception" and parent == "sensorReport":
                vocab = GS1_VOC
            if isinstance(value, list):
                parts.extend(sorted(_plain(key, v, prefixes, vocab) for v in value))
            else:
                parts.append(_plain(key, value, prefixes, vocab))
        elif isinstance(sub, str):  # a list of plain values, e.g. epcList / epc
            items = sorted(_plain(sub, v, prefixes, None) for v in value or [])
            if any(items):
                parts.append(key + "".join(items))
        elif isinstance(sub, tuple):  # a list of structured elements
            child_name, child_order = sub
            items = []
            for element in value or []:
                if isinstance(element, Mapping):
                    text = _ordered(element, child_order, prefixes, key)
                    if text:
                        items.append(child_name + text)
            items.sort()
            if items:
                parts.append(key + "".join(items))
        else:  # a nested object with its own order (readPoint, persistentDisposition...)
            elements = value if isinstance(value, list) else [value]
            texts = sorted(
                key + _ordered(element, sub, prefixes, key)
                for element in elements
                if isinstance(element, Mapping)
            )
            parts.extend(t for t in texts if t != key)
    known = {k for k, _ in order}
    extras = sorted(
        s
        for k, v in obj.items()
        if k not in known and k not in _IGNORED and not k.startswith("@")
        for s in _generic(k, v, prefixes)
    )
    if parent == "sensorElement":  # nested reports and metadata sort among themselves
        pass
    return "".join(parts) + "".join(extras)


def _sensor_element(element: Mapping[str, Any], prefixes: Mapping[str, str]) -> str:
    meta_order = PROP_ORDER[-1][1][1][0][1]
    report_order = PROP_ORDER[-1][1][1][1][1]
    out = ""
    meta = element.get("sensorMetadata")
    if isinstance(meta, Mapping):
        out += "sensorMetadata" + _ordered(meta, meta_order, prefixes, "sensorMetadata")
    reports = element.get("sensorReport") or []
    texts = sorted(
        "sensorReport" + _ordered(r, report_order, prefixes, "sensorReport")
        for r in reports
        if isinstance(r, Mapping)
    )
    out += "".join(texts)
    extras = sorted(
        s
        for k, v in element.items()
        if k not in ("sensorMetadata", "sensorReport") and not k.startswith("@")
        for s in _generic(k, v, prefixes)
    )
    return out + "".join(extras)


def prehash(
    event: Mapping[str, Any],
    prefixes: Mapping[str, str] | None = None,
    ignore: frozenset[str] = frozenset(),
) -> str:
    """The canonical pre-hash string of one EPCIS event (JSON-LD form). `ignore`: expanded
    names (`{ns}local`) of user extensions left out (a partner's own bookkeeping fields)."""
    prefixes = prefixes or _DEFAULT_PREFIXES
    if "@context" in event:
        prefixes = {**prefixes, **context_prefixes(event["@context"])}
    skip = _IGNORED_EXPANDED | ignore
    event = {k: v for k, v in event.items() if _ext_key(k, prefixes) not in skip}
    body = {k: v for k, v in event.items() if k not in ("sensorElementList", "ilmd")}
    order = PROP_ORDER[:-1]
    text = "eventType=" + str(event.get("type", "")) + _ordered_core(body, order, prefixes)
    sensors = event.get("sensorElementList")
    if sensors:
        items = sorted(
            "sensorElement" + _sensor_element(e, prefixes)
            for e in sensors
            if isinstance(e, Mapping)
        )
        text = _insert_before_extras(
            text, body, order, prefixes, "sensorElementList" + "".join(items)
        )
    ilmd = event.get("ilmd")
    if isinstance(ilmd, Mapping) and ilmd:
        part = "ilmd" + "".join(
            sorted(
                s
                for k, v in ilmd.items()
                if not k.startswith("@")
                for s in _generic(k, v, prefixes)
            )
        )
        text = _insert_before_extras(text, body, order, prefixes, part)
    return text


def _ordered_core(body: Mapping[str, Any], order: Order, prefixes: Mapping[str, str]) -> str:
    return _ordered(body, order, prefixes, "event")


def _insert_before_extras(
    text: str, body: Mapping[str, Any], order: Order, prefixes: Mapping[str, str], part: str
) -> str:
    known = {k for k, _ in order}
    extras = "".join(
        sorted(
            s
            for k, v in body.items()
            if k not in known and k not in _IGNORED and not k.startswith("@")
            for s in _generic(k, v, prefixes)
        )
    )
    if extras and text.endswith(extras):
        return text[: len(text) - len(extras)] + part + extras
    return text + part


def event_hash(
    event: Mapping[str, Any],
    prefixes: Mapping[str, str] | None = None,
    ignore: frozenset[str] = frozenset(),
) -> str:
    """`ni:///sha-256;<hex>?ver=CBV2.0` of one event."""
    digest = hashlib.sha256(prehash(event, prefixes, ignore).encode("utf-8")).hexdigest()
    return f"ni:///sha-256;{digest}?ver=CBV2.0"


def document_events(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The events of an EPCIS document or query document, in order."""
    body = document.get("epcisBody") or {}
    if "eventList" in body:
        return list(body.get("eventList") or [])
    results = (body.get("queryResults") or {}).get("resultsBody") or {}
    return list(results.get("eventList") or [])
