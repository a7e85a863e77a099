"""What other domains may read of custody's tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, ScalarSelect, func, select

from nearfab.custody.models import LedgerEntry


def ledger_head_view(site_id: str) -> ScalarSelect[int | None]:
    """The last `seq` of one site's chain as a scalar subquery (NULL before its first entry),
    for a one-statement check."""
    return select(func.max(LedgerEntry.seq)).where(LedgerEntry.site_id == site_id).scalar_subquery()


def ledger_rows_after(connection: Connection, site_id: str, after_seq: int) -> list[dict[str, Any]]:
    """One site's ledger entries after `after_seq`, in chain order, with what their hash and
    signature cover (`payload`, `prev_hash`, `entry_hash`, `key_id`, `signature`)."""
    table = LedgerEntry.__table__
    rows = connection.execute(
        select(
            table.c.site_id,
            table.c.seq,
            table.c.kind,
            table.c.ref,
            table.c.payload,
            table.c.prev_hash,
            table.c.entry_hash,
            table.c.key_id,
            table.c.signature,
        )
        .where(table.c.site_id == site_id, table.c.seq > after_seq)
        .order_by(table.c.seq)
    ).mappings()
    return [dict(row) for row in rows]
