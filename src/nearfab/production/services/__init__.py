"""Production use cases, one module per cluster, behind one service:

- `gate`       whether a product may be made here, now (ProductionGate)
- `ticketing`  the control site signs a job ticket (TicketDesk)
- `runs`       start a batch, hand the ticket to the machine, record its evidence (Runs)
- `leases`     hand-over, leases renewed by machine reports, orphans and abandonment (Leases)
- `records`    the batch record: find batches, platform-recorded steps, audited transitions
- `steps`      the master file's manual steps: sequence, sign-off rows, completeness (BatchSteps)

`ProductionService` is what the other domains and the entry points hold: it builds the clusters
and forwards each use case to its own.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from nearfab.common.errors import DomainError
from nearfab.designs import FamilyRegistry
from nearfab.identity import Actor
from nearfab.masterfiles import MasterFileService
from nearfab.materials import MaterialService
from nearfab.network import NetworkService
from nearfab.orders import OrderService
from nearfab.production.enums import BatchStatus
from nearfab.production.fleet import MachineFleet
from nearfab.production.machines import RunResult
from nearfab.production.models import BatchRecord, BatchStep, StepSignoff
from nearfab.production.services import records
from nearfab.production.services.gate import ProductionGate
from nearfab.production.services.leases import DEFAULT_LEASE, AbandonHook, Leases
from nearfab.production.services.runs import Runs
from nearfab.production.services.steps import SIGNABLE, BatchSteps, StepState, check_entry
from nearfab.production.services.ticketing import (
    TICKET_LIFETIME,
    BuildAwaiting,
    TicketDesk,
    approval_meaning,
)
from nearfab.production.tickets import SignedTicket, TicketSigner
from nearfab.scheduling import SchedulingService
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.identity import Signature, SignatureService
    from nearfab.masterfiles import MasterFile
    from nearfab.network import Machine, Site

__all__ = [
    "DEFAULT_LEASE",
    "SIGNABLE",
    "TICKET_LIFETIME",
    "AbandonHook",
    "BatchSteps",
    "BuildAwaiting",
    "Leases",
    "ProductionGate",
    "ProductionService",
    "Runs",
    "StepState",
    "TicketDesk",
    "approval_meaning",
    "check_entry",
]


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
        signatures: SignatureService | None = None,
    ) -> None:
        self.gate = ProductionGate(network, master_files, orders)
        self.tickets = TicketDesk(self.gate, orders, scheduling, signer, families, signatures)
        self.runs = Runs(
            self.gate,
            network,
            master_files,
            materials,
            orders,
            scheduling,
            families,
            signer,
            fleet,
        )
        self.record_steps = BatchSteps(master_files)
        # the machine starts its job only once the steps before it are signed (and verified)
        self.leases = Leases(self.runs.record, ready_to_run=self.record_steps.check_ready_to_run)

    @property
    def fleet(self) -> MachineFleet:
        return self.runs.fleet

    @property
    def lease(self) -> timedelta:
        """How long a handed-over batch lives without a report from its machine."""
        return self.leases.lease

    @lease.setter
    def lease(self, value: timedelta) -> None:
        self.leases.lease = value

    # --- the gate and tickets ------------------------------------------------------------------
    def check_production_allowed(
        self,
        uow: UnitOfWork,
        mf: MasterFile,
        site: Site,
        machine: Machine,
        operator_id: str | None = None,
    ) -> None:
        """Raise Refused (each with its own code) unless this product may be made here, now."""
        self.gate.check(uow, mf, site, machine, operator_id)

    def issue_ticket(self, uow: UnitOfWork, actor: Actor, job_id: str) -> SignedTicket:
        """The control site signs what the machine is authorised to make."""
        return self.tickets.issue(uow, actor, job_id)

    def builds_awaiting_approval(self, uow: UnitOfWork, actor: Actor) -> list[BuildAwaiting]:
        """The planned builds the control site must approve (ticketing.TicketDesk)."""
        return self.tickets.awaiting_approval(uow, actor)

    def approve_build(
        self,
        uow: UnitOfWork,
        actor: Actor,
        job_id: str,
        *,
        password: str,
        meaning: str | None = None,
        username: str | None = None,
        totp: str | None = None,
    ) -> SignedTicket:
        """The control site's e-signed approval of a build, which issues its ticket."""
        return self.tickets.approve(
            uow, actor, job_id, password=password, meaning=meaning, username=username, totp=totp
        )

    # --- runs ----------------------------------------------------------------------------------
    def start_batch(
        self, uow: UnitOfWork, actor: Actor, job_id: str, *, operator_id: str | None = None
    ) -> BatchRecord:
        """Start a ticketed job (runs.Runs.start)."""
        return self.runs.start(uow, actor, job_id, operator_id=operator_id)

    def execute(self, uow: UnitOfWork, batch_id: str) -> RunResult | DomainError:
        """Hand the signed ticket to the machine; runs outside any transaction."""
        return self.runs.execute(uow, batch_id)

    def record_run(
        self, uow: UnitOfWork, actor: Actor, batch_id: str, outcome: RunResult | DomainError
    ) -> BatchRecord:
        """Write the machine's evidence into the batch record and close it."""
        return self.runs.record(uow, actor, batch_id, outcome)

    # --- hand-over and leases ------------------------------------------------------------------
    def on_abandon(self, hook: AbandonHook) -> None:
        """Run `hook` inside every abandonment's transaction (quality: the deviation)."""
        self.leases.on_abandon(hook)

    def hand_over(self, uow: UnitOfWork, actor: Actor, batch_id: str) -> BatchRecord:
        """Claim a started batch for its machine (one worker wins); refused, audited, while a
        step before the machine start is not signed (and verified) (Leases.hand_over)."""
        return self.leases.hand_over(uow, actor, batch_id)

    def steps_before_start(self, uow: UnitOfWork, batch: BatchRecord) -> list[StepState]:
        """The steps before the machine start still to sign or verify (read only, no audit:
        the runner asks this before it hands a batch over, and leaves the batch waiting)."""
        return self.record_steps.before_start(uow, batch)

    def lease_end(self, batch: BatchRecord) -> datetime | None:
        return self.leases.lease_end(batch)

    def machine_report(self, uow: UnitOfWork, machine_id: str) -> BatchRecord | None:
        """A report from a machine renews the lease of the batch it runs (caller commits)."""
        return self.leases.machine_report(uow, machine_id)

    def orphans(self, uow: UnitOfWork) -> list[BatchRecord]:
        return self.leases.orphans(uow)

    def abandon_orphan(self, uow: UnitOfWork, actor: Actor, batch_id: str) -> BatchRecord:
        return self.leases.abandon_orphan(uow, actor, batch_id)

    def abandon(self, uow: UnitOfWork, actor: Actor, batch_id: str, *, reason: str) -> BatchRecord:
        return self.leases.abandon(uow, actor, batch_id, reason=reason)

    # --- the batch record ----------------------------------------------------------------------
    def add_step(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        name: str,
        detail: dict[str, Any] | None = None,
    ) -> BatchStep:
        return records.add_step(uow, actor, batch, name, detail)

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
        records.transition(uow, actor, batch, target, reason=reason)

    def get(self, uow: UnitOfWork, batch_id: str) -> BatchRecord:
        return records.get(uow, batch_id)

    def steps(self, uow: UnitOfWork, batch_id: str) -> list[BatchStep]:
        return records.steps(uow, batch_id)

    def batches(
        self, uow: UnitOfWork, *, order_id: str | None = None, status: str | None = None
    ) -> list[BatchRecord]:
        return records.batches(uow, order_id=order_id, status=status)

    # --- master-file steps (the sign-off use cases are in quality.records) ---------------------
    def step_states(self, uow: UnitOfWork, batch: BatchRecord) -> list[StepState]:
        return self.record_steps.step_states(uow, batch)

    def signoffs(self, uow: UnitOfWork, batch_id: str) -> list[StepSignoff]:
        return self.record_steps.signoffs(uow, batch_id)

    def signoffs_of(
        self, uow: UnitOfWork, batch_ids: Sequence[str]
    ) -> dict[str, list[StepSignoff]]:
        return self.record_steps.signoffs_of(uow, batch_ids)

    def check_step_signable(
        self, uow: UnitOfWork, batch: BatchRecord, code: str, excused: Mapping[str, str]
    ) -> tuple[StepState, str | None]:
        return self.record_steps.check_step_signable(uow, batch, code, excused)

    def record_signoff(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        state: StepState,
        signoff: StepSignoff,
        sig: Signature,
    ) -> StepSignoff:
        return self.record_steps.record_signoff(uow, actor, batch, state, signoff, sig)

    def check_step_verifiable(
        self, uow: UnitOfWork, actor: Actor, batch: BatchRecord, code: str
    ) -> StepSignoff:
        return self.record_steps.check_step_verifiable(uow, actor, batch, code)

    def record_verification(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        signoff: StepSignoff,
        sig: Signature,
    ) -> StepSignoff:
        return self.record_steps.record_verification(uow, actor, batch, signoff, sig)

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
        return self.record_steps.new_signoff(uow, actor, batch, state, entry, meaning, deviation_id)

    def record_gaps(
        self, uow: UnitOfWork, batch: BatchRecord, excused: Collection[str] = ()
    ) -> list[str]:
        return self.record_steps.record_gaps(uow, batch, excused)

    def record_gaps_of(
        self,
        uow: UnitOfWork,
        batches: Sequence[BatchRecord],
        excused: Mapping[str, Collection[str]],
    ) -> dict[str, list[str]]:
        return self.record_steps.record_gaps_of(uow, batches, excused)
