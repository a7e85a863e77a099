"""What the site nodes did with the control's records, as the control holds it
(docs/replication.md, "The node page"): a site node writes an audit row for every control
record it acts on (`replication_applied`), refuses (the same entity, action `refuse`, or
`replication_refused`) or leaves waiting (`replication_waiting`), and those rows reach the
control with the rest of the site's audit trail. The control's node page lists the records a
site refused or still holds, so the control's people see where the network disagrees (a
cancellation the site could not make, a release it refused) without reading the site's
trail."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from nearfab.replication.decisions import APPLIED_ENTITY, REFUSED_ENTITY, WAITING_ENTITY
from nearfab.replication.enums import RecordKind
from nearfab.replication.models import InboxRecord
from nearfab.uow import UnitOfWork

log = logging.getLogger(__name__)

_ENTITIES = (APPLIED_ENTITY, REFUSED_ENTITY, WAITING_ENTITY)


@dataclass(frozen=True)
class SiteOutcome:
    """A control record a site node refused or still holds, from that site's newest row
    about it."""

    origin_site: str  # the site node that wrote the row
    record_id: str  # the control's record
    entity_type: str  # what the control's record was about (`remote_release`, …)
    entity_id: str
    state: str  # "refused" or "waiting"
    reason: str  # in the site's words
    code: str | None  # a waiting record's reason code
    at: datetime  # when the site wrote the row
    site_row: str  # the site's audit record that says so
    site_code: str = ""  # the origin's code, for people (the node page fills it)


def _state(row: dict[str, object]) -> str:
    if row.get("entity_type") == WAITING_ENTITY:
        return "waiting"
    if row.get("entity_type") == REFUSED_ENTITY or row.get("action") == "refuse":
        return "refused"
    return "applied"


def site_outcomes(uow: UnitOfWork, origins: Iterable[str]) -> list[SiteOutcome]:
    """Per control record, each given site node's newest row about it, kept where the site
    refused it or holds it still (newest first). A row whose site is not its sender's is never
    shown (logged): a node writes its own site's rows only. One statement over the origins'
    audit records, found by what they are about (the inbox's indexed column `about`, their
    `entity_type`), not by a scan of their payloads' text."""
    wanted = sorted(set(origins))
    if not wanted:
        return []
    newest: dict[tuple[str, str], tuple[dict[str, object], InboxRecord]] = {}
    # by the indexed column (0033), not the payload; the kind checked and the order made
    # here, as either in SQL would lead SQLite to another index, over every record held
    query = select(InboxRecord).where(
        InboxRecord.about.in_(_ENTITIES), InboxRecord.origin_site.in_(wanted)
    )
    found = sorted(uow.session.scalars(query), key=lambda r: (r.origin_site, r.seq))
    for rec in found:
        if rec.kind != RecordKind.AUDIT.value:
            continue  # a ledger entry of a kind so named
        row = json.loads(rec.payload)
        if not isinstance(row, dict) or row.get("entity_type") not in _ENTITIES:
            continue  # never, as the column is filled: the row itself has the last word
        if row.get("site_id") != rec.origin_site:
            log.warning("audit record %s is another site's row about a control record", rec.id)
            continue
        newest[(rec.origin_site, str(row.get("entity_id")))] = (row, rec)
    out = []
    for (origin, record_id), (row, rec) in newest.items():
        state = _state(row)
        if state == "applied":
            continue
        new = row.get("new") if isinstance(row.get("new"), dict) else {}
        assert isinstance(new, dict)
        outcome = new.get("outcome")
        out.append(
            SiteOutcome(
                origin_site=origin,
                record_id=record_id,
                entity_type=str(new.get("entity_type") or "?"),
                entity_id=str(new.get("entity_id") or "?"),
                state=state,
                reason=str(outcome if outcome else row.get("reason") or ""),
                code=str(new["code"]) if new.get("code") else None,
                at=datetime.fromisoformat(str(row.get("at"))),
                site_row=rec.id,
            )
        )
    return sorted(out, key=lambda o: (o.at, o.record_id), reverse=True)
