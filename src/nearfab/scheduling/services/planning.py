"""Network planning use cases: make, store and apply plan versions; replan on events."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from nearfab.common.errors import NotFound, ValidationFailed, require_reason
from nearfab.common.ids import new_id
from nearfab.identity import Actor, AuditAction, Permission, audit, authorize
from nearfab.network import reads as network_reads
from nearfab.orders import OrderService, OrderStatus
from nearfab.scheduling.enums import JobStatus, PlanTrigger, Priority
from nearfab.scheduling.events import PlanChanged
from nearfab.scheduling.logic import diff_plans, explain, solve
from nearfab.scheduling.models import (
    MachineDowntime,
    OperatorShift,
    OrderPlanning,
    PlanVersion,
    TransportTime,
)
from nearfab.scheduling.services.instance import (
    Context,
    InstanceBuilder,
    PlanningSettings,
    fingerprint,
)
from nearfab.uow import UnitOfWork


def _key(a: dict[str, Any]) -> tuple[str, str]:
    return (str(a["machine_id"]), str(a["start"]))


class NetworkPlanning:
    """Plan versions: every one stored with what changed and why, audited when made."""

    def __init__(
        self, builder: InstanceBuilder, orders: OrderService, settings: PlanningSettings
    ) -> None:
        self.builder = builder
        self.orders = orders
        self.settings = settings

    # --- reading --------------------------------------------------------------------------------
    def current(self, uow: UnitOfWork) -> PlanVersion | None:
        return uow.session.scalar(select(PlanVersion).order_by(PlanVersion.number.desc()).limit(1))

    def version(self, uow: UnitOfWork, number: int) -> PlanVersion:
        row = uow.session.scalar(select(PlanVersion).where(PlanVersion.number == number))
        if row is None:
            raise NotFound(f"no plan version {number}", field="version")
        return row

    def history(self, uow: UnitOfWork, limit: int = 50) -> list[PlanVersion]:
        stmt = select(PlanVersion).order_by(PlanVersion.number.desc()).limit(limit)
        return list(uow.session.scalars(stmt))

    def is_fresh(self, uow: UnitOfWork, plan: PlanVersion | None) -> bool:
        """The plan was made from the inputs as they are now, and not too long ago."""
        if plan is None:
            return False
        age = uow.clock.now() - plan.created_at
        if age > timedelta(minutes=self.settings.max_plan_age_min):
            return False
        digest, inputs = fingerprint(uow, self.orders)
        planned = set(plan.inputs.get("orders", []))
        return digest == plan.fingerprint and set(inputs["orders"]) <= planned

    # --- making a plan --------------------------------------------------------------------------
    def plan(
        self,
        uow: UnitOfWork,
        actor: Actor,
        scheduling: Any,
        *,
        trigger: PlanTrigger | str = PlanTrigger.MANUAL,
        reason: str = "planned on request",
        horizon_h: float | None = None,
        time_limit_s: float | None = None,
    ) -> PlanVersion:
        """Plan every designed order and every job not started yet; move, retime or take off
        jobs as the plan says (audited); store the plan version. Does not commit."""
        authorize(actor, Permission.PLAN_RUN)
        settings = self.settings
        if horizon_h is not None:
            if not 1 <= horizon_h <= 24 * 60:
                raise ValidationFailed("horizon must be 1 to 1440 hours", field="horizon")
            settings = replace(settings, horizon_h=horizon_h)
        limit = settings.time_limit_s if time_limit_s is None else time_limit_s
        if not 0 <= limit <= 600:
            raise ValidationFailed("time limit must be 0 to 600 s", field="time_limit")
        current = self.current(uow)
        old = {a["order_id"]: a for a in (current.assignments if current else [])}
        previous = {k: str(a["machine_id"]) for k, a in old.items() if not a.get("frozen")}
        digest, inputs = fingerprint(uow, self.orders)
        instance, ctx = self.builder.build(uow, settings, previous)
        result = solve(instance, time_limit_s=limit, workers=settings.workers)
        why = {e.job_id: e for e in explain(instance, result.schedule)}
        number = (current.number if current else 0) + 1
        label = f"plan v{number} ({trigger}): {reason}"
        job_ids = self._apply(uow, actor, scheduling, ctx, result.schedule.placements, label)
        assignments = self._assignments(ctx, result.schedule.placements, why, job_ids)
        new_map = {a["order_id"]: _key(a) for a in assignments if not a.get("frozen")}
        old_map = {k: _key(a) for k, a in old.items() if not a.get("frozen")}
        version = PlanVersion(
            id=new_id("pln"),
            number=number,
            created_at=uow.clock.now(),
            created_by=actor.user_id,
            trigger=str(trigger),
            reason=reason,
            solver=result.solver,
            status=result.status,
            objective=result.score.objective,
            weighted_tardiness=result.score.weighted_tardiness,
            bound=result.bound,
            gap=round(result.gap, 6),
            solve_s=round(result.wall_s, 3),
            fingerprint=digest,
            assignments=assignments,
            explanations=[e.to_dict() for e in why.values()],
            changes=diff_plans(old_map, new_map),
            inputs=inputs,
        )
        uow.session.add(version)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "plan_version",
            version.id,
            new={
                "number": number,
                "trigger": str(trigger),
                "solver": result.solver,
                "status": result.status,
                "objective": result.score.objective,
                "late": result.score.late,
                "unplaced": result.score.unplaced,
                "changes": len(version.changes),
            },
            reason=reason,
        )
        uow.emit(PlanChanged(version.id, number, str(trigger)))
        return version

    def _apply(
        self,
        uow: UnitOfWork,
        actor: Actor,
        scheduling: Any,
        ctx: Context,
        placements: dict[str, Any],
        label: str,
    ) -> dict[str, str]:
        """Bring the jobs not started yet in line with the plan; the job of each placed order."""
        job_ids: dict[str, str] = {}
        for order_id, job in sorted(ctx.jobs.items()):
            p = placements.get(order_id)
            order = ctx.orders[order_id]
            if p is not None and (p.machine_id, p.lot_id) == (job.machine_id, job.material_lot_id):
                start = ctx.at(p.start)
                if start != job.planned_start:
                    old = {"planned_start": job.planned_start, "planned_finish": job.planned_finish}
                    job.planned_start = start
                    job.planned_finish = start + timedelta(seconds=ctx.durations_s[order_id])
                    audit(
                        uow,
                        actor,
                        AuditAction.UPDATE,
                        "job",
                        job.id,
                        old=old,
                        new={
                            "planned_start": job.planned_start,
                            "planned_finish": job.planned_finish,
                        },
                        reason=label,
                        site_id=job.site_id,
                    )
                    scheduling.book_collection(uow, actor, order, job, reason=label)
                job_ids[order_id] = job.id
                continue
            # another machine or lot (a signed ticket names both), or no place: a new job
            scheduling.transition(uow, actor, job, JobStatus.CANCELLED, reason=label)
            self.orders.transition(
                uow,
                actor,
                order,
                OrderStatus.DESIGNED,
                reason=label,
                extra={"cancelled_job": job.id},
            )
            if p is None and order_id in ctx.collections:
                scheduling.collections.free_slot(uow, actor, order, reason=label)
            if p is not None:
                machine = ctx.machines[p.machine_id]
                job_ids[order_id] = scheduling.create_job(
                    uow,
                    actor,
                    order,
                    machine.id,
                    machine.site_id,
                    p.lot_id,
                    ctx.at(p.start),
                    ctx.durations_s[order_id],
                    reason=f"{label}; moved to {machine.name}",
                ).id
        return job_ids

    def _assignments(
        self,
        ctx: Context,
        placements: dict[str, Any],
        why: dict[str, Any],
        job_ids: dict[str, str],
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for job in ctx.running:
            machine = ctx.machines.get(job.machine_id)
            out.append(
                {
                    "order_id": job.order_id,
                    "job_id": job.id,
                    "machine_id": job.machine_id,
                    "machine": machine.name if machine else job.machine_id,
                    "site_id": job.site_id,
                    "site": ctx.site_codes.get(job.site_id, ""),
                    "lot_id": job.material_lot_id,
                    "start": job.planned_start.isoformat(),
                    "end": job.planned_finish.isoformat(),
                    "frozen": True,
                    "late_min": 0,
                    "priority": "",
                    "medication": "",
                    "due": None,
                    "transport_min": 0,
                }
            )
        for order_id, order in ctx.orders.items():
            p = placements.get(order_id)
            if p is None:
                continue
            machine = ctx.machines[p.machine_id]
            start = ctx.at(p.start)
            end = start + timedelta(seconds=ctx.durations_s[order_id])
            explanation = why.get(order_id)
            out.append(
                {
                    "order_id": order_id,
                    "job_id": job_ids.get(order_id),  # None until the order's job exists
                    "machine_id": machine.id,
                    "machine": machine.name,
                    "site_id": machine.site_id,
                    "site": ctx.site_codes.get(machine.site_id, ""),
                    "lot_id": p.lot_id,
                    "start": start.isoformat(),
                    "end": end.isoformat(),
                    "frozen": False,
                    "due": order.need_by.isoformat(),
                    "transport_min": p.transport,
                    "late_min": explanation.minutes_late if explanation else 0,
                    "priority": ctx.priorities[order_id],
                    "medication": order.medication,
                    **_collection_keys(ctx, order_id, start, end),
                }
            )
        return out

    # --- inputs a planner records ---------------------------------------------------------------
    def set_priority(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order_id: str,
        priority: str,
        deliver_to: str | None = None,
        *,
        reason: str | None = None,
    ) -> OrderPlanning:
        """An order's planning priority (routine or urgent) and where it is delivered; the
        reason, when given, is kept on the audit row."""
        if priority not in {p.value for p in Priority}:
            raise ValidationFailed(
                f"priority must be routine or urgent, not {priority!r}", field="priority"
            )
        order = self.orders.get(uow, order_id)
        authorize(actor, Permission.ORDER_PRIORITY, site_id=order.site_id)
        row = uow.session.get(OrderPlanning, order.id)
        old = {"priority": row.priority, "deliver_to": row.deliver_to} if row else None
        if row is None:
            row = OrderPlanning(
                order_id=order.id,
                priority=priority,
                deliver_to=deliver_to,
                updated_at=uow.clock.now(),
            )
            uow.session.add(row)
        row.priority, row.updated_at = priority, uow.clock.now()
        if deliver_to is not None:
            row.deliver_to = deliver_to
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            "order_planning",
            order.id,
            old=old,
            new={"priority": row.priority, "deliver_to": row.deliver_to},
            reason=reason,
        )
        return row

    def add_downtime(
        self,
        uow: UnitOfWork,
        actor: Actor,
        machine_id: str,
        starts_at: datetime,
        ends_at: datetime,
        *,
        reason: str,
    ) -> MachineDowntime:
        authorize(actor, Permission.DOWNTIME_BOOK)  # the role first: no hints to others
        machine = network_reads.machine(uow.session, machine_id)
        authorize(actor, Permission.DOWNTIME_BOOK, site_id=machine.site_id)  # the machine's site
        require_reason(reason, "machine downtime")
        if ends_at <= starts_at:
            raise ValidationFailed("downtime must end after it starts", field="ends_at")
        row = MachineDowntime(
            machine_id=machine_id,
            starts_at=starts_at,
            ends_at=ends_at,
            reason=reason,
            created_by=actor.user_id,
        )
        uow.session.add(row)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "machine_downtime",
            str(row.id),
            new={"machine_id": machine_id, "starts_at": starts_at, "ends_at": ends_at},
            reason=reason,
        )
        return row

    def add_shift(
        self,
        uow: UnitOfWork,
        actor: Actor,
        user_id: str,
        site_id: str,
        starts_at: datetime,
        ends_at: datetime,
    ) -> OperatorShift:
        authorize(actor, Permission.SHIFT_RECORD, site_id=site_id)
        if ends_at <= starts_at:
            raise ValidationFailed("a shift must end after it starts", field="ends_at")
        row = OperatorShift(user_id=user_id, site_id=site_id, starts_at=starts_at, ends_at=ends_at)
        uow.session.add(row)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "operator_shift",
            str(row.id),
            new={
                "user_id": user_id,
                "site_id": site_id,
                "starts_at": starts_at,
                "ends_at": ends_at,
            },
        )
        return row

    def set_transport(
        self, uow: UnitOfWork, actor: Actor, site_id: str, destination: str, minutes: int
    ) -> TransportTime:
        authorize(actor, Permission.TRANSPORT_RECORD, site_id=site_id)  # the sending site's
        if minutes < 0:
            raise ValidationFailed("minutes must be 0 or more", field="minutes")
        row = uow.session.scalar(
            select(TransportTime).where(
                TransportTime.site_id == site_id, TransportTime.destination == destination
            )
        )
        old = {"minutes": row.minutes} if row else None
        if row is None:
            row = TransportTime(site_id=site_id, destination=destination, minutes=minutes)
            uow.session.add(row)
        row.minutes = minutes
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            "transport_time",
            f"{site_id}->{destination}",
            old=old,
            new={"minutes": minutes},
        )
        return row


def _collection_keys(ctx: Context, order_id: str, start: datetime, end: datetime) -> dict[str, Any]:
    """For a product made from the patient's own material: the collection (the open
    appointment's date, or the latest that feeds this run), the earliest administration, and
    the hours between them. Nothing for other products (their assignments stay as they were)."""
    need = ctx.collections.get(order_id)
    if need is None:
        return {}
    collection = ctx.collection_at.get(order_id) or start - timedelta(seconds=need.to_start_s)
    administration = end + timedelta(seconds=need.to_administration_s)
    return {
        "collection_at": collection.isoformat(),
        "administration_at": administration.isoformat(),
        "collection_to_administration_h": round(
            (administration - collection).total_seconds() / 3600, 2
        ),
    }


def infer_trigger(before: dict[str, Any], after: dict[str, Any]) -> tuple[PlanTrigger, str]:
    """Name what changed between two snapshots of the plan's inputs, most serious first."""

    def changed(kind: str, bad: set[str]) -> list[str]:
        old, new = before.get(kind, {}), after.get(kind, {})
        return sorted(k for k, v in new.items() if v in bad and old.get(k) not in bad)

    if down := changed("machines", {"down"}):
        return PlanTrigger.MACHINE_FAILURE, f"machine(s) out of service: {', '.join(down)}"
    if paused := changed("sites", {"paused", "ceased", "regulator_suspended"}):
        return PlanTrigger.SITE_PAUSE, f"site(s) not active: {', '.join(paused)}"
    if recalled := changed("lots", {"recalled", "on_hold", "expired", "rejected"}):
        return PlanTrigger.MATERIAL_RECALL, f"lot(s) no longer usable: {', '.join(recalled)}"
    old_dates, new_dates = before.get("collections", {}), after.get("collections", {})
    if moved := sorted(k for k, v in new_dates.items() if old_dates.get(k) != v):
        return PlanTrigger.COLLECTION_CHANGED, f"collection date(s) recorded: {', '.join(moved)}"
    if urgent := changed("priorities", {"urgent"}):
        return PlanTrigger.URGENT_ORDER, f"urgent order(s): {', '.join(urgent)}"
    added = sorted(set(after.get("orders", [])) - set(before.get("orders", [])))
    if added:
        return PlanTrigger.NEW_ORDER, f"new order(s): {', '.join(added)}"
    return PlanTrigger.INPUTS_CHANGED, "planning inputs changed"
