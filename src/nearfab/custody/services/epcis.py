"""EPCIS 2.0 events: sites' GLNs, recording nearfab's own custody events, capture of partners'
documents (schema-checked, all or nothing, duplicates recognised by event hash) and query."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
from sqlalchemy import ColumnElement, false, func, or_, select

from nearfab.common.errors import DomainError, NotFound, ValidationFailed
from nearfab.custody.enums import LedgerKind
from nearfab.custody.logic.dl import canonical_dl, gs1_check_digit
from nearfab.custody.logic.epcis import (
    bare_vocab,
    document,
    identifiers,
    make_gln,
    query_document,
    sgln_uri,
)
from nearfab.custody.logic.eventhash import context_prefixes, document_events, event_hash
from nearfab.custody.models import EpcisEpc, EpcisEvent, SiteLocation
from nearfab.custody.services.ledger import CustodyLedger
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    audit,
    authorize,
    authorize_network,
    can,
)
from nearfab.network import SiteKind
from nearfab.network.reads import control_site
from nearfab.network.reads import site as network_site
from nearfab.network.reads import sites as network_sites
from nearfab.uow import UnitOfWork

DEFAULT_COMPANY_PREFIX = "9506000"
SCHEMA_NAME = "EPCIS-JSON-Schema.json"
PACKAGED_STANDARDS = Path(__file__).resolve().parents[1] / "standards"


class EpcisInvalid(DomainError):
    """A captured document that the official schema refuses; `errors` lists why."""

    http_status = 400

    def __init__(self, message: str, errors: list[dict[str, str]]) -> None:
        super().__init__(message, field="document", code="epcis_invalid")
        self.errors = errors


class SchemaMissing(DomainError):
    http_status = 503


@dataclass
class CaptureResult:
    stored: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    corrections: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stored": len(self.stored),
            "duplicates": len(self.duplicates),
            "corrections": len(self.corrections),
            "event_ids": self.stored,
            "duplicate_ids": self.duplicates,
        }


def find_schema(data_dir: Path | None = None) -> Path | None:
    """The official EPCIS JSON schema: NEARFAB_EPCIS_SCHEMA, <data>/standards/epcis/, or the
    copy shipped in the package (nearfab/custody/standards/, source and licence in its README;
    refreshed by scripts/vendor_standards.py). Nothing outside the package is looked up."""
    candidates = []
    if os.environ.get("NEARFAB_EPCIS_SCHEMA"):
        candidates.append(Path(os.environ["NEARFAB_EPCIS_SCHEMA"]))
    if data_dir is not None:
        candidates.append(data_dir / "standards" / "epcis" / SCHEMA_NAME)
    candidates.append(PACKAGED_STANDARDS / "epcis" / SCHEMA_NAME)
    return next((p for p in candidates if p.is_file()), None)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class EpcisStore:
    def __init__(
        self,
        *,
        ledger: CustodyLedger | None = None,
        schema_path: Path | None = None,
        company_prefix: str = DEFAULT_COMPANY_PREFIX,
    ) -> None:
        self.ledger = ledger
        self._schema_path = schema_path
        self._validator: jsonschema.Draft7Validator | None = None
        self.company_prefix = company_prefix

    # --- site locations ----------------------------------------------------------------------
    def site_location(self, uow: UnitOfWork, site_id: str) -> SiteLocation:
        """The site's GLN, assigned on first use: the network's GS1 company prefix and the next
        location reference (replace it with the site's real GLN with `set_gln`)."""
        loc = uow.session.get(SiteLocation, site_id)
        if loc is not None:
            return loc
        network_site(uow.session, site_id)  # NotFound naming site_id
        taken = uow.session.scalar(select(func.count()).select_from(SiteLocation)) or 0
        glns = set(uow.session.scalars(select(SiteLocation.gln)))
        ref = int(taken) + 1
        while make_gln(self.company_prefix, ref) in glns:
            ref += 1
        loc = SiteLocation(
            site_id=site_id,
            gln=make_gln(self.company_prefix, ref),
            company_prefix_length=len(self.company_prefix),
            assigned_at=uow.clock.now(),
        )
        uow.session.add(loc)
        uow.flush()
        return loc

    def sgln(self, uow: UnitOfWork, site_id: str) -> str:
        loc = self.site_location(uow, site_id)
        return sgln_uri(loc.gln, loc.company_prefix_length)

    def set_gln(
        self, uow: UnitOfWork, actor: Actor, site_id: str, gln: str, company_prefix_length: int
    ) -> SiteLocation:
        authorize_network(actor, Permission.SITE_GLN)  # a site's GS1 identity: the network's
        if len(gln) != 13 or not gln.isdigit() or gs1_check_digit(gln[:12]) != gln[12]:
            raise ValidationFailed(f"gln {gln!r}: 13 digits with a valid check digit", field="gln")
        if not 6 <= company_prefix_length <= 12:
            raise ValidationFailed("company_prefix_length: 6 to 12", field="company_prefix_length")
        loc = self.site_location(uow, site_id)
        old = {"gln": loc.gln}
        loc.gln, loc.company_prefix_length = gln, company_prefix_length
        audit(uow, actor, AuditAction.UPDATE, "site_gln", site_id, old=old, new={"gln": gln})
        uow.commit()
        return loc

    # --- recording ---------------------------------------------------------------------------
    def _store(
        self,
        uow: UnitOfWork,
        event: Mapping[str, Any],
        hashed: str,
        *,
        site_id: str | None,
        source: str,
        context: Any = None,
    ) -> EpcisEvent:
        body = dict(event)
        if context is not None:
            body["@context"] = context
        row = EpcisEvent(
            event_hash=hashed,
            event_id=str(event.get("eventID") or hashed),
            event_type=str(event.get("type")),
            event_time=_parse_time(str(event["eventTime"])),
            record_time=uow.clock.now(),
            action=event.get("action"),
            biz_step=bare_vocab(event.get("bizStep"), "bizStep"),
            disposition=bare_vocab(event.get("disposition"), "disposition"),
            read_point=_loc(event.get("readPoint")),
            biz_location=_loc(event.get("bizLocation")),
            site_id=site_id,
            source=source,
            body=body,
        )
        uow.session.add(row)
        uow.flush()  # the event row before the identifiers that refer to it
        for epc, role in identifiers(event):
            uow.session.add(EpcisEpc(event_hash=hashed, epc=epc[:300], role=role))
        return row

    def record(self, uow: UnitOfWork, event: Mapping[str, Any], *, site_id: str) -> EpcisEvent:
        """Store one of nearfab's own events (eventID = its hash) and chain it in the site's
        ledger, in the caller's transaction."""
        hashed = str(event["eventID"])
        existing = uow.session.get(EpcisEvent, hashed)
        if existing is not None:
            return existing
        row = self._store(uow, event, hashed, site_id=site_id, source="nearfab")
        uow.flush()
        if self.ledger is not None:
            self.ledger.append(uow, site_id, LedgerKind.EPCIS, hashed, dict(event))
        return row

    def declare_error(
        self,
        uow: UnitOfWork,
        event_hash_: str,
        *,
        reason: str,
        corrective: list[str],
        site_id: str,
    ) -> EpcisEvent:
        """EPCIS error declaration: the original event stays, marked as erroneous, pointing to
        the events that correct it (same event ID: an error declaration is not a new event)."""
        row = uow.session.get(EpcisEvent, event_hash_)
        if row is None:
            raise NotFound(f"no EPCIS event {event_hash_}", field="event_id")
        declaration = {
            "declarationTime": _now_text(uow),
            "reason": reason,
            "correctiveEventIDs": corrective,
        }
        row.body = {**row.body, "errorDeclaration": declaration}
        if self.ledger is not None:
            self.ledger.append(
                uow,
                site_id,
                LedgerKind.EPCIS,
                event_hash_,
                {"eventID": event_hash_, "errorDeclaration": declaration},
            )
        return row

    # --- capture -----------------------------------------------------------------------------
    def validator(self) -> jsonschema.Draft7Validator:
        if self._validator is None:
            path = self._schema_path or find_schema()
            if path is None:
                raise SchemaMissing(
                    "the official EPCIS JSON schema is not installed: put GS1's "
                    f"{SCHEMA_NAME} in <data>/standards/epcis/ or set NEARFAB_EPCIS_SCHEMA",
                    code="schema_missing",
                )
            schema = json.loads(path.read_text(encoding="utf-8"))
            jsonschema.Draft7Validator.check_schema(schema)
            self._validator = jsonschema.Draft7Validator(
                schema, format_checker=jsonschema.FormatChecker()
            )
        return self._validator

    def validate(self, doc: Any) -> list[dict[str, str]]:
        """Schema errors of a document (empty when valid), each with its JSON path."""
        if not isinstance(doc, Mapping):
            return [{"path": "$", "message": "an EPCIS document is a JSON object"}]
        errors = sorted(self.validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
        out = []
        for err in errors[:50]:
            detail = err
            if err.context:  # if/then and anyOf: the deepest, most specific cause
                detail = jsonschema.exceptions.best_match(err.context) or err
            path = "$" + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in detail.absolute_path
            )
            out.append({"path": path, "message": detail.message[:500]})
        if not out and doc.get("type") not in ("EPCISDocument", "EPCISQueryDocument"):
            out.append({"path": "$.type", "message": "must be EPCISDocument or EPCISQueryDocument"})
        return out

    def capture(self, uow: UnitOfWork, actor: Actor, doc: Any) -> CaptureResult:
        """Store every event of a partner's document, or none: invalid documents are refused
        with the schema's errors; events already held (same event hash) are duplicates."""
        authorize_network(actor, Permission.EPCIS_CAPTURE)  # stored for the network (no site)
        errors = self.validate(doc)
        if errors:
            raise EpcisInvalid(
                f"the EPCIS document is not valid ({len(errors)} schema error"
                f"{'s' if len(errors) != 1 else ''}; first at {errors[0]['path']}: "
                f"{errors[0]['message']})",
                errors,
            )
        context = doc.get("@context")
        prefixes = context_prefixes(context)
        control = control_site(uow.session)
        result = CaptureResult()
        seen: set[str] = set()
        for event in document_events(doc):
            hashed = event_hash(event, prefixes)
            existing = uow.session.get(EpcisEvent, hashed)
            if existing is not None or hashed in seen:
                if event.get("errorDeclaration") and existing is not None:
                    existing.body = {**existing.body, "errorDeclaration": event["errorDeclaration"]}
                    result.corrections.append(hashed)
                else:
                    result.duplicates.append(hashed)
                continue
            seen.add(hashed)
            self._store(uow, event, hashed, site_id=None, source="capture", context=context)
            result.stored.append(hashed)
        uow.flush()
        if self.ledger is not None and control is not None:
            self.ledger.append_many(
                uow,
                control.id,
                [(LedgerKind.EPCIS, hashed, {"captured": hashed}) for hashed in result.stored],
            )
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "epcis_capture",
            str(doc.get("id") or doc.get("instanceIdentifier") or "(document)")[:64],
            new=result.to_dict() | {"event_ids": result.stored[:50]},
            site_id=actor.site_id,
        )
        uow.commit()
        return result

    # --- query -------------------------------------------------------------------------------
    def visible(self, uow: UnitOfWork, actor: Actor) -> ColumnElement[bool]:
        """The events an actor may read: those of every site where the matrix lets them query
        EPCIS; events captured from partners (no site) only for those who may query at the
        control site (its staff, auditors). Nothing is visible because it has no site."""
        authorize(actor, Permission.EPCIS_QUERY)
        every = network_sites(uow.session)
        seen = [s.id for s in every if can(actor, Permission.EPCIS_QUERY, site_id=s.id)]
        control = any(s.kind == SiteKind.CONTROL.value and s.id in seen for s in every)
        own = EpcisEvent.site_id.in_(seen) if seen else false()
        return or_(own, EpcisEvent.site_id.is_(None)) if control else own

    def search(self, uow: UnitOfWork, actor: Actor, **filters: Any) -> list[dict[str, Any]]:
        """`query` limited to the events the actor may read (`visible`): the API's and the
        web page's EPCIS query."""
        return self.query(uow, scope=self.visible(uow, actor), **filters)

    def search_document(self, uow: UnitOfWork, actor: Actor, **filters: Any) -> dict[str, Any]:
        return query_document(self.search(uow, actor, **filters), uow.clock.now())

    def query(
        self,
        uow: UnitOfWork,
        *,
        scope: ColumnElement[bool] | None = None,
        epc: str | None = None,
        biz_step: str | None = None,
        disposition: str | None = None,
        ge_time: datetime | None = None,
        lt_time: datetime | None = None,
        location: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Events matching every filter given, oldest first. EPC and location match in any
        spelling (EPC URN or Digital Link); vocabulary in bare, URN or Web URI form.
        Not scoped to a reader: for use cases that authorized the record first (a pack's
        trace); entry points call `search`."""
        if limit < 1 or limit > 10_000:
            raise ValidationFailed("limit: 1 to 10000", field="limit")
        stmt = select(EpcisEvent)
        if scope is not None:
            stmt = stmt.where(scope)
        if epc:
            key = canonical_dl(epc) or epc
            stmt = stmt.where(
                EpcisEvent.event_hash.in_(select(EpcisEpc.event_hash).where(EpcisEpc.epc == key))
            )
        if biz_step:
            stmt = stmt.where(EpcisEvent.biz_step == bare_vocab(biz_step, "bizStep"))
        if disposition:
            stmt = stmt.where(EpcisEvent.disposition == bare_vocab(disposition, "disposition"))
        if ge_time:
            stmt = stmt.where(EpcisEvent.event_time >= ge_time)
        if lt_time:
            stmt = stmt.where(EpcisEvent.event_time < lt_time)
        if location:
            where = canonical_dl(location) or location
            stmt = stmt.where(
                or_(
                    EpcisEvent.read_point == where,
                    EpcisEvent.biz_location == where,
                )
            )
        stmt = stmt.order_by(EpcisEvent.event_time, EpcisEvent.event_hash).limit(limit)
        return [_public(row) for row in uow.session.scalars(stmt)]

    def event(self, uow: UnitOfWork, actor: Actor, event_id: str) -> dict[str, Any]:
        """One held event as JSON-LD (with the `@context` it was captured with), by its event
        hash or, for a captured event, the eventID its document gave it; an event the actor
        may not read (`visible`) is answered as one that does not exist."""
        seen = self.visible(uow, actor)
        row = (
            uow.session.scalars(
                select(EpcisEvent).where(EpcisEvent.event_hash == event_id, seen)
            ).first()
            if event_id
            else None
        )
        if row is None and event_id:
            row = uow.session.scalars(
                select(EpcisEvent)
                .where(EpcisEvent.event_id == event_id, seen)
                .order_by(EpcisEvent.record_time)
                .limit(1)
            ).first()
        if row is None:
            raise NotFound(f"no EPCIS event {event_id!r}", field="event_id")
        body = _public(row)
        if "@context" in row.body:
            body = {"@context": row.body["@context"], **body}
        return body

    def export(self, uow: UnitOfWork, *, source: str | None = "nearfab") -> dict[str, Any]:
        """Every event (nearfab's own by default) as one EPCISDocument."""
        stmt = select(EpcisEvent).order_by(EpcisEvent.event_time, EpcisEvent.event_hash)
        if source:
            stmt = stmt.where(EpcisEvent.source == source)
        return document([_public(r) for r in uow.session.scalars(stmt)], uow.clock.now())


def _loc(value: Any) -> str | None:
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        text = value["id"]
        return (canonical_dl(text) or text)[:300]
    return None


def _now_text(uow: UnitOfWork) -> str:
    from nearfab.custody.logic.epcis import epcis_time

    return epcis_time(uow.clock.now())


def _public(row: EpcisEvent) -> dict[str, Any]:
    body = {k: v for k, v in row.body.items() if k != "@context"}
    body.setdefault("eventID", row.event_id)
    return body
