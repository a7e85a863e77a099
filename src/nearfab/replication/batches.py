"""The site nodes' batches as the control site holds them (docs/replication.md, "Comparability
across the network"): a site node sends its batch record's summary after every audited change
of it (records of kind `batch`, replication/capture.py, production's read view `batch_view`),
so the control's cross-site comparability report can hold the batches the sites made without
their tables. Bootstrap hands `received_batches` to comparability at the control node only."""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import select

from nearfab.common.canonical import canonical_json
from nearfab.replication.enums import RecordKind
from nearfab.replication.models import InboxRecord
from nearfab.uow import UnitOfWork

log = logging.getLogger(__name__)


def received_batches(uow: UnitOfWork, master_file_code: str) -> list[dict[str, Any]]:
    """The newest summary received of each site node's batch of the master file (any version),
    as the site sent it, one per (origin, batch id). A summary about another site's batch than
    its sender's is left out (logged): a node reports its own site's batches only. Which of
    them the report counts (made, finished) is the report's business."""
    # the payload is canonical JSON: a summary of this code names it exactly so (a batch's
    # master file never changes, so every summary of one batch is found or none)
    named = '"master_file_code":' + canonical_json(master_file_code).decode("utf-8")
    query = (
        select(InboxRecord.origin_site, InboxRecord.id, InboxRecord.payload)
        .where(
            InboxRecord.kind == RecordKind.BATCH.value,
            InboxRecord.payload.contains(named, autoescape=True),
        )
        .order_by(InboxRecord.origin_site, InboxRecord.seq)
    )
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for origin, record_id, payload in uow.session.execute(query):
        summary = json.loads(payload)
        if summary.get("master_file_code") != master_file_code:
            continue
        newest[(origin, str(summary.get("id")))] = {**summary, "record_id": record_id}
    out = []
    for (origin, batch_id), summary in newest.items():
        if summary.get("site_id") != origin:
            log.warning(
                "batch summary %s from %s is about another site's batch %s",
                summary["record_id"],
                origin,
                batch_id,
            )
            continue
        out.append(summary)
    return out
