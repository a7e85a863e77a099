"""Read the network into a planning instance: orders to plan, eligible machines, calendars."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from nearfab.designs import FamilyRegistry
from nearfab.designs.registry import Collection, collection_of
from nearfab.masterfiles import MasterFileService
from nearfab.materials import LotStatus, MaterialService
from nearfab.materials import reads as materials_reads
from nearfab.network import MachineStatus, NetworkService, SiteStatus
from nearfab.network import reads as network_reads
from nearfab.orders import OrderService, OrderStatus
from nearfab.scheduling.enums import OPEN_COLLECTION_STATUSES, JobStatus, Priority
from nearfab.scheduling.kit import lot_filter
from nearfab.scheduling.logic import (
    ROUTINE_WEIGHT,
    URGENT_WEIGHT,
    Exclusion,
    Instance,
    Option,
    PlanJob,
    PlanMachine,
    Range,
    allowed_starts,
    intersect,
    subtract,
)
from nearfab.scheduling.models import (
    Job,
    MachineDowntime,
    OperatorShift,
    OrderPlanning,
    TransportTime,
)
from nearfab.scheduling.services.collections import Collections
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.masterfiles import MasterFile
    from nearfab.materials import MaterialLot
    from nearfab.network import Machine
    from nearfab.orders import Order


@dataclass(frozen=True)
class PlanningSettings:
    horizon_h: float = 72.0
    time_limit_s: float = 2.0
    workers: int = 2
    changeover_min: int = 15  # between two products on one machine
    cleaning_min: int = 5  # after every job
    move_penalty: int = 30
    max_plan_age_min: float = 30.0  # an older plan is made again before it is used
    collection_notice_h: float = 24.0  # earliest a new collection appointment can be booked


OPEN = {s.value for s in OPEN_COLLECTION_STATUSES}

# A long run (days) gets a horizon of its own: room for it after its earliest start, and for
# two more like it on the same machine (the 72 h default is for runs of minutes or hours).
LONG_RUN_SLOTS = 3


@dataclass
class Context:
    """What the instance was built from (to turn minutes back into times and rows)."""

    origin: datetime
    orders: dict[str, Order] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)  # order id -> open, not running job
    running: list[Job] = field(default_factory=list)
    machines: dict[str, Machine] = field(default_factory=dict)
    site_codes: dict[str, str] = field(default_factory=dict)
    durations_s: dict[str, float] = field(default_factory=dict)
    priorities: dict[str, str] = field(default_factory=dict)
    collections: dict[str, Collection] = field(default_factory=dict)  # orders that need one
    collection_at: dict[str, datetime] = field(default_factory=dict)  # open appointments' dates

    def at(self, minutes: int) -> datetime:
        return self.origin + timedelta(minutes=minutes)

    def minutes(self, when: datetime) -> int:
        return math.floor((when - self.origin).total_seconds() / 60)

    def minutes_up(self, when: datetime) -> int:
        return math.ceil((when - self.origin).total_seconds() / 60)


def scope(uow: UnitOfWork, orders: OrderService) -> tuple[list[Order], dict[str, Job], list[Job]]:
    """Orders in the plan: designed ones, and scheduled ones whose job has not started."""
    designed = orders.by_status(uow, OrderStatus.DESIGNED)
    waiting = (JobStatus.PLANNED.value, JobStatus.TICKET_ISSUED.value)
    open_jobs = list(
        uow.session.scalars(
            select(Job).where(Job.status.in_([*waiting, JobStatus.RUNNING.value])).order_by(Job.id)
        )
    )
    jobs = {j.order_id: j for j in open_jobs if j.status in waiting}
    scheduled = [orders.get(uow, oid) for oid in sorted(jobs)]
    running = [j for j in open_jobs if j.status == JobStatus.RUNNING.value]
    return designed + scheduled, jobs, running


def fingerprint(uow: UnitOfWork, orders: OrderService) -> tuple[str, dict[str, Any]]:
    """A hash of the inputs whose change can spoil a plan (machines, sites, lots,
    qualifications, training, calendars, transport, priorities), and a snapshot of the few a
    person would name as the trigger of a replan. Orders leaving the plan (started, cancelled)
    do not spoil it; an order joining it does (checked against `inputs["orders"]`)."""
    in_scope, _, _ = scope(uow, orders)
    s = uow.session

    def rows(stmt: Any) -> list[list[str]]:
        return [[str(v) for v in r] for r in s.execute(stmt)]

    # the owners' read views: one statement each, as before
    machine = network_reads.machine_view()
    site = network_reads.site_view()
    lot = materials_reads.lot_view()
    qual = network_reads.qualification_view()
    trained = network_reads.training_view()
    machines = {
        r[0]: ("down" if r[1] in ("maintenance", "retired") else "up")
        for r in rows(select(machine.c.id, machine.c.status))
    }
    recorded = Collections().fingerprint_rows(uow)
    inputs = {
        "machines": machines,
        "sites": {r[0]: r[1] for r in rows(select(site.c.id, site.c.status))},
        "lots": {r[0]: r[1] for r in rows(select(lot.c.id, lot.c.status))},
        "priorities": {
            r[0]: r[1] for r in rows(select(OrderPlanning.order_id, OrderPlanning.priority))
        },
        "orders": sorted(o.id for o in in_scope),
        # collection dates a person recorded (order id -> "date @ when recorded")
        "collections": {r[0]: f"{r[1]} @ {r[2]}" for r in recorded if r[3] in OPEN},
    }
    spoilers = {
        **{k: v for k, v in inputs.items() if k != "orders"},
        "expiry": rows(select(lot.c.id, lot.c.expiry).order_by(lot.c.id)),
        "qualifications": rows(
            select(
                qual.c.machine_id, qual.c.master_file_code, qual.c.revoked, qual.c.valid_until
            ).order_by(qual.c.id)
        ),
        "training": rows(
            select(trained.c.user_id, trained.c.master_file_code, trained.c.valid_until).order_by(
                trained.c.id
            )
        ),
        "downtime": rows(
            select(
                MachineDowntime.machine_id, MachineDowntime.starts_at, MachineDowntime.ends_at
            ).order_by(MachineDowntime.id)
        ),
        "shifts": rows(
            select(
                OperatorShift.user_id,
                OperatorShift.site_id,
                OperatorShift.starts_at,
                OperatorShift.ends_at,
            ).order_by(OperatorShift.id)
        ),
        "transport": rows(
            select(
                TransportTime.site_id, TransportTime.destination, TransportTime.minutes
            ).order_by(TransportTime.id)
        ),
        "deliver_to": rows(select(OrderPlanning.order_id, OrderPlanning.deliver_to)),
        "collections": recorded,
    }
    digest = hashlib.sha256(json.dumps(spoilers, sort_keys=True, default=str).encode())
    return digest.hexdigest(), inputs


@dataclass(frozen=True)
class _Prepared:
    order: Order
    mf: MasterFile
    family: Any
    grams: float
    duration_s: float
    processing: int
    release: int  # minutes from now before which the run cannot start
    due: int


class InstanceBuilder:
    """Applies every eligibility rule to every (order, machine) pair."""

    def __init__(
        self,
        network: NetworkService,
        master_files: MasterFileService,
        materials: MaterialService,
        orders: OrderService,
        families: FamilyRegistry,
    ) -> None:
        self._network = network
        self._master_files = master_files
        self._materials = materials
        self._orders = orders
        self._families = families

    def build(
        self, uow: UnitOfWork, settings: PlanningSettings, previous: dict[str, str] | None = None
    ) -> tuple[Instance, Context]:
        """`previous`: order id -> machine id in the current plan (moves from it are penalised)."""
        now = uow.clock.now()
        ctx = Context(origin=now)
        in_scope, ctx.jobs, ctx.running = scope(uow, self._orders)
        # a site node plans its own site's orders on its own machines (common/node.py)
        node = self._network.node
        in_scope = [o for o in in_scope if node.works_for(o.site_id)]
        ctx.running = [j for j in ctx.running if node.works_for(j.site_id)]
        ctx.collection_at = Collections().open_dates(uow)
        prepared = [self._prepare(uow, ctx, settings, order) for order in in_scope]
        horizon = max(
            [int(settings.horizon_h * 60)]
            + [
                p.release + LONG_RUN_SLOTS * (p.processing + settings.cleaning_min)
                for p in prepared
            ]
        )
        machines = [m for m in self._network.list_machines(uow) if node.works_for(m.site_id)]
        ctx.machines = {m.id: m for m in machines}
        sites = {s.id: s for s in self._network.list_sites(uow)}
        ctx.site_codes = {sid: s.code for sid, s in sites.items()}
        blocks: dict[str, list[Range]] = {m.id: [] for m in machines}
        for d in uow.session.scalars(select(MachineDowntime)):
            if d.machine_id in blocks:
                blocks[d.machine_id].append((ctx.minutes(d.starts_at), ctx.minutes(d.ends_at) + 1))
        for j in ctx.running:  # started jobs are frozen: their machine is taken until they end
            if j.machine_id in blocks:
                blocks[j.machine_id].append((0, max(1, ctx.minutes(j.planned_finish) + 1)))
        windows = {m.id: subtract([(0, horizon)], blocks[m.id]) for m in machines}
        shifts: dict[str, list[OperatorShift]] = {}
        for sh in uow.session.scalars(select(OperatorShift)):
            shifts.setdefault(sh.site_id, []).append(sh)
        transport = {
            (t.site_id, t.destination): t.minutes
            for t in uow.session.scalars(select(TransportTime))
        }
        planning = {p.order_id: p for p in uow.session.scalars(select(OrderPlanning))}
        budget: dict[tuple[str, str], float] = {}
        today = now.date()
        for held in self._materials.list_lots(uow):
            if held.status == LotStatus.APPROVED.value and held.expiry > today:
                key = (held.site_id, held.material_code)
                budget[key] = budget.get(key, 0.0) + held.quantity_g
        trained_cache: dict[tuple[str, str], list[str]] = {}
        jobs: list[PlanJob] = []
        for prep in prepared:
            order, mf, family, grams = prep.order, prep.mf, prep.family, prep.grams
            duration_s, processing, release = prep.duration_s, prep.processing, prep.release
            occupy = processing + settings.cleaning_min
            plan_row = planning.get(order.id)
            priority = plan_row.priority if plan_row else Priority.ROUTINE.value
            ctx.orders[order.id] = order
            ctx.durations_s[order.id] = duration_s
            ctx.priorities[order.id] = priority
            options: list[Option] = []
            excluded: list[Exclusion] = []
            job = ctx.jobs.get(order.id)
            for machine in machines:
                site = sites[machine.site_id]
                code, why = self.why_not(
                    uow, machine, site.code, site.status, mf, family.machine_types
                )
                lot: MaterialLot | None = None
                if why is None:
                    key = (site.id, mf.code)
                    if key not in trained_cache:
                        trained_cache[key] = [
                            u.id
                            for u in self._network.operators_at(uow, site.id)
                            if self._network.is_trained(uow, u.id, mf.code)
                        ]
                    if not trained_cache[key]:
                        code, why = (
                            "no_trained_operator",
                            f"no operator at {site.code} is trained on {mf.code}",
                        )
                if why is None:
                    lot = self._materials.usable_lot(
                        uow,
                        site_id=site.id,
                        material_code=mf.material_code,
                        needed_g=grams,
                        accept=lot_filter(family, order.design or {}),
                    )
                    if lot is None:
                        code = "material_missing"
                        why = (
                            f"no approved lot of {mf.material_code} with {grams:.2f} g at its site"
                        )
                if why is not None or lot is None:
                    excluded.append(
                        Exclusion(machine.name, code or "no_qualified_machine", why or "")
                    )
                    continue
                staffed = self._staffed(ctx, shifts.get(site.id), trained_cache[(site.id, mf.code)])
                available = (
                    windows[machine.id]
                    if staffed is None
                    else intersect(windows[machine.id], staffed)
                )
                expiry_at = datetime.combine(lot.expiry, time.min, tzinfo=UTC)
                starts = allowed_starts(
                    available,
                    release=release,
                    occupy=occupy,
                    processing=processing,
                    latest_end=ctx.minutes(expiry_at),
                )
                if not starts:
                    unexpiring = allowed_starts(
                        available, release=release, occupy=occupy, processing=processing
                    )
                    if unexpiring:
                        excluded.append(
                            Exclusion(
                                machine.name,
                                "material_expiring",
                                f"lot {lot.lot_number} expires on {lot.expiry}",
                            )
                        )
                    else:
                        excluded.append(
                            Exclusion(
                                machine.name,
                                "calendar",
                                "no free time (downtime, shifts) within the horizon",
                            )
                        )
                    continue
                destination = plan_row.deliver_to if plan_row else None
                minutes = transport.get((site.id, destination), 0) if destination else 0
                options.append(Option(machine.id, starts, minutes, lot.id))
            if job is not None and job.status == JobStatus.TICKET_ISSUED.value:
                # its signed ticket names the machine: it stays there while it can
                pinned = [o for o in options if o.machine_id == job.machine_id]
                options = pinned or options
            current = job.machine_id if job is not None else (previous or {}).get(order.id)
            jobs.append(
                PlanJob(
                    id=order.id,
                    product=mf.code,
                    processing=processing,
                    release=release,
                    due=prep.due,
                    weight=URGENT_WEIGHT if priority == Priority.URGENT.value else ROUTINE_WEIGHT,
                    options=tuple(options),
                    material=mf.material_code,
                    grams=grams,
                    current_machine=current,
                    current_start=ctx.minutes(job.planned_start) if job is not None else None,
                    excluded=tuple(excluded),
                    label=order.medication,
                )
            )
        instance = Instance(
            jobs=tuple(jobs),
            machines=tuple(PlanMachine(m.id, m.name, m.site_id) for m in machines),
            horizon=horizon,
            changeover=settings.changeover_min,
            cleaning=settings.cleaning_min,
            move_penalty=settings.move_penalty,
            material_budget=budget,
        )
        return instance, ctx

    def _prepare(
        self, uow: UnitOfWork, ctx: Context, settings: PlanningSettings, order: Order
    ) -> _Prepared:
        """An order's figures from its family: material, machine time, and for a product made
        from the patient's own material, the earliest start after the collection (the open
        appointment's date, or the earliest a new one can be booked) and a due time that leaves
        the time from the run's end to administration before the need-by time."""
        mf = self._master_files.get(uow, order.master_file_id)
        family = self._families.get(mf.product_family)
        design = order.design or {}
        duration_s = family.duration_s(design)
        processing = max(1, math.ceil(duration_s / 60))
        release, due = 0, ctx.minutes(order.need_by)
        need = collection_of(family, design)
        if need is not None:
            ctx.collections[order.id] = need
            booked = ctx.collection_at.get(order.id)
            at = (
                booked
                if booked is not None
                else ctx.origin + timedelta(hours=settings.collection_notice_h)
            )
            release = max(0, ctx.minutes_up(at + timedelta(seconds=need.to_start_s)))
            due -= math.ceil(need.to_administration_s / 60)
        return _Prepared(
            order,
            mf,
            family,
            family.material_needed_g(design),
            duration_s,
            processing,
            release,
            due,
        )

    @staticmethod
    def _staffed(
        ctx: Context, shifts: list[OperatorShift] | None, trained: list[str]
    ) -> list[Range] | None:
        """When a trained operator is on shift; None: no shifts recorded (always staffed)."""
        if not shifts:
            return None
        return [
            (ctx.minutes(s.starts_at), ctx.minutes(s.ends_at))
            for s in shifts
            if s.user_id in trained
        ]

    def why_not(
        self,
        uow: UnitOfWork,
        machine: Machine,
        site_code: str,
        site_status: str,
        mf: MasterFile,
        machine_types: tuple[str, ...],
    ) -> tuple[str | None, str | None]:
        """The first eligibility rule a machine fails, as (code, message), or (None, None)."""
        if machine.machine_type not in machine_types:
            return (
                "no_qualified_machine",
                f"a {machine.machine_type} cannot make {mf.product_family}",
            )
        if machine.site_id not in mf.allowed_site_ids:
            return (
                "no_qualified_machine",
                f"site {site_code} is not listed in master file {mf.code}",
            )
        if site_status != SiteStatus.ACTIVE.value:
            return "site_unavailable", f"site {site_code} is {site_status}"
        held = self._network.site_hold(uow, machine.site_id, mf.code)
        if held is not None:
            return "site_unavailable", held
        if machine.status in (MachineStatus.MAINTENANCE.value, MachineStatus.RETIRED.value):
            return "machine_unavailable", f"machine is {machine.status}"
        if not self._network.is_qualified(uow, machine.id, mf.code):
            return "no_qualified_machine", f"not qualified for {mf.code}"
        return None, None
