"""Scheduling use cases: find eligible machines for an order and plan its job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from nearfab.common.errors import NotFound, Refused, require_reason
from nearfab.common.ids import new_id
from nearfab.designs import FamilyRegistry
from nearfab.identity import Actor, AuditAction, Role, audit, audited_transition, require_role
from nearfab.masterfiles import MasterFile, MasterFileService
from nearfab.materials import MaterialService
from nearfab.network import Machine, MachineStatus, NetworkService, SiteStatus
from nearfab.orders import Order, OrderService, OrderStatus
from nearfab.scheduling.enums import JOB_TRANSITIONS, OPEN_JOB_STATUSES, JobStatus
from nearfab.scheduling.logic import Candidate, earliest_finish
from nearfab.scheduling.models import Job
from nearfab.uow import UnitOfWork

# The planning rule behind a small interface, so an optimising planner can replace it.
Planner = Callable[[list[Candidate]], Candidate | None]


@dataclass(frozen=True)
class Eligibility:
    candidates: list[Candidate]
    excluded: dict[str, str]  # machine name -> why not


class SchedulingService:
    def __init__(
        self,
        network: NetworkService,
        master_files: MasterFileService,
        materials: MaterialService,
        orders: OrderService,
        families: FamilyRegistry,
        planner: Planner = earliest_finish,
    ) -> None:
        self._network = network
        self._master_files = master_files
        self._materials = materials
        self._orders = orders
        self._families = families
        self._planner = planner

    def eligibility(self, uow: UnitOfWork, order: Order) -> Eligibility:
        """Every machine that could make this order now, and why each other one cannot."""
        mf = self._master_files.get(uow, order.master_file_id)
        family = self._families.get(mf.product_family)
        design = order.design or {}
        needed_g = family.material_needed_g(design)
        duration = family.duration_s(design)
        now = uow.clock.now()
        candidates: list[Candidate] = []
        excluded: dict[str, str] = {}
        for machine in self._network.list_machines(uow):
            why = self._why_not(uow, machine, mf, family.machine_types)
            lot = None
            if why is None:
                lot = self._materials.usable_lot(
                    uow, site_id=machine.site_id, material_code=mf.material_code, needed_g=needed_g
                )
                if lot is None:
                    why = f"no approved lot of {mf.material_code} with {needed_g:.2f} g at its site"
            if why is not None or lot is None:
                excluded[machine.name] = why or "unavailable"
                continue
            candidates.append(
                Candidate(
                    machine_id=machine.id,
                    machine_name=machine.name,
                    site_id=machine.site_id,
                    material_lot_id=lot.id,
                    available_from=max(now, self._busy_until(uow, machine.id)),
                    duration_s=duration,
                )
            )
        return Eligibility(candidates, excluded)

    def _why_not(
        self, uow: UnitOfWork, machine: Machine, mf: MasterFile, machine_types: tuple[str, ...]
    ) -> str | None:
        site = self._network.get_site(uow, machine.site_id)
        if machine.machine_type not in machine_types:
            return f"a {machine.machine_type} cannot make {mf.product_family}"
        if site.id not in mf.allowed_site_ids:
            return f"site {site.code} is not listed in master file {mf.code}"
        if site.status != SiteStatus.ACTIVE.value:
            return f"site {site.code} is {site.status}"
        if machine.status in (MachineStatus.MAINTENANCE.value, MachineStatus.RETIRED.value):
            return f"machine is {machine.status}"
        if not self._network.is_qualified(uow, machine.id, mf.code):
            return f"not qualified for {mf.code}"
        return None

    def _busy_until(self, uow: UnitOfWork, machine_id: str) -> datetime:
        latest = uow.session.scalar(
            select(func.max(Job.planned_finish)).where(
                Job.machine_id == machine_id, Job.status.in_([s.value for s in OPEN_JOB_STATUSES])
            )
        )
        return latest or uow.clock.now()

    def schedule(self, uow: UnitOfWork, actor: Actor, order_id: str) -> Job:
        """Plan a designed order on the eligible machine with the earliest finish."""
        require_role(actor, Role.PLANNER, Role.PHARMACIST, action="scheduling an order")
        order = self._orders.get(uow, order_id)
        if order.status != OrderStatus.DESIGNED.value:
            raise Refused(
                f"order {order.id} is {order.status}; only designed orders are planned",
                field="order_id",
                code="order_not_designed",
            )
        mf = self._master_files.get(uow, order.master_file_id)
        if mf.status != "effective":
            raise Refused(
                f"master file {mf.code} v{mf.version} is {mf.status}, not effective",
                field="master_file",
                code="no_effective_master_file",
            )
        elig = self.eligibility(uow, order)
        choice = self._planner(elig.candidates)
        if choice is None:
            reasons = "; ".join(f"{k}: {v}" for k, v in sorted(elig.excluded.items()))
            raise Refused(
                f"no eligible machine for order {order.id} ({reasons or 'no machines'})",
                field="machine",
                code="no_eligible_machine",
            )
        job = Job(
            id=new_id("job"),
            order_id=order.id,
            machine_id=choice.machine_id,
            site_id=choice.site_id,
            material_lot_id=choice.material_lot_id,
            planned_start=choice.available_from,
            planned_finish=choice.finish,
            status=JobStatus.PLANNED.value,
            ticket=None,
            ticket_hash=None,
            created_at=uow.clock.now(),
        )
        uow.session.add(job)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "job",
            job.id,
            new={
                "order_id": order.id,
                "machine_id": job.machine_id,
                "site_id": job.site_id,
                "material_lot_id": job.material_lot_id,
                "planned_start": job.planned_start,
                "planned_finish": job.planned_finish,
            },
            site_id=job.site_id,
        )
        self._orders.transition(
            uow,
            actor,
            order,
            OrderStatus.SCHEDULED,
            reason=f"planned on {choice.machine_name}",
            extra={"job_id": job.id},
        )
        uow.commit()
        return job

    def _waiting_job(self, uow: UnitOfWork, order: Order) -> Job:
        waiting = self.jobs(uow, JobStatus.PLANNED, JobStatus.TICKET_ISSUED, order_id=order.id)
        if order.status != OrderStatus.SCHEDULED.value or len(waiting) != 1:
            raise Refused(
                f"order {order.id} is {order.status}; only a scheduled order whose job has not "
                "started can be taken off its machine",
                field="order_id",
                code="not_scheduled",
            )
        return waiting[0]

    def unschedule(self, uow: UnitOfWork, actor: Actor, order_id: str, *, reason: str) -> Order:
        """Take a scheduled order off its machine before it starts: the job is cancelled and the
        order is designed again (the runner will plan it anew)."""
        require_role(actor, Role.PLANNER, Role.PHARMACIST, action="unscheduling an order")
        require_reason(reason, "unscheduling")
        order = self._orders.get(uow, order_id)
        job = self._waiting_job(uow, order)
        self.transition(uow, actor, job, JobStatus.CANCELLED, reason=reason)
        self._orders.transition(
            uow, actor, order, OrderStatus.DESIGNED, reason=reason, extra={"cancelled_job": job.id}
        )
        uow.commit()
        return order

    def cancel_order(self, uow: UnitOfWork, actor: Actor, order_id: str, *, reason: str) -> Order:
        """Cancel an order that has not started; a scheduled one takes its job with it, in one
        transaction, so the runner cannot plan it again in between."""
        order = self._orders.get(uow, order_id)
        if order.status != OrderStatus.SCHEDULED.value:
            return self._orders.cancel(uow, actor, order_id, reason=reason)
        require_role(
            actor, Role.CLINICIAN, Role.PHARMACIST, Role.ADMIN, action="cancelling an order"
        )
        require_reason(reason, "cancelling an order")
        job = self._waiting_job(uow, order)
        self.transition(uow, actor, job, JobStatus.CANCELLED, reason=reason)
        self._orders.transition(
            uow, actor, order, OrderStatus.CANCELLED, reason=reason, extra={"cancelled_job": job.id}
        )
        uow.commit()
        return order

    def transition(
        self, uow: UnitOfWork, actor: Actor, job: Job, target: JobStatus, *, reason: str
    ) -> None:
        """Move a job on, audited in the caller's transaction."""
        audited_transition(
            uow,
            actor,
            job,
            target,
            JOB_TRANSITIONS,
            entity_type="job",
            label=f"job {job.id}",
            reason=reason,
            site_id=job.site_id,
        )

    def get(self, uow: UnitOfWork, job_id: str) -> Job:
        job = uow.session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}", field="job_id")
        return job

    def jobs(self, uow: UnitOfWork, *statuses: JobStatus, order_id: str | None = None) -> list[Job]:
        stmt = select(Job).order_by(Job.planned_start, Job.id)
        if statuses:
            stmt = stmt.where(Job.status.in_([s.value for s in statuses]))
        if order_id:
            stmt = stmt.where(Job.order_id == order_id)
        return list(uow.session.scalars(stmt))
