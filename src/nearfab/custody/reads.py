"""What other domains may read of custody's tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from nearfab.custody.models import LedgerEntry


def ledger_head_seq(connection: Connection, site_id: str) -> int:
    """The last `seq` of one site's ledger chain (0 before its first entry)."""
    found = connection.execute(
        select(func.max(LedgerEntry.seq)).where(LedgerEntry.site_id == site_id)
    ).scalar()
    return int(found or 0)


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
