"""What other domains may read of production's tables."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from nearfab.common.errors import NotFound
from nearfab.production.models import BatchRecord


def batch_record(session: Session, batch_id: str) -> BatchRecord:
    """A batch by id or batch number; NotFound naming `batch_id` (as production's own look-up)."""
    batch = session.get(BatchRecord, batch_id) or session.scalar(
        select(BatchRecord).where(BatchRecord.batch_number == batch_id)
    )
    if batch is None:
        raise NotFound(f"no batch {batch_id!r}", field="batch_id")
    return batch


def batch_records_by_id(session: Session, ids: Iterable[str]) -> dict[str, BatchRecord]:
    """The batches with these ids, in one statement; an unknown id is simply absent."""
    wanted = set(ids)
    if not wanted:
        return {}
    rows = session.scalars(select(BatchRecord).where(BatchRecord.id.in_(wanted)))
    return {batch.id: batch for batch in rows}
