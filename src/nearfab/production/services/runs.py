"""Machine runs: a ticketed job started (the gate checked again, the ticket verified, material
drawn, the record opened), the signed ticket handed to the machine, and the machine's evidence
(or its refusal) written into the batch record, which closes."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from nearfab.common.errors import DomainError, Forbidden, Refused, ValidationFailed
from nearfab.designs import FamilyRegistry
from nearfab.identity import Actor, AuditAction, Permission, audit, authorize, refuse, system_actor
from nearfab.masterfiles import MasterFileService
from nearfab.materials import MaterialService
from nearfab.network import MachineStatus, NetworkService
from nearfab.orders import OrderService, OrderStatus
from nearfab.production.enums import BatchStatus
from nearfab.production.events import BatchCompleted, BatchFailed
from nearfab.production.fleet import MachineFleet
from nearfab.production.kit import MachineKit
from nearfab.production.logic import batch_number, summarise_telemetry
from nearfab.production.machines import RunResult
from nearfab.production.models import BatchRecord
from nearfab.production.services import records
from nearfab.production.services.gate import ProductionGate
from nearfab.production.tickets import SignedTicket, TicketSigner, verify_ticket
from nearfab.scheduling import JobStatus, SchedulingService
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.masterfiles import MasterFile


class Runs:
    def __init__(
        self,
        gate: ProductionGate,
        network: NetworkService,
        master_files: MasterFileService,
        materials: MaterialService,
        orders: OrderService,
        scheduling: SchedulingService,
        families: FamilyRegistry,
        signer: TicketSigner,
        fleet: MachineFleet,
    ) -> None:
        self._gate = gate
        self._network = network
        self._master_files = master_files
        self._materials = materials
        self._orders = orders
        self._scheduling = scheduling
        self._families = families
        self._signer = signer
        self.fleet = fleet

    def start(
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
        mf, site, machine = self._gate.context(uow, job)
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
            self._gate.check(uow, mf, site, machine, operator_id)
            # a product made from the patient's collection waits for it to be recorded
            self._scheduling.require_collected(uow, self._orders.get(uow, job.order_id))
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
        records.add_step(
            uow,
            actor,
            batch,
            "material_dispensed",
            {"lot": lot.lot_number, "grams": needed, "operator_id": operator_id},
        )
        records.add_step(
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

    def execute(self, uow: UnitOfWork, batch_id: str) -> RunResult | DomainError:
        """Hand the signed ticket to the machine; runs outside any transaction."""
        batch = records.get(uow, batch_id)
        job = self._scheduling.get(uow, batch.job_id)
        machine = self._network.get_machine(uow, batch.machine_id)
        uow.session.rollback()  # hold no transaction open while the machine works
        try:
            return self.fleet.adapter_for(machine).execute(SignedTicket.from_dict(job.ticket or {}))
        except DomainError as exc:
            return exc

    def record(
        self, uow: UnitOfWork, actor: Actor, batch_id: str, outcome: RunResult | DomainError
    ) -> BatchRecord:
        """Write the machine's evidence into the batch record and close it."""
        batch = records.get(uow, batch_id)
        job = self._scheduling.get(uow, batch.job_id)
        order = self._orders.get(uow, batch.order_id)
        mf = self._master_files.get(uow, batch.master_file_id)  # the version the batch started with
        if isinstance(outcome, DomainError):
            batch.failure_reason = outcome.message
            batch.finished_at = uow.clock.now()
            records.add_step(
                uow,
                actor,
                batch,
                "machine_refused",
                {"code": outcome.code, "reason": outcome.message},
            )
            records.transition(uow, actor, batch, BatchStatus.FAILED, reason=outcome.message)
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
            records.add_step(
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
            records.transition(
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
