"""Hand-over and leases: a started batch is claimed for its machine once, and lives while its
machine reports (each report renews the lease). A batch whose lease ran out is an orphan the
runner's sweep closes; a person may abandon one whose machine will never report. Either way
the batch fails with the reason on record, and a domain above (quality) opens a deviation in
the same transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select

from nearfab.common.errors import DomainError, Refused, require_reason
from nearfab.identity import Actor, Permission, authorize, refuse
from nearfab.production.enums import BatchStatus
from nearfab.production.machines import RunResult
from nearfab.production.models import BatchRecord
from nearfab.production.services import records
from nearfab.uow import UnitOfWork

# how long a handed-over batch stays alive without a report from its machine; every report
# (telemetry, state change, the run's result) renews it
DEFAULT_LEASE = timedelta(minutes=30)
# what a domain above production adds to an abandonment in the same transaction (quality
# opens a deviation): (uow, actor, batch, kind "orphaned" | "abandoned", reason)
AbandonHook = Callable[[UnitOfWork, Actor, BatchRecord, str, str], None]
# writes a machine's outcome (here: the reason it never reported) into the record and closes it
RecordRun = Callable[[UnitOfWork, Actor, str, RunResult | DomainError], BatchRecord]
# raises Refused unless the batch's machine may start: the master file's steps before the
# machine start signed (and verified where critical) (steps.BatchSteps.check_ready_to_run)
ReadyToRun = Callable[[UnitOfWork, BatchRecord], None]


class Leases:
    def __init__(
        self,
        record_run: RecordRun,
        lease: timedelta = DEFAULT_LEASE,
        *,
        ready_to_run: ReadyToRun | None = None,
    ) -> None:
        self._record_run = record_run
        self._ready_to_run = ready_to_run
        self.lease = lease
        self._abandon_hooks: list[AbandonHook] = []

    def on_abandon(self, hook: AbandonHook) -> None:
        """Run `hook` inside every abandonment's transaction (quality: the deviation)."""
        self._abandon_hooks.append(hook)

    def hand_over(self, uow: UnitOfWork, actor: Actor, batch_id: str) -> BatchRecord:
        """Claim a started batch for its machine: the machine starts its job. Only one worker
        wins (row version); the others get a Conflict, or a refusal once it has been handed
        over. Refused (`steps_before_start_unsigned`, audited) while a step the master file
        puts before the machine start is not signed, or its critical entry not verified."""
        batch = records.get(uow, batch_id)
        if batch.status != BatchStatus.IN_PROGRESS.value or batch.handed_over_at is not None:
            raise Refused(
                f"batch {batch.batch_number} was already handed to its machine",
                field="batch_id",
                code="already_handed_over",
            )
        if self._ready_to_run is not None:
            try:
                self._ready_to_run(uow, batch)
            except Refused as exc:
                refuse(uow, actor, exc, "batch", batch.id, site_id=batch.site_id)
        batch.handed_over_at = uow.clock.now()
        batch.lease_expires_at = batch.handed_over_at + self.lease
        records.add_step(uow, actor, batch, "handed_to_machine", {"machine_id": batch.machine_id})
        uow.commit()
        return batch

    def lease_end(self, batch: BatchRecord) -> datetime | None:
        """When the batch's run stops counting as alive (None: not handed over yet). A batch
        handed over before leases existed lives one lease from its hand-over."""
        if batch.handed_over_at is None:
            return None
        return batch.lease_expires_at or batch.handed_over_at + self.lease

    def machine_report(self, uow: UnitOfWork, machine_id: str) -> BatchRecord | None:
        """A report from a machine (telemetry, a state change): the lease of the batch it is
        running is renewed. The caller commits. None when the machine runs no handed-over
        batch."""
        batch = uow.session.scalar(
            select(BatchRecord).where(
                BatchRecord.machine_id == machine_id,
                BatchRecord.status == BatchStatus.IN_PROGRESS.value,
                BatchRecord.handed_over_at.is_not(None),
            )
        )
        if batch is not None:
            batch.lease_expires_at = uow.clock.now() + self.lease
        return batch

    def orphans(self, uow: UnitOfWork) -> list[BatchRecord]:
        """Handed-over batches whose lease ran out with no report: their machine will never
        report (a crashed worker, a dead machine or link)."""
        now = uow.clock.now()
        running = records.batches(uow, status=BatchStatus.IN_PROGRESS.value)
        return [b for b in running if (end := self.lease_end(b)) is not None and end < now]

    def abandon_orphan(self, uow: UnitOfWork, actor: Actor, batch_id: str) -> BatchRecord:
        """The runner's sweep: close an orphaned batch (failed, machine freed, order
        re-plannable) and open a deviation for a person, audited, in one transaction. Refused
        when the batch is not (or no longer) an orphan."""
        batch = records.get(uow, batch_id)
        end = self.lease_end(batch)
        if batch.status != BatchStatus.IN_PROGRESS.value or end is None or end >= uow.clock.now():
            raise Refused(
                f"batch {batch.batch_number} is not an orphan (its machine may still report)",
                field="batch_id",
                code="not_orphaned",
            )
        reason = (
            f"orphaned: no report from machine {batch.machine_id} since the lease ended "
            f"{end:%Y-%m-%d %H:%M} UTC; closed by the runner, a person must investigate"
        )
        return self._abandon(uow, actor, batch, reason, kind="orphaned")

    def abandon(self, uow: UnitOfWork, actor: Actor, batch_id: str, *, reason: str) -> BatchRecord:
        """Close a batch whose machine will never report (a stopped worker, a dead machine):
        failed, with the reason on its record, its machine freed, its order re-plannable, and
        a deviation opened, in one transaction."""
        require_reason(reason, "abandoning a batch")
        batch = records.get(uow, batch_id)
        authorize(actor, Permission.BATCH_ABANDON, site_id=batch.site_id)
        if batch.status != BatchStatus.IN_PROGRESS.value:
            raise Refused(
                f"batch {batch.batch_number} is {batch.status}, not in progress",
                field="batch_id",
                code="not_in_progress",
            )
        return self._abandon(uow, actor, batch, f"abandoned: {reason.strip()}", kind="abandoned")

    def _abandon(
        self, uow: UnitOfWork, actor: Actor, batch: BatchRecord, reason: str, *, kind: str
    ) -> BatchRecord:
        for hook in self._abandon_hooks:  # e.g. the deviation, in this transaction
            hook(uow, actor, batch, kind, reason)
        return self._record_run(uow, actor, batch.id, DomainError(reason, code=kind))
