"""What other domains may read of production's tables."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Subquery, func, select
from sqlalchemy.orm import Session, aliased

from nearfab.common.errors import NotFound
from nearfab.production.models import BatchRecord, StepSignoff


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


def step_signoff_view() -> Subquery:
    """The manual-step sign-offs as a read view to join on (one row per step and batch)."""
    return select(
        StepSignoff.id,
        StepSignoff.batch_id,
        StepSignoff.code,
        StepSignoff.position,
        StepSignoff.title,
        StepSignoff.critical,
        StepSignoff.entry,
        StepSignoff.performed_by,
        StepSignoff.performed_at,
        StepSignoff.signature_id,
        StepSignoff.deviation_id,
        StepSignoff.verified_by,
        StepSignoff.verified_at,
        StepSignoff.verify_signature_id,
    ).subquery("step_signoff_view")


def batch_view() -> Subquery:
    """The batch records as a read view to join on: `id`, `batch_number`, `status`, `site_id`
    (the making site), `order_id`, `machine_id`, `material_lot_id`, `material_lot_number`,
    `master_file_id` (the version the batch was made under), `master_file_code`,
    `master_file_version`, `started_at`, `finished_at`, `job_id` (also the machine's telemetry
    run), `row_version`, and what the cross-site comparability report reads of a made batch:
    `design`, `measurements`, `telemetry_summary` (JSON documents; the raw telemetry is not
    in the view)."""
    return select(
        BatchRecord.id,
        BatchRecord.batch_number,
        BatchRecord.status,
        BatchRecord.site_id,
        BatchRecord.order_id,
        BatchRecord.machine_id,
        BatchRecord.material_lot_id,
        BatchRecord.material_lot_number,
        BatchRecord.master_file_id,
        BatchRecord.master_file_code,
        BatchRecord.master_file_version,
        BatchRecord.started_at,
        BatchRecord.finished_at,
        BatchRecord.job_id,
        BatchRecord.row_version,
        BatchRecord.design,
        BatchRecord.measurements,
        BatchRecord.telemetry_summary,
    ).subquery("batch_view")


def batch_entity_view() -> type[BatchRecord]:
    """The batch record as a joinable entity view, for a one-statement hot path that hands the
    loaded record on to quality (verification: the QP signature check finds it in the session
    instead of reading it again). The caller reads it, never writes it."""
    return aliased(BatchRecord, name="batch_view")


def batch_records_by_number(session: Session, numbers: Iterable[str]) -> dict[str, BatchRecord]:
    """The batches with these batch numbers, in one statement, by number; unknown are absent."""
    wanted = set(numbers)
    if not wanted:
        return {}
    rows = session.scalars(select(BatchRecord).where(BatchRecord.batch_number.in_(wanted)))
    return {batch.batch_number: batch for batch in rows}


def batches_per_site(
    session: Session, *, master_file_code: str, master_file_version: int, statuses: Iterable[str]
) -> dict[str, int]:
    """How many batches each site made under one master-file version in these statuses (one
    statement; a site with none is absent)."""
    rows = session.execute(
        select(BatchRecord.site_id, func.count())
        .where(
            BatchRecord.master_file_code == master_file_code,
            BatchRecord.master_file_version == master_file_version,
            BatchRecord.status.in_(list(statuses)),
        )
        .group_by(BatchRecord.site_id)
    )
    return {site_id: n for site_id, n in rows}


def batch_records_by_job(session: Session, job_ids: Iterable[str]) -> dict[str, BatchRecord]:
    """The batches made by these jobs (runs), in one statement, by job id; unknown are absent."""
    wanted = set(job_ids)
    if not wanted:
        return {}
    rows = session.scalars(select(BatchRecord).where(BatchRecord.job_id.in_(wanted)))
    return {batch.job_id: batch for batch in rows}


def latest_batch_on_machine(session: Session, machine_id: str) -> BatchRecord | None:
    """The batch the machine started last, or None."""
    return session.scalar(
        select(BatchRecord)
        .where(BatchRecord.machine_id == machine_id)
        .order_by(BatchRecord.started_at.desc())
        .limit(1)
    )


def batch_records_of_product(
    session: Session, master_file_code: str, statuses: Iterable[str], *, finished_only: bool = False
) -> list[BatchRecord]:
    """The batches of a master file (any version) in these statuses, in one statement, by
    start; with `finished_only`, only the finished ones, by finish time then batch number."""
    stmt = select(BatchRecord).where(
        BatchRecord.master_file_code == master_file_code,
        BatchRecord.status.in_(list(statuses)),
    )
    if finished_only:
        stmt = stmt.where(BatchRecord.finished_at.is_not(None)).order_by(
            BatchRecord.finished_at, BatchRecord.batch_number
        )
    else:
        stmt = stmt.order_by(BatchRecord.started_at)
    return list(session.scalars(stmt))


def all_batch_records(session: Session) -> list[BatchRecord]:
    """Every batch record, in one statement, in the order the database returns them (no
    sort: the network simulator's export keeps the measured cycle times in this order)."""
    return list(session.scalars(select(BatchRecord)))
