"""Drive the network: plan designed orders, ticket jobs, run machines, until a person is needed."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from nearfab.common.errors import DomainError
from nearfab.identity import system_actor
from nearfab.masterfiles import MasterFileService
from nearfab.network import MachineStatus, NetworkService
from nearfab.orders import OrderService, OrderStatus
from nearfab.production.machines import RunResult
from nearfab.production.services import ProductionService
from nearfab.production.services.steps import waiting_for
from nearfab.scheduling import JobStatus, SchedulingService
from nearfab.uow import UnitOfWork

log = logging.getLogger(__name__)

# how long a job the gate refused waits before this runner tries it again
REFUSAL_HOLD_S = 300.0


@dataclass
class RunSummary:
    scheduled: list[str] = field(default_factory=list)
    tickets: list[str] = field(default_factory=list)
    batches_completed: list[str] = field(default_factory=list)
    batches_failed: list[str] = field(default_factory=list)
    # handed-over batches whose machine never reported within the lease: closed, deviation
    # opened for a person, machine freed
    batches_orphaned: list[str] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)  # what waits, and why
    rounds: int = 0

    def progressed(self) -> bool:
        return bool(
            self.scheduled
            or self.tickets
            or self.batches_completed
            or self.batches_failed
            or self.batches_orphaned
        )

    def merge(self, other: RunSummary) -> None:
        self.scheduled += other.scheduled
        self.tickets += other.tickets
        self.batches_completed += other.batches_completed
        self.batches_failed += other.batches_failed
        self.batches_orphaned += other.batches_orphaned
        self.blocked = other.blocked
        self.rounds += 1

    def to_dict(self) -> dict[str, object]:
        return {
            "rounds": self.rounds,
            "scheduled": self.scheduled,
            "tickets": self.tickets,
            "batches_completed": self.batches_completed,
            "batches_failed": self.batches_failed,
            "batches_orphaned": self.batches_orphaned,
            "blocked": self.blocked,
        }


class NetworkRunner:
    """Moves every order as far as machines and rules allow; stops where a person must act."""

    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        network: NetworkService,
        master_files: MasterFileService,
        orders: OrderService,
        scheduling: SchedulingService,
        production: ProductionService,
        *,
        parallel_machines: int = 4,
        sweep: Callable[[], None] | None = None,
    ) -> None:
        self._uow = uow_factory
        self._network = network
        self._master_files = master_files
        self._orders = orders
        self._scheduling = scheduling
        self._production = production
        self._parallel = max(1, parallel_machines)
        self._sweep = sweep
        # jobs the gate refused (at ticketing or start), with why and when: not retried for a
        # while, since each retry adds the same refusal to the audit trail; a person must act
        self._refused: dict[str, tuple[str, float]] = {}
        # one step at a time in this process (the demo thread and API calls share the runner)
        self._lock = threading.Lock()
        # machine results not yet written to their batch record (a failed write is retried with
        # the same evidence; the machine is never asked to run a ticket twice)
        self._outcomes: dict[str, RunResult | DomainError] = {}
        self._planner = system_actor("planner")
        self._control = system_actor("control-site")
        self._agent = system_actor("site-agent")
        self._sweeper = system_actor("runner")

    def run_until_idle(self, max_rounds: int = 1000) -> RunSummary:
        total = RunSummary()
        for _ in range(max_rounds):
            step = self.step()
            total.merge(step)
            if not step.progressed():
                break
        return total

    def step(self) -> RunSummary:
        with self._lock:
            summary = RunSummary()
            if self._sweep is not None:
                self._sweep()
            self._close_orphans(summary)
            self._schedule(summary)
            self._ticket(summary)
            self._run(summary)
            return summary

    def _close_orphans(self, summary: RunSummary) -> None:
        """Batches handed to a machine that has not reported within the lease (a worker
        killed mid-run, a dead machine or link) would hold their machine for ever: each is
        closed with a deviation for a person (ProductionService.abandon_orphan, one audited
        transaction) and its machine freed. A result this runner still holds is recorded
        instead (never abandoned)."""
        with self._uow() as uow:
            orphans = [
                b.id
                for b in self._production.orphans(uow)
                if b.id not in self._outcomes and self._ours(b.site_id)
            ]
        for batch_id in orphans:
            try:
                with self._uow() as uow:
                    self._production.abandon_orphan(uow, self._sweeper, batch_id)
            except DomainError as exc:  # reported meanwhile, or closed by another worker
                summary.blocked[batch_id] = exc.message
                continue
            log.warning("batch %s was orphaned (no machine report in its lease); closed", batch_id)
            summary.batches_orphaned.append(batch_id)

    def _ours(self, site_id: str | None) -> bool:
        """A site node's runner moves its own site's work only (common/node.py)."""
        return self._network.node.works_for(site_id)

    def _held(self, job_id: str, summary: RunSummary) -> bool:
        held = self._refused.get(job_id)
        if held is None:
            return False
        why, when = held
        if time.monotonic() - when > REFUSAL_HOLD_S:
            del self._refused[job_id]
            return False
        summary.blocked[job_id] = why
        return True

    def _schedule(self, summary: RunSummary) -> None:
        with self._uow() as uow:
            designed = [
                o.id
                for o in self._orders.by_status(uow, OrderStatus.DESIGNED)
                if self._ours(o.site_id)
            ]
        for order_id in designed:
            try:
                with self._uow() as uow:
                    job = self._scheduling.schedule(uow, self._planner, order_id)
                summary.scheduled.append(job.id)
            except DomainError as exc:
                summary.blocked[order_id] = exc.message

    def _ticket(self, summary: RunSummary) -> None:
        with self._uow() as uow:
            planned = [
                (j.id, j.order_id)
                for j in self._scheduling.jobs(uow, JobStatus.PLANNED)
                if self._ours(j.site_id)
            ]
        for job_id, order_id in planned:
            if self._held(job_id, summary):
                continue
            # a product made from a collection from the patient waits, unticketed, until the
            # collection is recorded: a ticket would expire meanwhile, and each refused start
            # would write an audit row on every step
            try:
                with self._uow() as uow:
                    self._scheduling.require_collected(uow, self._orders.get(uow, order_id))
            except DomainError as exc:
                summary.blocked[job_id] = exc.message
                continue
            try:
                with self._uow() as uow:
                    self._production.issue_ticket(uow, self._control, job_id)
                summary.tickets.append(job_id)
            except DomainError as exc:
                self._refused[job_id] = (exc.message, time.monotonic())
                summary.blocked[job_id] = exc.message

    def _operator_on_duty(self, uow: UnitOfWork, site_id: str, code: str) -> str | None:
        """The site's first operator trained on the product: responsible for the batch, while
        the audit trail records the site agent (not the person) as the one who pressed start."""
        for user in self._network.operators_at(uow, site_id):
            if self._network.is_trained(uow, user.id, code):
                return user.id
        return None

    def _waits_for_steps(self, batch_id: str, summary: RunSummary) -> bool:
        """Whether the started batch waits for the master file's steps before the machine
        start (signed, critical entries verified). Asked, not tried: a waiting batch is neither
        failed nor refused (no audit row on every pass); the hand-over itself refuses, audited,
        if they are still missing then."""
        with self._uow() as uow:
            batch = self._production.get(uow, batch_id)
            missing = self._production.steps_before_start(uow, batch)
            if not missing:
                return False
            summary.blocked[batch_id] = (
                f"batch {batch.batch_number} waits for the steps before the machine starts: "
                f"{waiting_for(missing)}"
            )
        return True

    def _run(self, summary: RunSummary) -> None:
        # batches already open: an operator pressed start (not yet handed to the machine), or
        # this runner holds a result it could not record yet, or another process handed it over
        with self._uow() as uow:
            open_batches = [
                b
                for b in self._production.batches(uow, status="in_progress")
                if self._ours(b.site_id)
            ]
        to_hand_over: list[str] = []
        for b in open_batches:
            if b.id in self._outcomes:
                continue  # recorded again below
            if b.handed_over_at is None:
                if not self._waits_for_steps(b.id, summary):
                    to_hand_over.append(b.id)
            else:
                summary.blocked[b.id] = (
                    f"waiting for the machine's report (handed over {b.handed_over_at:%H:%M} UTC)"
                )
        busy: set[str] = {b.machine_id for b in open_batches}
        with self._uow() as uow:
            ready = [
                (j.id, j.machine_id, j.site_id, j.order_id)
                for j in self._scheduling.jobs(uow, JobStatus.TICKET_ISSUED)
                if self._ours(j.site_id)
            ]
        for job_id, machine_id, site_id, order_id in ready:
            if self._held(job_id, summary):
                continue
            if machine_id in busy or len(to_hand_over) >= self._parallel:
                continue
            with self._uow() as uow:
                machine = self._network.get_machine(uow, machine_id)
                if machine.status != MachineStatus.AVAILABLE.value:
                    summary.blocked[job_id] = f"machine {machine.name} is {machine.status}"
                    continue
                order = self._orders.get(uow, order_id)
                operator_id = self._operator_on_duty(uow, site_id, order.master_file_code)
            if operator_id is None:
                summary.blocked[job_id] = (
                    f"no operator at the site is trained on {order.master_file_code}"
                )
                continue
            try:
                with self._uow() as uow:
                    batch = self._production.start_batch(
                        uow, self._agent, job_id, operator_id=operator_id
                    )
            except DomainError as exc:
                if exc.code not in ("machine_unavailable", "concurrent_change"):  # pass by
                    self._refused[job_id] = (exc.message, time.monotonic())
                summary.blocked[job_id] = exc.message
                continue
            busy.add(machine_id)
            # the record is open: its steps before the machine start can be signed now, and
            # the machine waits for them (a later pass hands the batch over)
            if not self._waits_for_steps(batch.id, summary):
                to_hand_over.append(batch.id)
        # claim each batch in the database before its machine gets the ticket: two processes
        # never hand the same batch over twice
        claimed: list[str] = []
        for batch_id in to_hand_over:
            try:
                with self._uow() as uow:
                    self._production.hand_over(uow, self._agent, batch_id)
                claimed.append(batch_id)
            except DomainError as exc:
                summary.blocked[batch_id] = exc.message

        def execute(batch_id: str) -> RunResult | DomainError:
            with self._uow() as uow:
                return self._production.execute(uow, batch_id)

        if claimed:
            with ThreadPoolExecutor(max_workers=self._parallel) as pool:
                for batch_id, outcome in zip(claimed, pool.map(execute, claimed), strict=True):
                    self._outcomes[batch_id] = outcome  # kept until recorded
        for batch_id, outcome in list(self._outcomes.items()):
            try:  # each machine's evidence on its own: one failure must not lose the others
                with self._uow() as uow:
                    batch = self._production.record_run(uow, self._agent, batch_id, outcome)
            except Exception:
                with self._uow() as uow:
                    still_open = self._production.get(uow, batch_id).status == "in_progress"
                if not still_open:  # closed meanwhile (e.g. abandoned): nothing left to record
                    log.warning("batch %s was closed before its result could be recorded", batch_id)
                    del self._outcomes[batch_id]
                    continue
                log.exception("recording batch %s failed; retried next step", batch_id)
                continue
            del self._outcomes[batch_id]
            if isinstance(outcome, DomainError):
                summary.batches_failed.append(batch.id)
            else:
                summary.batches_completed.append(batch.id)
