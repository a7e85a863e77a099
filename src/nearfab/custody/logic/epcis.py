"""EPCIS 2.0 JSON-LD events nearfab emits, and GS1 location identifiers of sites. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from nearfab.custody.logic.dl import DL_HOST, gs1_check_digit
from nearfab.custody.logic.eventhash import event_hash

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
# declared inline too, with the standard context's own value: the reference event-hash generator
# (RalphTro/epcis-event-hash-generator) expands only prefixes a document declares inline, so a
# partner running it gets nearfab's event IDs for events with `cbvmda:` ILMD (issue 14)
CONTEXT_PREFIXES = {"cbvmda": "urn:epcglobal:cbv:mda:"}
# nearfab's own URIs (material lots, batches) live under this URN namespace
NEARFAB_URN = "urn:nearfab:"


def make_gln(company_prefix: str, location_ref: int) -> str:
    """A 13-digit GLN: company prefix + location reference + check digit."""
    width = 12 - len(company_prefix)
    if not company_prefix.isdigit() or not 6 <= len(company_prefix) <= 11:
        raise ValueError(f"company prefix {company_prefix!r}: 6 to 11 digits")
    if not 0 <= location_ref < 10**width:
        raise ValueError(f"location reference {location_ref} does not fit {width} digits")
    body = company_prefix + str(location_ref).zfill(width)
    return body + gs1_check_digit(body)


def sgln_uri(gln: str, company_prefix_length: int, extension: str = "0") -> str:
    """`urn:epc:id:sgln:<company prefix>.<location reference>.<extension>`."""
    cp, loc = gln[:company_prefix_length], gln[company_prefix_length:12]
    return f"urn:epc:id:sgln:{cp}.{loc}.{extension}"


def sgtin_dl(gtin: str, serial: str) -> str:
    """The pack's EPC as a GS1 Digital Link URI (EPCIS 2.0 accepts it as an EPC)."""
    return f"{DL_HOST}/01/{gtin}/21/{quote(serial, safe='')}"


def make_sscc(company_prefix: str, serial_ref: int, extension: int = 0) -> str:
    """An 18-digit SSCC: extension digit + company prefix + serial reference + check digit."""
    if not company_prefix.isdigit() or not 6 <= len(company_prefix) <= 11:
        raise ValueError(f"company prefix {company_prefix!r}: 6 to 11 digits")
    if not 0 <= extension <= 9:
        raise ValueError(f"extension digit {extension}: 0 to 9")
    width = 16 - len(company_prefix)
    if not 0 <= serial_ref < 10**width:
        raise ValueError(f"serial reference {serial_ref} does not fit {width} digits")
    body = f"{extension}{company_prefix}{str(serial_ref).zfill(width)}"
    return body + gs1_check_digit(body)


def valid_sscc(sscc: str) -> bool:
    return len(sscc) == 18 and sscc.isdigit() and gs1_check_digit(sscc[:17]) == sscc[17]


def sscc_dl(sscc: str) -> str:
    """A container's EPC as a GS1 Digital Link URI (AI 00)."""
    return f"{DL_HOST}/00/{sscc}"


def lot_uri(lot_number: str) -> str:
    return f"{NEARFAB_URN}material-lot:{quote(lot_number, safe='')}"


def batch_uri(batch_number: str) -> str:
    return f"{NEARFAB_URN}batch:{quote(batch_number, safe='')}"


def epcis_time(when: datetime) -> str:
    """UTC, millisecond precision, 'Z'."""
    if when.tzinfo is None:
        raise ValueError("naive datetime refused: give a timezone")
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _base(kind: str, when: datetime) -> dict[str, Any]:
    return {"type": kind, "eventTime": epcis_time(when), "eventTimeZoneOffset": "+00:00"}


def _where(event: dict[str, Any], read_point: str | None, biz_location: str | None) -> None:
    if read_point:
        event["readPoint"] = {"id": read_point}
    if biz_location:
        event["bizLocation"] = {"id": biz_location}


def with_event_id(event: dict[str, Any]) -> dict[str, Any]:
    """The event with `eventID` = its event hash (CBV 2.0 §8.9)."""
    event = {k: v for k, v in event.items() if k != "eventID"}
    return {"eventID": event_hash(event), **event}


def object_event(
    *,
    when: datetime,
    epcs: Sequence[str],
    action: str,
    biz_step: str,
    disposition: str | None,
    read_point: str | None,
    biz_location: str | None = None,
    ilmd: Mapping[str, Any] | None = None,
    biz_transactions: Sequence[tuple[str, str]] = (),
    sources: Sequence[tuple[str, str]] = (),
    destinations: Sequence[tuple[str, str]] = (),
    sensor_elements: Sequence[Mapping[str, Any]] = (),
    error_declaration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    if action not in ("ADD", "OBSERVE", "DELETE"):
        raise ValueError(f"action {action!r}: ADD, OBSERVE or DELETE")
    event = _base("ObjectEvent", when)
    event["epcList"] = list(epcs)
    event["action"] = action
    event["bizStep"] = biz_step
    if disposition:
        event["disposition"] = disposition
    _where(event, read_point, biz_location)
    if biz_transactions:
        event["bizTransactionList"] = [
            {"type": t, "bizTransaction": ref} for t, ref in biz_transactions
        ]
    if sources:
        event["sourceList"] = [{"type": t, "source": ref} for t, ref in sources]
    if destinations:
        event["destinationList"] = [{"type": t, "destination": ref} for t, ref in destinations]
    if sensor_elements:
        event["sensorElementList"] = [dict(e) for e in sensor_elements]
    if ilmd:
        event["ilmd"] = dict(ilmd)
    if error_declaration:
        event["errorDeclaration"] = dict(error_declaration)
    return with_event_id(event)


def aggregation_event(
    *,
    when: datetime,
    parent: str,
    children: Sequence[str],
    action: str,
    biz_step: str,
    disposition: str | None,
    read_point: str | None,
    biz_location: str | None = None,
    sources: Sequence[tuple[str, str]] = (),
    destinations: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Children put into (ADD), seen in (OBSERVE) or taken out of (DELETE) a parent."""
    if action not in ("ADD", "OBSERVE", "DELETE"):
        raise ValueError(f"action {action!r}: ADD, OBSERVE or DELETE")
    event = _base("AggregationEvent", when)
    event["parentID"] = parent
    event["childEPCs"] = list(children)
    event["action"] = action
    event["bizStep"] = biz_step
    if disposition:
        event["disposition"] = disposition
    _where(event, read_point, biz_location)
    if sources:
        event["sourceList"] = [{"type": t, "source": ref} for t, ref in sources]
    if destinations:
        event["destinationList"] = [{"type": t, "destination": ref} for t, ref in destinations]
    return with_event_id(event)


def transformation_event(
    *,
    when: datetime,
    inputs: Sequence[tuple[str, float, str]],
    outputs: Sequence[str],
    transformation_id: str | None,
    biz_step: str,
    disposition: str | None,
    read_point: str | None,
    biz_location: str | None = None,
    ilmd: Mapping[str, Any] | None = None,
    biz_transactions: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Inputs as (class URI, quantity, UN/CEFACT unit), outputs as EPCs."""
    event = _base("TransformationEvent", when)
    event["inputQuantityList"] = [
        {"epcClass": cls, "quantity": qty, "uom": uom} for cls, qty, uom in inputs
    ]
    event["outputEPCList"] = list(outputs)
    if transformation_id:
        event["transformationID"] = transformation_id
    event["bizStep"] = biz_step
    if disposition:
        event["disposition"] = disposition
    _where(event, read_point, biz_location)
    if biz_transactions:
        event["bizTransactionList"] = [
            {"type": t, "bizTransaction": ref} for t, ref in biz_transactions
        ]
    if ilmd:
        event["ilmd"] = dict(ilmd)
    return with_event_id(event)


def document(events: Sequence[Mapping[str, Any]], created: datetime) -> dict[str, Any]:
    """An EPCISDocument holding `events`."""
    return {
        "@context": [EPCIS_CONTEXT, dict(CONTEXT_PREFIXES)],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": epcis_time(created),
        "epcisBody": {"eventList": [dict(e) for e in events]},
    }


def query_document(events: Sequence[Mapping[str, Any]], created: datetime) -> dict[str, Any]:
    """An EPCISQueryDocument answering a SimpleEventQuery."""
    return {
        "@context": [EPCIS_CONTEXT, dict(CONTEXT_PREFIXES)],
        "type": "EPCISQueryDocument",
        "schemaVersion": "2.0",
        "creationDate": epcis_time(created),
        "epcisBody": {
            "queryResults": {
                "queryName": "SimpleEventQuery",
                "resultsBody": {"eventList": [dict(e) for e in events]},
            }
        },
    }


_ROLES = (
    ("epcList", "epc"),
    ("childEPCs", "child"),
    ("inputEPCList", "input"),
    ("outputEPCList", "output"),
)
_QTY_ROLES = (
    ("quantityList", "epc"),
    ("childQuantityList", "child"),
    ("inputQuantityList", "input"),
    ("outputQuantityList", "output"),
)


def identifiers(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(identifier, role) for every EPC and class an event names; EPC URNs and Digital Links
    in their canonical Digital Link form, so a query by either spelling finds the event."""
    from nearfab.custody.logic.dl import canonical_dl

    out: list[tuple[str, str]] = []

    def add(value: Any, role: str) -> None:
        if isinstance(value, str) and value:
            out.append((canonical_dl(value) or value, role))

    for key, role in _ROLES:
        for epc in event.get(key) or []:
            add(epc, role)
    add(event.get("parentID"), "parent")
    for key, role in _QTY_ROLES:
        for q in event.get(key) or []:
            if isinstance(q, Mapping):
                add(q.get("epcClass"), role)
    return sorted(set(out))


def bare_vocab(value: str | None, kind: str) -> str | None:
    """A CBV word in its bare form (`shipping`), from bare, URN or Web URI spelling."""
    if value is None:
        return None
    prefixes = {
        "bizStep": (
            "urn:epcglobal:cbv:bizstep:",
            "https://ref.gs1.org/cbv/BizStep-",
            "cbv:BizStep-",
        ),
        "disposition": ("urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-", "cbv:Disp-"),
    }[kind]
    for prefix in prefixes:
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value
