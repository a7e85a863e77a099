"""Collection appointments: starting material collected from the patient for one run.

A product whose family answers `collection(design)` (designs.registry.Collection) is made from
material collected from the patient. The run may start `to_start_s` after the collection at the
earliest; the product may be administered `to_administration_s` after the run ends. When the
order's job is created, the collection is booked against that machine slot (collection = run
start - to_start); a replan that retimes or moves the run keeps the collection date and moves
the run and the administration date. A person records a slipped date (`recorded_at`: the plan
must respect it), or a new collection after a failed run. The figure shown for each
appointment is the time from collection to administration.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from nearfab.common.ids import new_id
from nearfab.designs.registry import Collection
from nearfab.identity import Actor, AuditAction, audit
from nearfab.scheduling.enums import OPEN_COLLECTION_STATUSES, CollectionStatus
from nearfab.scheduling.models import CollectionAppointment, Job
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.orders import Order


def _snapshot(row: CollectionAppointment) -> dict[str, Any]:
    return {
        "status": row.status,
        "collection_at": row.collection_at,
        "job_id": row.job_id,
        "machine_id": row.machine_id,
        "run_start": row.run_start,
        "run_end": row.run_end,
        "administration_at": row.administration_at,
        "collected_at": row.collected_at,
        "chain_identifier": row.chain_identifier,
    }


def collection_to_administration_h(row: CollectionAppointment) -> float | None:
    """Hours from the collection to the target administration (None: no slot booked)."""
    if row.administration_at is None:
        return None
    return round((row.administration_at - row.collection_at).total_seconds() / 3600, 2)


class Collections:
    """The appointments table; every change audited in the caller's transaction."""

    def open_for(self, uow: UnitOfWork, order_id: str) -> CollectionAppointment | None:
        """The order's open appointment (requested or booked), if any."""
        return uow.session.scalar(
            select(CollectionAppointment)
            .where(
                CollectionAppointment.order_id == order_id,
                CollectionAppointment.status.in_([s.value for s in OPEN_COLLECTION_STATUSES]),
            )
            .order_by(CollectionAppointment.created_at.desc(), CollectionAppointment.id.desc())
            .limit(1)
        )

    def of_order(self, uow: UnitOfWork, order_id: str) -> list[CollectionAppointment]:
        """Every appointment of the order, newest first."""
        stmt = (
            select(CollectionAppointment)
            .where(CollectionAppointment.order_id == order_id)
            .order_by(CollectionAppointment.created_at.desc(), CollectionAppointment.id.desc())
        )
        return list(uow.session.scalars(stmt))

    def open_dates(self, uow: UnitOfWork) -> dict[str, datetime]:
        """Order id -> collection date of its open appointment (the newest, as `open_for`),
        read in one statement for the whole plan."""
        rows = uow.session.execute(
            select(CollectionAppointment.order_id, CollectionAppointment.collection_at)
            .where(CollectionAppointment.status.in_([s.value for s in OPEN_COLLECTION_STATUSES]))
            .order_by(CollectionAppointment.created_at, CollectionAppointment.id)
        )
        return {str(o): at for o, at in rows}  # the newest last, so it wins

    def _create(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order: Order,
        collection_at: datetime,
        *,
        status: CollectionStatus,
        reason: str,
        recorded: bool,
    ) -> CollectionAppointment:
        now = uow.clock.now()
        row = CollectionAppointment(
            id=new_id("col"),
            order_id=order.id,
            status=status.value,
            collection_at=collection_at,
            recorded_at=now if recorded else None,
            reason=reason,
            created_at=now,
            created_by=actor.user_id,
            updated_at=now,
        )
        uow.session.add(row)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "collection_appointment",
            row.id,
            new={"order_id": order.id, **_snapshot(row)},
            reason=reason,
            site_id=order.site_id,
        )
        return row

    def _update(
        self,
        uow: UnitOfWork,
        actor: Actor,
        row: CollectionAppointment,
        audit_site: str,
        reason: str,
        **changes: Any,
    ) -> CollectionAppointment:
        old = _snapshot(row)
        for key, value in changes.items():
            setattr(row, key, value)
        new = _snapshot(row)
        if new != old or "recorded_at" in changes:
            row.updated_at = uow.clock.now()
            uow.flush()
            audit(
                uow,
                actor,
                AuditAction.UPDATE,
                "collection_appointment",
                row.id,
                old=old,
                new=new,
                reason=reason,
                site_id=audit_site,
            )
        return row

    def book(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order: Order,
        job: Job,
        need: Collection,
        *,
        reason: str,
    ) -> CollectionAppointment:
        """Book the collection against the job's slot (a new appointment: the collection is the
        run start less the lead), or move the open one's run and administration date with it."""
        administration = job.planned_finish + timedelta(seconds=need.to_administration_s)
        slot = {
            "status": CollectionStatus.BOOKED.value,
            "job_id": job.id,
            "machine_id": job.machine_id,
            "site_id": job.site_id,
            "run_start": job.planned_start,
            "run_end": job.planned_finish,
            "administration_at": administration,
        }
        row = self.open_for(uow, order.id)
        if row is None:
            at = job.planned_start - timedelta(seconds=need.to_start_s)
            row = self._create(
                uow, actor, order, at, status=CollectionStatus.BOOKED, reason=reason, recorded=False
            )
        return self._update(uow, actor, row, order.site_id, reason, **slot)

    def free_slot(self, uow: UnitOfWork, actor: Actor, order: Order, *, reason: str) -> None:
        """The run's slot is given up (unscheduled, or no place in a new plan): the collection
        date stands, waiting for a new slot."""
        row = self.open_for(uow, order.id)
        if row is not None:
            self._update(
                uow,
                actor,
                row,
                order.site_id,
                reason,
                status=CollectionStatus.REQUESTED.value,
                job_id=None,
                machine_id=None,
                site_id=None,
                run_start=None,
                run_end=None,
                administration_at=None,
            )

    def close(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order: Order,
        status: CollectionStatus,
        *,
        reason: str,
    ) -> CollectionAppointment | None:
        row = self.open_for(uow, order.id)
        if row is not None:
            self._update(uow, actor, row, order.site_id, reason, status=status.value)
        return row

    def record(
        self, uow: UnitOfWork, actor: Actor, order: Order, collection_at: datetime, *, reason: str
    ) -> CollectionAppointment:
        """A person records the collection date: the open appointment's, or a new one."""
        row = self.open_for(uow, order.id)
        if row is None:
            return self._create(
                uow,
                actor,
                order,
                collection_at,
                status=CollectionStatus.REQUESTED,
                reason=reason,
                recorded=True,
            )
        return self._update(
            uow,
            actor,
            row,
            order.site_id,
            reason,
            collection_at=collection_at,
            recorded_at=uow.clock.now(),
        )

    def collected(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order: Order,
        collected_at: datetime,
        chain_identifier: str | None,
        *,
        reason: str,
    ) -> CollectionAppointment:
        """The collection happened: its date is the recorded one from now on (the plan
        respects it), with who recorded it and the chain identifier bound to it."""
        row = self.open_for(uow, order.id)
        if row is None:
            row = self._create(
                uow,
                actor,
                order,
                collected_at,
                status=CollectionStatus.REQUESTED,
                reason=reason,
                recorded=True,
            )
        row.collected_by = actor.user_id
        return self._update(
            uow,
            actor,
            row,
            order.site_id,
            reason,
            collection_at=collected_at,
            recorded_at=uow.clock.now(),
            collected_at=collected_at,
            chain_identifier=chain_identifier,
        )

    def collected_for(self, uow: UnitOfWork, order_id: str) -> CollectionAppointment | None:
        """The order's latest collection that happened: the open appointment's when it is
        recorded, else the newest closed one (a failed run's: its product may exist)."""
        current = self.open_for(uow, order_id)
        if current is not None and current.collected_at is not None:
            return current
        return uow.session.scalar(
            select(CollectionAppointment)
            .where(
                CollectionAppointment.order_id == order_id,
                CollectionAppointment.collected_at.is_not(None),
            )
            .order_by(CollectionAppointment.collected_at.desc(), CollectionAppointment.id.desc())
            .limit(1)
        )

    def fingerprint_rows(self, uow: UnitOfWork) -> list[list[str]]:
        """Dates recorded by a person (a planner's own bookings are the plan's output)."""
        stmt = (
            select(
                CollectionAppointment.order_id,
                CollectionAppointment.collection_at,
                CollectionAppointment.recorded_at,
                CollectionAppointment.status,
            )
            .where(CollectionAppointment.recorded_at.is_not(None))
            .order_by(CollectionAppointment.id)
        )
        return [[str(v) for v in r] for r in uow.session.execute(stmt)]


def appointment_dict(row: CollectionAppointment, machine: str | None) -> dict[str, Any]:
    """An appointment as the API and the CLI show it."""
    return {
        "id": row.id,
        "order_id": row.order_id,
        "status": row.status,
        "collection_at": row.collection_at.isoformat(),
        "machine_id": row.machine_id,
        "machine": machine,
        "site_id": row.site_id,
        "job_id": row.job_id,
        "run_start": row.run_start.isoformat() if row.run_start else None,
        "run_end": row.run_end.isoformat() if row.run_end else None,
        "administration_at": row.administration_at.isoformat() if row.administration_at else None,
        "collection_to_administration_h": collection_to_administration_h(row),
        "recorded_at": row.recorded_at.isoformat() if row.recorded_at else None,
        "reason": row.reason,
        "collected_at": row.collected_at.isoformat() if row.collected_at else None,
        "collected_by": row.collected_by,
        "chain_identifier": row.chain_identifier,
    }
