"""Production use cases: the production gate, signed job tickets, batch records, machine runs."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from nearfab.common.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    Refused,
    ValidationFailed,
    require_reason,
)
from nearfab.common.ids import new_id
from nearfab.designs import FamilyRegistry
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    Signature,
    audit,
    audited_transition,
    authorize,
    refuse,
    system_actor,
)
from nearfab.masterfiles import MasterFile, MasterFileService, MasterFileStatus
from nearfab.materials import MaterialService
from nearfab.network import Machine, MachineStatus, NetworkService, Site, SiteStatus
from nearfab.orders import OrderService, OrderStatus
from nearfab.production.enums import BATCH_TRANSITIONS, BatchStatus
from nearfab.production.events import BatchCompleted, BatchFailed
from nearfab.production.fleet import MachineFleet
from nearfab.production.kit import MachineKit
from nearfab.production.logic import batch_number, summarise_telemetry
from nearfab.production.machines import RunResult
from nearfab.production.models import BatchRecord, BatchStep, StepSignoff
from nearfab.production.tickets import SignedTicket, TicketSigner, verify_ticket
from nearfab.scheduling import Job, JobStatus, SchedulingService
from nearfab.uow import UnitOfWork

TICKET_LIFETIME = timedelta(hours=24)
# how long a handed-over batch stays alive without a report from its machine; every report
# (telemetry, state change, the run's result) renews it
DEFAULT_LEASE = timedelta(minutes=30)
# what a domain above production adds to an abandonment in the same transaction (quality
# opens a deviation): (uow, actor, batch, kind "orphaned" | "abandoned", reason)
AbandonHook = Callable[[UnitOfWork, Actor, BatchRecord, str, str], None]
# batches whose manual steps may still be signed: being made, or made and awaiting the QP
SIGNABLE = frozenset({BatchStatus.IN_PROGRESS.value, BatchStatus.COMPLETED.value})


@dataclass
class StepState:
    """One master-file step of one batch: the definition and what has happened to it."""

    position: int
    code: str
    title: str
    manual: bool
    critical: bool
    entry_fields: dict[str, str]
    recorded_at: datetime | None  # a machine step: when the platform recorded it
    signoff: StepSignoff | None  # a manual step: who performed (and verified) it

    @property
    def done(self) -> bool:
        return self.recorded_at is not None or self.signoff is not None

    @property
    def status(self) -> str:
        if not self.manual:
            return "recorded" if self.recorded_at else "pending"
        if self.signoff is None:
            return "pending"
        if self.critical and self.signoff.verified_by is None:
            return "awaiting_verification"
        return "verified" if self.critical else "performed"


def check_entry(fields: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of a step's entry fields: every field given, nothing else, numbers as numbers."""
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValidationFailed(
            f"step has no entry field {unknown[0]!r} (fields: {', '.join(fields) or 'none'})",
            field=f"entry.{unknown[0]}",
        )
    clean: dict[str, Any] = {}
    for name, kind in fields.items():
        value = values.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValidationFailed(f"entry {name} is required", field=f"entry.{name}")
        if kind == "text":
            text = str(value).strip()
            if len(text) > 200:
                raise ValidationFailed(
                    f"entry {name} has more than 200 characters", field=f"entry.{name}"
                )
            clean[name] = text
            continue
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise ValidationFailed(
                f"entry {name} must be a number in {kind}, not {value!r}", field=f"entry.{name}"
            ) from None
        if number != number or number in (float("inf"), float("-inf")) or number < 0:
            raise ValidationFailed(
                f"entry {name} must be a finite number >= 0", field=f"entry.{name}"
            )
        if kind == "count":
            if number != int(number):
                raise ValidationFailed(
                    f"entry {name} is a count: a whole number, not {value!r}",
                    field=f"entry.{name}",
                )
            clean[name] = int(number)
            continue
        clean[name] = number
    return clean


class ProductionService:
    def __init__(
        self,
        network: NetworkService,
        master_files: MasterFileService,
        materials: MaterialService,
        orders: OrderService,
        scheduling: SchedulingService,
        families: FamilyRegistry,
        signer: TicketSigner,
        fleet: MachineFleet,
    ) -> None:
        self._network = network
        self._master_files = master_files
        self._materials = materials
        self._orders = orders
        self._scheduling = scheduling
        self._families = families
        self._signer = signer
        self.fleet = fleet
        self.lease = DEFAULT_LEASE
        self._abandon_hooks: list[AbandonHook] = []

    def on_abandon(self, hook: AbandonHook) -> None:
        """Run `hook` inside every abandonment's transaction (quality: the deviation)."""
        self._abandon_hooks.append(hook)

    # --- the gate ----------------------------------------------------------------------------
    def check_production_allowed(
        self,
        uow: UnitOfWork,
        mf: MasterFile,
        site: Site,
        machine: Machine,
        operator_id: str | None = None,
    ) -> None:
        """Raise Refused (each with its own code) unless this product may be made here, now."""
        if mf.status != MasterFileStatus.EFFECTIVE.value:
            raise Refused(
                f"master file {mf.code} v{mf.version} is {mf.status}; production needs an "
                "approved, effective master file",
                field="master_file",
                code="no_effective_master_file",
            )
        if not self._master_files.approval_is_valid(uow, mf):
            raise Refused(
                f"master file {mf.code} v{mf.version} no longer matches its QP approval signature",
                field="master_file",
                code="no_effective_master_file",
            )
        if site.id not in mf.allowed_site_ids:
            raise Refused(
                f"site {site.code} is not listed in master file {mf.code}",
                field="site",
                code="site_not_listed",
            )
        if site.status != SiteStatus.ACTIVE.value:
            raise Refused(
                f"site {site.code} is {site.status}, not active",
                field="site",
                code="site_not_active",
            )
        if machine.site_id != site.id:
            raise Refused(
                f"machine {machine.name} is not at site {site.code}",
                field="machine",
                code="machine_not_at_site",
            )
        if not self._network.is_qualified(uow, machine.id, mf.code):
            raise Refused(
                f"machine {machine.name} is not qualified for {mf.code}",
                field="machine",
                code="machine_not_qualified",
            )
        if operator_id is not None and self._network.home_site_of(uow, operator_id) != site.id:
            raise Refused(
                f"operator {operator_id} does not work at site {site.code}",
                field="operator",
                code="operator_not_at_site",
            )
        if operator_id is not None and not self._network.is_trained(uow, operator_id, mf.code):
            raise Refused(
                f"operator {operator_id} is not trained on {mf.code}",
                field="operator",
                code="operator_not_trained",
            )

    def _context(self, uow: UnitOfWork, job: Job) -> tuple[MasterFile, Site, Machine]:
        order = self._orders.get(uow, job.order_id)
        mf = self._master_files.get(uow, order.master_file_id)
        return (
            mf,
            self._network.get_site(uow, job.site_id),
            self._network.get_machine(uow, job.machine_id),
        )

    # --- tickets -----------------------------------------------------------------------------
    def issue_ticket(self, uow: UnitOfWork, actor: Actor, job_id: str) -> SignedTicket:
        """The control site signs what the machine is authorised to make."""
        job = self._scheduling.get(uow, job_id)
        authorize(actor, Permission.TICKET_ISSUE, site_id=job.site_id)
        mf, site, machine = self._context(uow, job)
        try:
            self.check_production_allowed(uow, mf, site, machine)
        except (Refused, Forbidden) as exc:
            refuse(uow, actor, exc, "job", job.id, site_id=site.id)
        order = self._orders.get(uow, job.order_id)
        now = uow.clock.now()
        payload: dict[str, Any] = {
            "ticket_id": f"tkt_{job.id}",
            "job_id": job.id,
            "order_id": order.id,
            "machine_id": machine.id,
            "site_id": site.id,
            "master_file": {"id": mf.id, "code": mf.code, "version": mf.version},
            "design": order.design,
            "process_parameters": mf.process_parameters,
            "material_lot_id": job.material_lot_id,
            "issued_at": now.isoformat(),
            "expires_at": (now + TICKET_LIFETIME).isoformat(),
        }
        ticket = self._signer.sign(payload)
        job.ticket = ticket.to_dict()
        job.ticket_hash = ticket.ticket_hash
        self._scheduling.transition(
            uow,
            actor,
            job,
            JobStatus.TICKET_ISSUED,
            reason=f"ticket {ticket.ticket_hash[:16]} signed",
        )
        uow.commit()
        return ticket

    # --- runs --------------------------------------------------------------------------------
    def start_batch(
        self, uow: UnitOfWork, actor: Actor, job_id: str, *, operator_id: str | None = None
    ) -> BatchRecord:
        """Start a ticketed job: gate checked again, ticket verified, material drawn, record
        opened. `actor` is an operator starting it by hand, or the site agent (a system actor)
        naming the operator on duty in `operator_id`; that operator must be trained."""
        authorize(actor, Permission.BATCH_START)
        if operator_id is None:
            if "system" in actor.roles:
                raise ValidationFailed(
                    "a site agent must name the operator on duty", field="operator_id"
                )
            operator_id = actor.user_id
        elif "system" not in actor.roles and operator_id != actor.user_id:
            raise ValidationFailed(
                "an operator starts batches only in their own name", field="operator_id"
            )
        job = self._scheduling.get(uow, job_id)
        mf, site, machine = self._context(uow, job)
        try:
            # staff of another site are refused, and the attempt is on record
            authorize(actor, Permission.BATCH_START, site_id=job.site_id)
            if job.status != JobStatus.TICKET_ISSUED.value or not job.ticket:
                raise Refused(
                    f"job {job.id} has no signed ticket", field="ticket", code="no_ticket"
                )
            # the machine checks again; refusing here keeps material in the lot
            verify_ticket(
                SignedTicket.from_dict(job.ticket),
                self._signer.public_key_pem,
                machine_id=machine.id,
                now=uow.clock.now(),
            )
            self.check_production_allowed(uow, mf, site, machine, operator_id)
            if machine.status != MachineStatus.AVAILABLE.value:
                raise Refused(
                    f"machine {machine.name} is {machine.status}",
                    field="machine",
                    code="machine_unavailable",
                )
        except (Refused, Forbidden) as exc:
            refuse(uow, actor, exc, "job", job.id, site_id=site.id)
        order = self._orders.get(uow, job.order_id)
        family = self._families.get(mf.product_family)
        design = order.design or {}
        needed = family.material_needed_g(design)
        now = uow.clock.now()
        batch = BatchRecord(
            id=f"bat_{job.id.removeprefix('job_')}",
            batch_number=batch_number(
                mf.code.removeprefix("MF-"), now.strftime("%y%m%d"), secrets.token_hex(3).upper()
            ),
            job_id=job.id,
            order_id=order.id,
            master_file_id=mf.id,
            master_file_code=mf.code,
            master_file_version=mf.version,
            site_id=site.id,
            machine_id=machine.id,
            machine_firmware=machine.firmware,
            material_lot_id=job.material_lot_id,
            material_lot_number="",
            material_used_g=needed,
            operator_id=operator_id,
            ticket_hash=job.ticket_hash or "",
            status=BatchStatus.IN_PROGRESS.value,
            design=design,
            started_at=now,
            handed_over_at=None,
            finished_at=None,
            measurements=None,
            units_made=None,
            telemetry_summary=None,
            telemetry=None,
            cpp_excursions=None,
            machine_events=None,
            failure_reason=None,
        )
        uow.session.add(batch)
        uow.flush()
        try:
            lot = self._materials.consume(
                uow, actor, job.material_lot_id, needed, batch_id=batch.id
            )
        except Refused as exc:
            refuse(uow, actor, exc, "job", job.id, site_id=site.id)
        batch.material_lot_number = lot.lot_number
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "batch",
            batch.id,
            new={
                "batch_number": batch.batch_number,
                "job_id": job.id,
                "order_id": order.id,
                "master_file": f"{mf.code} v{mf.version}",
                "machine_id": machine.id,
                "firmware": machine.firmware,
                "material_lot": lot.lot_number,
                "ticket_hash": batch.ticket_hash,
            },
            site_id=site.id,
        )
        self.add_step(
            uow,
            actor,
            batch,
            "material_dispensed",
            {"lot": lot.lot_number, "grams": needed, "operator_id": operator_id},
        )
        self.add_step(
            uow,
            actor,
            batch,
            "run_started",
            {
                "machine": machine.name,
                "firmware": machine.firmware,
                "ticket_hash": batch.ticket_hash,
            },
        )
        self._scheduling.transition(uow, actor, job, JobStatus.RUNNING, reason="batch started")
        self._orders.transition(
            uow,
            actor,
            order,
            OrderStatus.IN_PRODUCTION,
            reason=f"batch {batch.batch_number} started",
            extra={"batch_id": batch.id},
        )
        self._network.set_machine_status(
            uow,
            actor,
            machine.id,
            MachineStatus.BUSY,
            reason=f"running batch {batch.batch_number}",
            commit=False,
        )
        uow.commit()
        return batch

    def hand_over(self, uow: UnitOfWork, actor: Actor, batch_id: str) -> BatchRecord:
        """Claim a started batch for its machine. Only one worker wins (row version); the
        others get a Conflict, or a refusal once it has been handed over."""
        batch = self.get(uow, batch_id)
        if batch.status != BatchStatus.IN_PROGRESS.value or batch.handed_over_at is not None:
            raise Refused(
                f"batch {batch.batch_number} was already handed to its machine",
                field="batch_id",
                code="already_handed_over",
            )
        batch.handed_over_at = uow.clock.now()
        batch.lease_expires_at = batch.handed_over_at + self.lease
        self.add_step(uow, actor, batch, "handed_to_machine", {"machine_id": batch.machine_id})
        uow.commit()
        return batch

    # --- leases: a running batch lives while its machine reports ------------------------------
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
        running = self.batches(uow, status=BatchStatus.IN_PROGRESS.value)
        return [b for b in running if (end := self.lease_end(b)) is not None and end < now]

    def abandon_orphan(self, uow: UnitOfWork, actor: Actor, batch_id: str) -> BatchRecord:
        """The runner's sweep: close an orphaned batch (failed, machine freed, order
        re-plannable) and open a deviation for a person, audited, in one transaction. Refused
        when the batch is not (or no longer) an orphan."""
        batch = self.get(uow, batch_id)
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
        batch = self.get(uow, batch_id)
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
        return self.record_run(uow, actor, batch.id, DomainError(reason, code=kind))

    def execute(self, uow: UnitOfWork, batch_id: str) -> RunResult | DomainError:
        """Hand the signed ticket to the machine; runs outside any transaction."""
        batch = self.get(uow, batch_id)
        job = self._scheduling.get(uow, batch.job_id)
        machine = self._network.get_machine(uow, batch.machine_id)
        uow.session.rollback()  # hold no transaction open while the machine works
        try:
            return self.fleet.adapter_for(machine).execute(SignedTicket.from_dict(job.ticket or {}))
        except DomainError as exc:
            return exc

    def record_run(
        self, uow: UnitOfWork, actor: Actor, batch_id: str, outcome: RunResult | DomainError
    ) -> BatchRecord:
        """Write the machine's evidence into the batch record and close it."""
        batch = self.get(uow, batch_id)
        job = self._scheduling.get(uow, batch.job_id)
        order = self._orders.get(uow, batch.order_id)
        mf = self._master_files.get(uow, batch.master_file_id)  # the version the batch started with
        if isinstance(outcome, DomainError):
            batch.failure_reason = outcome.message
            batch.finished_at = uow.clock.now()
            self.add_step(
                uow,
                actor,
                batch,
                "machine_refused",
                {"code": outcome.code, "reason": outcome.message},
            )
            self._transition(uow, actor, batch, BatchStatus.FAILED, reason=outcome.message)
            self._scheduling.transition(uow, actor, job, JobStatus.FAILED, reason=outcome.message)
            self._orders.transition(uow, actor, order, OrderStatus.FAILED, reason=outcome.message)
            uow.emit(BatchFailed(batch.id, outcome.message))
        else:
            summary, excursions = summarise_telemetry(
                ((r.metric, r.value) for r in outcome.telemetry), mf.process_parameters
            )
            batch.measurements, batch.units_made = self._measurements(batch, mf, outcome)
            batch.telemetry_summary = summary
            batch.telemetry = [
                [r.at.isoformat(), r.metric, round(r.value, 3)] for r in outcome.telemetry
            ]
            batch.cpp_excursions = excursions
            batch.machine_events = list(outcome.events)
            batch.machine_firmware = outcome.firmware
            batch.finished_at = outcome.finished_at
            if outcome.ticket_hash != batch.ticket_hash:
                excursions.append("machine reported a different ticket hash than was issued")
            self.add_step(
                uow,
                actor,
                batch,
                "run_finished",
                {
                    "units": len(outcome.units),
                    "excursions": len(excursions),
                    "machine_events": list(outcome.events),
                },
            )
            self._transition(
                uow, actor, batch, BatchStatus.COMPLETED, reason="machine run finished"
            )
            self._scheduling.transition(
                uow, actor, job, JobStatus.COMPLETED, reason="machine run finished"
            )
            self._orders.transition(
                uow,
                actor,
                order,
                OrderStatus.AWAITING_RELEASE,
                reason=f"batch {batch.batch_number} made",
            )
            uow.emit(BatchCompleted(batch.id))
        machine = self._network.get_machine(uow, batch.machine_id)
        if machine.status == MachineStatus.BUSY.value:  # not if put into maintenance meanwhile
            self._network.set_machine_status(
                uow,
                system_actor("machine-adapter"),  # the machine reports its run over
                machine.id,
                MachineStatus.AVAILABLE,
                reason=f"batch {batch.batch_number} ended",
                commit=False,
            )
        uow.commit()
        return batch

    def _measurements(
        self, batch: BatchRecord, mf: MasterFile, outcome: RunResult
    ) -> tuple[dict[str, Any], int]:
        """The run's measurement document, made and validated by the product's family, and the
        units made. The document's keys join the record's signed content: none may be one of
        the record's own."""
        kit: MachineKit = self._families.get(mf.product_family).machines
        document = kit.check_measurements(kit.measurement_document(outcome))
        clash = sorted(set(document) & set(batch.content()))
        if clash:
            raise ValidationFailed(
                f"the {mf.product_family} measurement document uses the batch record's own key "
                f"{clash[0]!r}",
                field=f"measurements.{clash[0]}",
            )
        return document, kit.units_made(document)

    # --- batch record ------------------------------------------------------------------------
    def add_step(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        name: str,
        detail: dict[str, Any] | None = None,
    ) -> BatchStep:
        seq = (
            uow.session.scalar(
                select(func.max(BatchStep.seq)).where(BatchStep.batch_id == batch.id)
            )
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
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        target: BatchStatus,
        *,
        reason: str,
    ) -> None:
        """Disposition a batch (quality calls this inside its own transaction)."""
        self._transition(uow, actor, batch, target, reason=reason)

    def _transition(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        target: BatchStatus,
        *,
        reason: str,
    ) -> None:
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

    def get(self, uow: UnitOfWork, batch_id: str) -> BatchRecord:
        batch = uow.session.get(BatchRecord, batch_id) or uow.session.scalar(
            select(BatchRecord).where(BatchRecord.batch_number == batch_id)
        )
        if batch is None:
            raise NotFound(f"no batch {batch_id!r}", field="batch_id")
        return batch

    def steps(self, uow: UnitOfWork, batch_id: str) -> list[BatchStep]:
        return list(
            uow.session.scalars(
                select(BatchStep).where(BatchStep.batch_id == batch_id).order_by(BatchStep.seq)
            )
        )

    def batches(
        self, uow: UnitOfWork, *, order_id: str | None = None, status: str | None = None
    ) -> list[BatchRecord]:
        stmt = select(BatchRecord).order_by(BatchRecord.started_at.desc())
        if order_id:
            stmt = stmt.where(BatchRecord.order_id == order_id)
        if status:
            stmt = stmt.where(BatchRecord.status == status)
        return list(uow.session.scalars(stmt))

    # --- master-file steps: sequence and sign-off (the use cases are in quality.records) --------
    def step_states(self, uow: UnitOfWork, batch: BatchRecord) -> list[StepState]:
        """The batch's master-file steps in order, each with what has happened to it."""
        mf = self._master_files.get(uow, batch.master_file_id)  # the version the batch started
        signoffs = {s.code: s for s in self.signoffs(uow, batch.id)}
        recorded: dict[str, datetime] = {}
        for step in self.steps(uow, batch.id):
            recorded.setdefault(step.name, step.at)
        states = []
        for i, spec in enumerate(mf.record_steps or [], start=1):
            manual = bool(spec.get("manual", True))
            states.append(
                StepState(
                    position=i,
                    code=spec["code"],
                    title=spec["title"],
                    manual=manual,
                    critical=bool(spec.get("critical", False)),
                    entry_fields=dict(spec.get("entry") or {}),
                    recorded_at=None if manual else recorded.get(spec["code"]),
                    signoff=signoffs.get(spec["code"]) if manual else None,
                )
            )
        return states

    def signoffs(self, uow: UnitOfWork, batch_id: str) -> list[StepSignoff]:
        return list(
            uow.session.scalars(
                select(StepSignoff)
                .where(StepSignoff.batch_id == batch_id)
                .order_by(StepSignoff.position)
            )
        )

    def check_step_signable(
        self,
        uow: UnitOfWork,
        batch: BatchRecord,
        code: str,
        excused: Mapping[str, str],
    ) -> tuple[StepState, str | None]:
        """Raise unless manual step `code` may be signed now: the batch is open, the step is
        the master file's and not signed yet, every earlier step is done (a critical entry
        also verified) or named by an open deviation (`excused`: step code -> deviation id).
        Returns the step and the deviation that allowed skipping, if one did."""
        if batch.status not in SIGNABLE:
            raise Refused(
                f"batch {batch.batch_number} is {batch.status}; its steps can no longer be signed",
                field="batch_id",
                code="batch_closed",
            )
        states = self.step_states(uow, batch)
        state = next((s for s in states if s.code == code), None)
        if state is None:
            known = ", ".join(s.code for s in states) or "none"
            raise NotFound(
                f"master file {batch.master_file_code} v{batch.master_file_version} has no step "
                f"{code!r} (steps: {known})",
                field="code",
            )
        if not state.manual:
            raise Refused(
                f"step {code} is a machine step; the platform records it",
                field="code",
                code="machine_step",
            )
        if state.signoff is not None:
            raise Conflict(
                f"step {code} was already performed by {state.signoff.performed_by_name}",
                field="code",
                code="already_performed",
            )
        deviation = None
        for earlier in states[: state.position - 1]:
            if earlier.status == "awaiting_verification":
                raise Refused(
                    f"step {earlier.code} ({earlier.title}) has a critical entry not yet "
                    f"verified by a second person; step {code} waits for it",
                    field="code",
                    code="unverified_entry",
                )
            if earlier.done:
                continue
            if earlier.code in excused:
                deviation = deviation or excused[earlier.code]
                continue
            raise Refused(
                f"step {code} cannot be signed before step {earlier.code} ({earlier.title}); "
                f"sign {earlier.code} first, or open a deviation naming it",
                field="code",
                code="out_of_sequence",
            )
        return state, deviation

    def record_signoff(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        state: StepState,
        signoff: StepSignoff,
        sig: Signature,
    ) -> StepSignoff:
        """Store a performed step with its signature and audit row (no commit)."""
        signoff.signature_id = sig.id
        uow.session.add(signoff)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "batch_step",
            signoff.id,
            new={
                "batch_id": batch.id,
                "code": state.code,
                "entry": signoff.entry,
                "signature_id": sig.id,
                "meaning": sig.meaning,
                "deviation_id": signoff.deviation_id,
            },
            site_id=batch.site_id,
        )
        self.add_step(
            uow,
            actor,
            batch,
            state.code,
            {"signoff_id": signoff.id, "signature_id": sig.id, "meaning": sig.meaning},
        )
        return signoff

    def check_step_verifiable(
        self, uow: UnitOfWork, actor: Actor, batch: BatchRecord, code: str
    ) -> StepSignoff:
        """Raise unless `actor` may verify the critical entry of step `code` now."""
        if batch.status not in SIGNABLE:
            raise Refused(
                f"batch {batch.batch_number} is {batch.status}; its steps can no longer be signed",
                field="batch_id",
                code="batch_closed",
            )
        state = next((s for s in self.step_states(uow, batch) if s.code == code), None)
        if state is None:
            raise NotFound(
                f"master file {batch.master_file_code} has no step {code!r}", field="code"
            )
        if not state.critical:
            raise Refused(
                f"step {code} has no critical entry to verify", field="code", code="not_critical"
            )
        signoff = state.signoff
        if signoff is None:
            raise Refused(
                f"step {code} has not been performed yet; there is nothing to verify",
                field="code",
                code="not_performed",
            )
        if signoff.verified_by is not None:
            raise Conflict(
                f"step {code} was already verified by {signoff.verified_by_name}",
                field="code",
                code="already_verified",
            )
        if signoff.performed_by == actor.user_id:
            raise Refused(
                f"step {code} was performed by {signoff.performed_by_name}; a second person "
                "must verify it",
                field="code",
                code="same_person",
            )
        return signoff

    def record_verification(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        signoff: StepSignoff,
        sig: Signature,
    ) -> StepSignoff:
        """Store a second person's verification with its signature and audit row (no commit)."""
        signoff.verified_by, signoff.verified_by_name = actor.user_id, sig.signer_name
        signoff.verified_at, signoff.verified_meaning = sig.signed_at, sig.meaning
        signoff.verify_signature_id = sig.id
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            "batch_step",
            signoff.id,
            old={"verified_by": None},
            new={"verified_by": actor.user_id, "signature_id": sig.id, "meaning": sig.meaning},
            site_id=batch.site_id,
        )
        self.add_step(
            uow,
            actor,
            batch,
            f"{signoff.code}_verified",
            {"signoff_id": signoff.id, "signature_id": sig.id, "meaning": sig.meaning},
        )
        return signoff

    def new_signoff(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        state: StepState,
        entry: dict[str, Any],
        meaning: str,
        deviation_id: str | None,
    ) -> StepSignoff:
        """The row a performer signs (not yet added: the signature comes first)."""
        return StepSignoff(
            id=new_id("stp"),
            batch_id=batch.id,
            code=state.code,
            position=state.position,
            title=state.title,
            critical=state.critical,
            entry=entry or None,
            performed_by=actor.user_id,
            performed_by_name=actor.full_name,
            performed_at=uow.clock.now(),
            performed_meaning=meaning.strip(),
            signature_id="",
            deviation_id=deviation_id,
            verified_by=None,
            verified_by_name=None,
            verified_at=None,
            verified_meaning=None,
            verify_signature_id=None,
        )

    def record_gaps(
        self, uow: UnitOfWork, batch: BatchRecord, excused: Collection[str] = ()
    ) -> list[str]:
        """Why the batch record is not complete: manual steps not performed (unless a deviation
        names them, `excused`), critical entries not verified; empty when complete. Release is
        refused while any is left."""
        gaps = []
        for state in self.step_states(uow, batch):
            if state.manual and state.signoff is None and state.code not in excused:
                gaps.append(f"step {state.code} ({state.title}) not performed")
            elif state.status == "awaiting_verification":
                gaps.append(f"step {state.code} ({state.title}): entry not verified")
        return gaps
