"""The site nodes' custody alerts as the control site holds them (docs/replication.md, "Custody
alerts across the network"): each site node sends an alert's state after every audited step of
it (records of kind `alert`, replication/capture.py), so the control's QA sees which patient
must be contacted and whether the site did, without reading every audit record it holds."""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import select

from nearfab.common.errors import ValidationFailed
from nearfab.identity import Actor, Permission, authorize, visible_sites
from nearfab.network.reads import sites_by_id
from nearfab.replication.enums import RecordKind
from nearfab.replication.models import InboxRecord
from nearfab.replication.schemas import SiteAlertOut
from nearfab.uow import UnitOfWork

log = logging.getLogger(__name__)

FILTERS = ("all", "open", "closed")


def site_alerts(uow: UnitOfWork, actor: Actor, *, status: str = "all") -> list[dict[str, Any]]:
    """The newest state received of each site node's custody alert, for a reader of custody
    (`trace.read`) limited to the sites they see; open ones first, then newest first.
    `status`: all, open (not closed) or closed. A record about another site's alert than its
    sender's is never shown (logged): a node sends its own site's alerts only."""
    authorize(actor, Permission.TRACE_READ)
    if status not in FILTERS:
        raise ValidationFailed(
            f"status: one of {', '.join(FILTERS)}, not {status!r}", field="status"
        )
    sites = visible_sites(actor, Permission.TRACE_READ)
    query = select(InboxRecord).where(InboxRecord.kind == RecordKind.ALERT.value)
    if sites is not None:
        query = query.where(InboxRecord.origin_site.in_(sorted(sites)))
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in uow.session.scalars(query.order_by(InboxRecord.origin_site, InboxRecord.seq)):
        state = json.loads(rec.payload)
        if not isinstance(state, dict) or state.get("site_id") != rec.origin_site:
            log.warning("alert record %s is about another site's alert", rec.id)
            continue
        shown = {**state, "record_id": rec.id, "received_at": rec.received_at.isoformat()}
        try:  # a record missing a field, or of another shape, is not shown (nor breaks the list)
            SiteAlertOut.model_validate({**shown, "site_code": rec.origin_site})
        except PydanticValidationError as exc:
            log.warning("alert record %s is not an alert's state: %s", rec.id, exc)
            continue
        newest[(rec.origin_site, str(state["alert_id"]))] = shown
    names = sites_by_id(uow.session, sorted({site for site, _ in newest}))
    rows = []
    for (site, _), state in newest.items():
        closed = state["status"] == "closed"
        if (status == "open" and closed) or (status == "closed" and not closed):
            continue
        found = names.get(site)
        rows.append({**state, "site_code": found.code if found is not None else site})
    rows.sort(key=lambda r: str(r["raised_at"]), reverse=True)
    rows.sort(key=lambda r: r["status"] == "closed")  # stable: open first, newest first
    return rows
