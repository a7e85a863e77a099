"""Scheduling use cases: eligible machines, a job per order, and the network plan behind them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from nearfab.common.errors import DomainError, Refused, ValidationFailed, require_reason
from nearfab.common.ids import new_id
from nearfab.designs import FamilyRegistry
from nearfab.designs.registry import Collection, collection_of
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    SignatureService,
    audit,
    audited_transition,
    authorize,
    can,
    refuse,
)
from nearfab.masterfiles import MasterFileService
from nearfab.materials import MaterialService
from nearfab.network import MachineStatus, NetworkService, SiteStatus
from nearfab.orders import OrderService, OrderStatus
from nearfab.scheduling import reads
from nearfab.scheduling.enums import (
    JOB_TRANSITIONS,
    OPEN_COLLECTION_STATUSES,
    OPEN_JOB_STATUSES,
    CollectionStatus,
    JobStatus,
    PlanTrigger,
)
from nearfab.scheduling.kit import (
    collection_identifier,
    declares_collection_identifier,
    lot_filter,
    pre_collection_records,
)
from nearfab.scheduling.logic import Candidate, earliest_finish
from nearfab.scheduling.models import CollectionAppointment, Job, PlanVersion, PreCollectionRecord
from nearfab.scheduling.services.collections import Collections, appointment_dict
from nearfab.scheduling.services.consent import PreCollection, record_dict
from nearfab.scheduling.services.instance import InstanceBuilder, PlanningSettings, fingerprint
from nearfab.scheduling.services.patients import require_patient
from nearfab.scheduling.services.planning import NetworkPlanning, infer_trigger
from nearfab.scheduling.services.views import PlanScope
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.masterfiles import MasterFile
    from nearfab.network import Machine
    from nearfab.orders import Order

OPEN_STATUSES = {s.value for s in OPEN_COLLECTION_STATUSES}

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
        planning: PlanningSettings | None = PlanningSettings(),
        signatures: SignatureService | None = None,
    ) -> None:
        """`planning` None: each order alone by `planner` (the foundation's rule). Otherwise
        orders take their place in the network plan (EDD + CP-SAT, `services/planning.py`)."""
        self._network = network
        self._master_files = master_files
        self._materials = materials
        self._orders = orders
        self._families = families
        self._planner = planner
        self.collections = Collections()
        self.pre_collection = PreCollection(signatures)
        builder = InstanceBuilder(network, master_files, materials, orders, families)
        self.planning = NetworkPlanning(builder, orders, planning) if planning is not None else None

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
            if not self._network.node.works_for(machine.site_id):
                # a node makes on its own site's machines only (docs/replication.md)
                excluded[machine.name] = (
                    "another site's machine: this node makes its own site's work only"
                )
                continue
            why = self._why_not(uow, machine, mf, family.machine_types)
            lot = None
            if why is None:
                lot = self._materials.usable_lot(
                    uow,
                    site_id=machine.site_id,
                    material_code=mf.material_code,
                    needed_g=needed_g,
                    accept=lot_filter(family, design),
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
        held = self._network.site_hold(uow, site.id, mf.code)
        if held is not None:
            return held
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
        order = self._orders.get(uow, order_id)
        authorize(actor, Permission.ORDER_SCHEDULE, site_id=order.site_id)
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
        if not elig.candidates:
            reasons = "; ".join(f"{k}: {v}" for k, v in sorted(elig.excluded.items()))
            raise Refused(
                f"no eligible machine for order {order.id} ({reasons or 'no machines'})",
                field="machine",
                code="no_eligible_machine",
            )
        if self.planning is None:
            choice = self._planner(elig.candidates)
            assert choice is not None
            start, why = choice.available_from, f"planned on {choice.machine_name}"
        else:
            choice, start, why = self._from_plan(uow, actor, order, elig)
        job = self.create_job(
            uow,
            actor,
            order,
            choice.machine_id,
            choice.site_id,
            choice.material_lot_id,
            start,
            choice.duration_s,
            reason=why,
        )
        uow.commit()
        return job

    def _from_plan(
        self, uow: UnitOfWork, actor: Actor, order: Order, elig: Eligibility
    ) -> tuple[Candidate, datetime, str]:
        """The order's place in the current plan; the plan is made again first when its inputs
        changed or the order is not in it yet. No place: refused, with the plan's reason."""
        assert self.planning is not None
        plan = self.planning.current(uow)
        if not self.planning.is_fresh(uow, plan):
            trigger, reason = infer_trigger(
                plan.inputs if plan else {}, fingerprint(uow, self._orders)[1]
            )
            plan = self.planning.plan(uow, actor, self, trigger=trigger, reason=reason)
        assert plan is not None
        entry = next((a for a in plan.assignments if a["order_id"] == order.id), None)
        choice = next(
            (c for c in elig.candidates if entry and c.machine_id == entry["machine_id"]), None
        )
        if entry is None or choice is None:
            why = next(
                (e["message"] for e in plan.explanations if e["order_id"] == order.id),
                "its machine in the plan is no longer eligible",
            )
            if uow.session.new or uow.session.dirty:
                uow.commit()  # the new plan stands; this order waits for a person or a change
            raise Refused(
                f"no place for order {order.id} in plan v{plan.number}: {why}",
                field="machine",
                code="no_place_in_plan",
            )
        start = max(datetime.fromisoformat(entry["start"]), uow.clock.now())
        return choice, start, f"planned on {choice.machine_name} (plan v{plan.number})"

    def create_job(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order: Order,
        machine_id: str,
        site_id: str,
        lot_id: str,
        start: datetime,
        duration_s: float,
        *,
        reason: str,
    ) -> Job:
        """A planned job for a designed order; the order moves to scheduled. No commit."""
        job = Job(
            id=new_id("job"),
            order_id=order.id,
            machine_id=machine_id,
            site_id=site_id,
            material_lot_id=lot_id,
            planned_start=start,
            planned_finish=start + timedelta(seconds=duration_s),
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
            uow, actor, order, OrderStatus.SCHEDULED, reason=reason, extra={"job_id": job.id}
        )
        self.book_collection(uow, actor, order, job, reason=reason)
        return job

    # --- collections (starting material from the patient: services/collections.py) ---------
    def collection_need(self, uow: UnitOfWork, order: Order) -> Collection | None:
        """What the order's family needs collected from the patient (None: nothing)."""
        return collection_of(self._family_of(uow, order), order.design or {})

    def book_collection(
        self, uow: UnitOfWork, actor: Actor, order: Order, job: Job, *, reason: str
    ) -> CollectionAppointment | None:
        """Book (or move with its run) the order's collection against the job's slot; nothing
        for a product that needs no collection. Audited, no commit."""
        need = self.collection_need(uow, order)
        if need is None:
            return None
        return self.collections.book(uow, actor, order, job, need, reason=reason)

    def _collection_order(self, uow: UnitOfWork, order_id: str) -> tuple[Order, Collection]:
        order = self._orders.get(uow, order_id)
        need = self.collection_need(uow, order)
        if need is None:
            raise Refused(
                f"order {order.id} needs no starting material from the patient",
                field="order_id",
                code="no_collection",
            )
        return order, need

    def record_collection(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order_id: str,
        collection_at: datetime,
        *,
        reason: str,
    ) -> CollectionAppointment:
        """A planner or clinician records the collection date (it slipped, or was agreed with
        the patient): the plan must respect it. The run moves to start no earlier than the
        material reaches the machine; a planner's replan is made now, anyone else's at the next
        refresh (the runner's), trigger `collection_changed`. Commits."""
        order = self._orders.get(uow, order_id)
        authorize(actor, Permission.ORDER_PRIORITY, site_id=order.site_id)
        require_reason(reason, "recording a collection date")
        order, _ = self._collection_order(uow, order_id)
        if order.status not in (OrderStatus.DESIGNED.value, OrderStatus.SCHEDULED.value):
            raise Refused(
                f"order {order.id} is {order.status}; a collection date is recorded only before "
                "its run starts",
                field="order_id",
                code="collection_closed",
            )
        done = self.collections.open_for(uow, order.id)
        if done is not None and done.collected_at is not None:
            raise Refused(
                f"order {order.id}'s collection was recorded at {done.collected_at.isoformat()};"
                " its date no longer moves",
                field="order_id",
                code="already_collected",
            )
        if collection_at.tzinfo is None:
            raise ValidationFailed(
                "give the collection time with its time zone", field="collection_at"
            )
        if collection_at < uow.clock.now():
            raise ValidationFailed(
                f"collection_at {collection_at.isoformat()} is in the past", field="collection_at"
            )
        row = self.collections.record(uow, actor, order, collection_at, reason=reason)
        if self.planning is not None and can(actor, Permission.PLAN_RUN):
            self.plan(uow, actor, trigger=PlanTrigger.COLLECTION_CHANGED, reason=reason)  # commits
        else:
            uow.commit()
        return row

    # --- the chain of identity from the collection (services/consent.py, scheduling.kit) ----
    def _family_of(self, uow: UnitOfWork, order: Order) -> Any:
        mf = self._master_files.get(uow, order.master_file_id)
        return self._families.get(mf.product_family)

    def required_before_collection(self, uow: UnitOfWork, order: Order) -> tuple[str, ...]:
        """The records the order's family requires before its collection (() when none)."""
        return pre_collection_records(self._family_of(uow, order), order.design or {})

    def record_pre_collection(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order_id: str,
        *,
        kind: str,
        reference: str,
        statement: str,
        password: str,
        username: str | None = None,
        totp: str | None = None,
        meaning: str | None = None,
    ) -> PreCollectionRecord:
        """A clinician of the ordering site records (e-signed) one of the records the
        order's family requires before the collection, e.g. eligibility or consent, with the
        reference of its document (the consent form and version). Audited; commits."""
        order = self._orders.get(uow, order_id)
        try:  # another site's attempt is refused on record too
            authorize(actor, Permission.COLLECTION_PRE_RECORD, site_id=order.site_id)
        except DomainError as exc:
            refuse(uow, actor, exc, "pre_collection", order.id, site_id=order.site_id)
        required = self.required_before_collection(uow, order)
        if order.status not in (OrderStatus.DESIGNED.value, OrderStatus.SCHEDULED.value):
            refuse(
                uow,
                actor,
                Refused(
                    f"order {order.id} is {order.status}: records before the collection are"
                    " made while it waits for its collection",
                    field="order_id",
                    code="collection_closed",
                ),
                "pre_collection",
                order.id,
                site_id=order.site_id,
            )
        return self.pre_collection.record(
            uow, actor, order, required, kind=kind, reference=reference, statement=statement,
            password=password, username=username, totp=totp, meaning=meaning,
        )  # fmt: skip

    def record_collected(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order_id: str,
        *,
        identifier: str | None,
        patient: str | None,
        collected_at: datetime | None = None,
        reason: str = "collected",
    ) -> CollectionAppointment:
        """The collection happened: recorded by a clinician or pharmacist of the ordering site
        with the patient's identifier as presented and the family's chain identifier scanned
        from the collection's label. Refused (audited, nothing kept) before the family's
        pre-collection records are all on record (`pre_collection_missing`), for another
        patient (`wrong_patient`), for a chain identifier the family refuses (not one, or not
        the one the prescription named: `identity_mismatch`), twice (`already_collected`) or
        after the run started (`collection_closed`). Commits."""
        order = self._orders.get(uow, order_id)
        try:  # another site's attempt is refused on record too
            authorize(actor, Permission.COLLECTION_RECORD, site_id=order.site_id)
            row = self._collected(uow, actor, order, identifier, patient, collected_at, reason)
        except DomainError as exc:
            refuse(uow, actor, exc, "collection", order.id, site_id=order.site_id)
        uow.commit()
        return row

    def _collected(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order: Order,
        identifier: str | None,
        patient: str | None,
        collected_at: datetime | None,
        reason: str,
    ) -> CollectionAppointment:
        order, _ = self._collection_order(uow, order.id)
        if order.status not in (OrderStatus.DESIGNED.value, OrderStatus.SCHEDULED.value):
            raise Refused(
                f"order {order.id} is {order.status}; a collection is recorded before its run",
                field="order_id",
                code="collection_closed",
            )
        now = uow.clock.now()
        when = now if collected_at is None else collected_at
        if when.tzinfo is None:
            raise ValidationFailed("give the collection time with its zone", field="collected_at")
        if when > now:
            raise ValidationFailed(
                f"collected_at {when.isoformat()} is in the future", field="collected_at"
            )
        require_reason(reason, "recording a collection")
        missing = self.pre_collection.missing(
            uow, order.id, self.required_before_collection(uow, order)
        )
        if missing:
            raise Refused(
                f"order {order.id}: record {' and '.join(missing)} before the collection",
                field=missing[0],
                code="pre_collection_missing",
            )
        require_patient(
            self._orders,
            uow,
            actor,
            order,
            patient,
            purpose="collection",
            permission=Permission.COLLECTION_RECORD,
        )
        family = self._family_of(uow, order)
        bound: str | None = None
        if declares_collection_identifier(family):
            if not isinstance(identifier, str) or not identifier.strip():
                raise ValidationFailed(
                    "scan the chain identifier on the collection's label", field="identifier"
                )
            # the first collection answers to the design; one after a failed run binds its own
            first = self.collections.collected_for(uow, order.id) is None
            bound = collection_identifier(
                family, order.design or {}, identifier.strip(), first=first
            )
        open_row = self.collections.open_for(uow, order.id)
        if open_row is not None and open_row.collected_at is not None:
            raise Refused(
                f"order {order.id}'s collection was already recorded at"
                f" {open_row.collected_at.isoformat()}",
                field="order_id",
                code="already_collected",
            )
        return self.collections.collected(uow, actor, order, when, bound, reason=reason)

    def require_collected(self, uow: UnitOfWork, order: Order) -> None:
        """Refused (code collection_not_recorded) when the order's product is made from a
        collection from the patient and that collection has not been recorded: production
        asks before it starts the run."""
        if self.collection_need(uow, order) is None:
            return
        row = self.collections.open_for(uow, order.id)
        if row is None or row.collected_at is None:
            raise Refused(
                f"order {order.id}'s product is made from material collected from the patient,"
                " and the collection has not been recorded: record it before the run starts",
                field="collection",
                code="collection_not_recorded",
            )

    def chain_identifier(self, uow: UnitOfWork, order_id: str) -> str | None:
        """The family's chain identifier bound to the order at its collection (None: none)."""
        row = self.collections.collected_for(uow, order_id)
        return None if row is None else row.chain_identifier

    def require_patient(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order: Order,
        presented: str | None,
        *,
        purpose: str,
        permission: Permission,
        one_of: list[str | None] | None = None,
    ) -> None:
        """Refused (wrong_patient) unless `presented` is the order's patient
        (services/patients.py, through orders' patient identification)."""
        require_patient(
            self._orders, uow, actor, order, presented, purpose=purpose,
            permission=permission, one_of=one_of,
        )  # fmt: skip

    def pre_collection_view(self, uow: UnitOfWork, actor: Actor, order_id: str) -> dict[str, Any]:
        """What the order's family requires before the collection, and what is on record."""
        order = self._orders.get(uow, order_id)
        authorize(actor, Permission.ORDER_READ, site_id=order.site_id)
        required = self.required_before_collection(uow, order)
        rank = {kind: i for i, kind in enumerate(required)}
        rows = sorted(
            self.pre_collection.of_order(uow, order.id),
            key=lambda r: (rank.get(r.kind, len(rank)), r.recorded_at),
        )
        return {
            "order_id": order.id,
            "required": list(required),
            "missing": self.pre_collection.missing(uow, order.id, required),
            "records": [record_dict(r) for r in rows],
        }

    def rebook_after_failure(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order_id: str,
        *,
        reason: str,
        collection_at: datetime | None = None,
    ) -> CollectionAppointment:
        """A failed run: its collection is closed (`run_failed`), the order goes back to
        planning and a new slot is booked for a new collection (on `collection_at` when given,
        otherwise the plan's date), plan trigger `run_failed`. Audited; commits."""
        order = self._orders.get(uow, order_id)
        authorize(actor, Permission.ORDER_REPLAN, site_id=order.site_id)
        require_reason(reason, "re-booking after a failed run")
        order, _ = self._collection_order(uow, order_id)
        if order.status != OrderStatus.FAILED.value:
            raise Refused(
                f"order {order.id} is {order.status}; only an order whose run failed is re-booked",
                field="order_id",
                code="not_failed",
            )
        if collection_at is not None and (
            collection_at.tzinfo is None or collection_at < uow.clock.now()
        ):
            raise ValidationFailed(
                "the new collection must be a time with its zone, not in the past",
                field="collection_at",
            )
        self.collections.close(uow, actor, order, CollectionStatus.RUN_FAILED, reason=reason)
        self._orders.transition(uow, actor, order, OrderStatus.DESIGNED, reason=reason)
        if collection_at is not None:
            self.collections.record(uow, actor, order, collection_at, reason=reason)
        if self.planning is not None:
            self.planning.plan(uow, actor, self, trigger=PlanTrigger.RUN_FAILED, reason=reason)
        self.schedule(uow, actor, order.id)  # commits; refused (no place) leaves the plan
        row = self.collections.open_for(uow, order.id)
        assert row is not None
        return row

    def collection_view(self, uow: UnitOfWork, actor: Actor, order_id: str) -> dict[str, Any]:
        """The order's collection appointments (newest first) and the current one."""
        order = self._orders.get(uow, order_id)
        authorize(actor, Permission.ORDER_READ, site_id=order.site_id)
        self._collection_order(uow, order_id)
        names = {m.id: m.name for m in self._network.list_machines(uow)}
        rows = [
            appointment_dict(r, names.get(r.machine_id or ""))
            for r in self.collections.of_order(uow, order.id)
        ]
        current = next((r for r in rows if r["status"] in OPEN_STATUSES), None)
        return {"order_id": order.id, "current": current, "appointments": rows}

    # --- the network plan -----------------------------------------------------------------------
    def _network_planning(self) -> NetworkPlanning:
        if self.planning is None:
            raise Refused("network planning is off", field="planning", code="planning_off")
        return self.planning

    def plan(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        trigger: PlanTrigger | str = PlanTrigger.MANUAL,
        reason: str = "planned on request",
        horizon_h: float | None = None,
        time_limit_s: float | None = None,
    ) -> PlanVersion:
        """Make, apply and store a new plan version (audited), and commit."""
        version = self._network_planning().plan(
            uow,
            actor,
            self,
            trigger=trigger,
            reason=reason,
            horizon_h=horizon_h,
            time_limit_s=time_limit_s,
        )
        uow.commit()
        return version

    def replan(
        self, uow: UnitOfWork, actor: Actor, reason: str, trigger: PlanTrigger | str
    ) -> PlanVersion:
        """Replan after an event: started jobs stay, others move only where it pays."""
        require_reason(reason, "replanning")
        return self.plan(uow, actor, trigger=trigger, reason=reason)

    def move_forward(
        self, uow: UnitOfWork, actor: Actor, order_id: str, *, reason: str
    ) -> PlanVersion:
        """Move an order forward: it becomes urgent (the reason on its priority's audit row)
        and the network is replanned with the urgent-order trigger, in one transaction. Refused
        whole when planning is off, the order is another site's or the reason is missing."""
        authorize(actor, Permission.PLAN_RUN)  # replanning the network is the planner's
        if self.planning is None:
            raise Refused(
                "moving an order forward needs the network plan, which is off in this deployment",
                field="order_id",
                code="planning_off",
            )
        # the priority's permission and the order's site are checked before the reason
        self.planning.set_priority(uow, actor, order_id, "urgent", reason=reason or None)
        require_reason(reason, "moving an order forward")
        return self.replan(uow, actor, reason, PlanTrigger.URGENT_ORDER)

    def refresh(
        self, uow: UnitOfWork, actor: Actor, *, reason: str | None = None
    ) -> PlanVersion | None:
        """Replan if the plan's inputs changed (machine failure, recall, site pause, urgent or
        new order), naming the trigger; otherwise do nothing. Safe to call often."""
        planning = self._network_planning()
        plan = planning.current(uow)
        _, inputs = fingerprint(uow, self._orders)
        if plan is None and not inputs["orders"]:
            return None
        if planning.is_fresh(uow, plan):
            return None
        trigger, why = infer_trigger(plan.inputs if plan else {}, inputs)
        return self.plan(uow, actor, trigger=trigger, reason=f"{why} ({reason})" if reason else why)

    def current_plan(self, uow: UnitOfWork) -> PlanVersion | None:
        return self._network_planning().current(uow)

    def plan_version(self, uow: UnitOfWork, number: int) -> PlanVersion:
        return self._network_planning().version(uow, number)

    def plan_history(self, uow: UnitOfWork, limit: int = 50) -> list[PlanVersion]:
        return self._network_planning().history(uow, limit)

    # --- the plan as a reader sees it (site staff: their own site's part, views.py) ---------
    def plan_scope(self, uow: UnitOfWork, actor: Actor) -> PlanScope:
        """What `actor` may see of plan versions (refuses a reader without `plan.read`)."""
        return PlanScope(uow, actor)

    def plan_view(
        self, uow: UnitOfWork, actor: Actor, number: int | None = None
    ) -> dict[str, Any] | None:
        """The current plan (or version `number`) as `actor` may see it; None: no plan yet."""
        scope = self.plan_scope(uow, actor)
        version = self.current_plan(uow) if number is None else self.plan_version(uow, number)
        return None if version is None else scope.plan(version)

    def plan_history_view(
        self, uow: UnitOfWork, actor: Actor, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Plan versions, newest first, each with the changes `actor` may see."""
        scope = self.plan_scope(uow, actor)
        return [scope.summary(v) for v in self.plan_history(uow, limit)]

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
        order = self._orders.get(uow, order_id)
        authorize(actor, Permission.ORDER_SCHEDULE, site_id=order.site_id)
        require_reason(reason, "unscheduling")
        job = self._waiting_job(uow, order)
        self.transition(uow, actor, job, JobStatus.CANCELLED, reason=reason)
        self._orders.transition(
            uow, actor, order, OrderStatus.DESIGNED, reason=reason, extra={"cancelled_job": job.id}
        )
        self.collections.free_slot(uow, actor, order, reason=reason)
        uow.commit()
        return order

    def cancel_order(self, uow: UnitOfWork, actor: Actor, order_id: str, *, reason: str) -> Order:
        """Cancel an order that has not started; a scheduled one takes its job with it, in one
        transaction, so the runner cannot plan it again in between."""
        order = self._orders.get(uow, order_id)
        if order.status != OrderStatus.SCHEDULED.value:
            return self._orders.cancel(uow, actor, order_id, reason=reason)
        authorize(actor, Permission.ORDER_CANCEL, site_id=order.site_id)
        require_reason(reason, "cancelling an order")
        job = self._waiting_job(uow, order)
        self.transition(uow, actor, job, JobStatus.CANCELLED, reason=reason)
        self._orders.transition(
            uow, actor, order, OrderStatus.CANCELLED, reason=reason, extra={"cancelled_job": job.id}
        )
        self.collections.close(uow, actor, order, CollectionStatus.CANCELLED, reason=reason)
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

    def attach_ticket(
        self, uow: UnitOfWork, actor: Actor, job: Job, ticket: dict[str, Any], ticket_hash: str
    ) -> None:
        """Keep the job's signed ticket and move it to ticket_issued, audited in the caller's
        transaction: production signs tickets, scheduling owns the job row."""
        job.ticket = ticket
        job.ticket_hash = ticket_hash
        self.transition(
            uow, actor, job, JobStatus.TICKET_ISSUED, reason=f"ticket {ticket_hash[:16]} signed"
        )

    def get(self, uow: UnitOfWork, job_id: str) -> Job:
        return reads.job(uow.session, job_id)

    def jobs(self, uow: UnitOfWork, *statuses: JobStatus, order_id: str | None = None) -> list[Job]:
        stmt = select(Job).order_by(Job.planned_start, Job.id)
        if statuses:
            stmt = stmt.where(Job.status.in_([s.value for s in statuses]))
        if order_id:
            stmt = stmt.where(Job.order_id == order_id)
        return list(uow.session.scalars(stmt))
