"""The batch record itself: finding batches, their platform-recorded steps, audited status
changes. Every other production use case writes through these."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from nearfab.common.errors import NotFound
from nearfab.identity import Actor, audited_transition
from nearfab.production.enums import BATCH_TRANSITIONS, BatchStatus
from nearfab.production.models import BatchRecord, BatchStep
from nearfab.uow import UnitOfWork


def add_step(
    uow: UnitOfWork,
    actor: Actor,
    batch: BatchRecord,
    name: str,
    detail: dict[str, Any] | None = None,
) -> BatchStep:
    seq = (
        uow.session.scalar(select(func.max(BatchStep.seq)).where(BatchStep.batch_id == batch.id))
        or 0
    ) + 1
    step = BatchStep(
        batch_id=batch.id,
        seq=seq,
        name=name,
        at=uow.clock.now(),
        actor_id=actor.user_id,
        actor_name=actor.full_name,
        detail=detail,
    )
    uow.session.add(step)
    uow.flush()
    return step


def transition(
    uow: UnitOfWork,
    actor: Actor,
    batch: BatchRecord,
    target: BatchStatus,
    *,
    reason: str,
) -> None:
    """Move the batch to `target` by BATCH_TRANSITIONS, audited (no commit)."""
    audited_transition(
        uow,
        actor,
        batch,
        target,
        BATCH_TRANSITIONS,
        entity_type="batch",
        label=f"batch {batch.batch_number}",
        reason=reason,
        site_id=batch.site_id,
    )


def get(uow: UnitOfWork, batch_id: str) -> BatchRecord:
    """A batch by id or batch number; NotFound naming `batch_id`."""
    batch = uow.session.get(BatchRecord, batch_id) or uow.session.scalar(
        select(BatchRecord).where(BatchRecord.batch_number == batch_id)
    )
    if batch is None:
        raise NotFound(f"no batch {batch_id!r}", field="batch_id")
    return batch


def steps(uow: UnitOfWork, batch_id: str) -> list[BatchStep]:
    return list(
        uow.session.scalars(
            select(BatchStep).where(BatchStep.batch_id == batch_id).order_by(BatchStep.seq)
        )
    )


def steps_of(uow: UnitOfWork, batch_ids: list[str]) -> list[BatchStep]:
    """The machine steps of these batches, in one statement, each batch's in order."""
    if not batch_ids:
        return []
    return list(
        uow.session.scalars(
            select(BatchStep)
            .where(BatchStep.batch_id.in_(batch_ids))
            .order_by(BatchStep.batch_id, BatchStep.seq)
        )
    )


def batches(
    uow: UnitOfWork, *, order_id: str | None = None, status: str | None = None
) -> list[BatchRecord]:
    stmt = select(BatchRecord).order_by(BatchRecord.started_at.desc())
    if order_id:
        stmt = stmt.where(BatchRecord.order_id == order_id)
    if status:
        stmt = stmt.where(BatchRecord.status == status)
    return list(uow.session.scalars(stmt))
