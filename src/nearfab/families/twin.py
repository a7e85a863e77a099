"""What the product families' digital twins and machine kits share (production.kit.MachineKit).

Every family's twin verifies a signed ticket as a real machine must, keeps the faults injected
into it until maintenance clears them, refuses a replayed ticket, streams its telemetry to the
fleet's sink while it runs and returns a RunResult; only its physics, metrics and faults are its
own. `Twin` holds the common state, `TwinRun` one run's bookkeeping (run id, events, sink,
result) and `FamilyMachines` the kit's common parts, with checks of the measurement document
(`check_all_keys`, `number_at`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nearfab.common.clock import Clock
from nearfab.common.errors import ValidationFailed
from nearfab.network import Machine
from nearfab.production.kit import TwinSetup, check_document_keys, check_machine_type
from nearfab.production.machines import (
    Fault,
    MachineAdapter,
    RunResult,
    TelemetryReading,
    TelemetrySink,
    UnitMeasurement,
    admit_ticket,
)
from nearfab.production.tickets import SignedTicket

if TYPE_CHECKING:  # typing.Unpack and NotRequired for **kwargs are 3.12's; only mypy reads them
    from typing import NotRequired

    from typing_extensions import TypedDict

    class TwinArguments(TypedDict):
        """The keyword arguments every twin takes (Twin.__init__), besides its machine id."""

        firmware: str
        control_public_key_pem: str
        clock: Clock
        seed: NotRequired[int | None]
        faults: NotRequired[Sequence[Fault]]
        telemetry: NotRequired[TelemetrySink | None]


class Twin:
    """Base of a family's digital twin: identity, the control site's key, the injected clock,
    a seeded random generator (deterministic for a given seed), persisting faults, the tickets
    already run and the telemetry sink. A subclass sets `fault_check` (its family's check) and
    takes its own keyword arguments besides `**twin: Unpack[TwinArguments]`."""

    @staticmethod
    def fault_check(fault: Fault) -> None:
        raise NotImplementedError

    def __init__(
        self,
        machine_id: str,
        *,
        firmware: str,
        control_public_key_pem: str,
        clock: Clock,
        seed: int | None = None,
        faults: Sequence[Fault] = (),
        telemetry: TelemetrySink | None = None,
    ) -> None:
        for fault in faults:
            self.fault_check(fault)
        self.machine_id = machine_id
        self.firmware = firmware
        self._public_key_pem = control_public_key_pem
        self.clock = clock
        self._rng = np.random.default_rng(seed)
        self._faults: list[Fault] = list(faults)
        # tickets this machine has run: a ticket authorises one run, never a replay
        self._executed: set[str] = set()
        self.telemetry = telemetry

    @property
    def faults(self) -> tuple[Fault, ...]:
        return tuple(self._faults)

    def inject_fault(self, fault: Fault) -> None:
        """Make every following run suffer `fault` (like a real fault, it persists)."""
        self.fault_check(fault)
        self._faults.append(fault)

    def clear_faults(self) -> None:
        """Maintenance: the machine is healthy again."""
        self._faults.clear()

    def admit(self, ticket: SignedTicket) -> None:
        """Verify `ticket` (signature, machine, expiry, replay) as a real machine must
        (TicketRejected); the twin marks it run with `mark_run` once it has read the design."""
        admit_ticket(
            ticket,
            self._public_key_pem,
            machine_id=self.machine_id,
            now=self.clock.now(),
            executed=self._executed,
        )

    def mark_run(self, ticket: SignedTicket) -> None:
        self._executed.add(ticket.ticket_hash)

    def ticks(self, every_s: float, duration_s: float) -> Iterator[float]:
        """Sleep the clock through `duration_s` in steps of `every_s` (the last one shorter),
        yielding the seconds elapsed after each: the twin's sampling instants."""
        elapsed = 0.0
        for k in range(1, max(1, math.ceil(duration_s / every_s - 1e-9)) + 1):
            mark = min(k * every_s, duration_s)
            self.clock.sleep(mark - elapsed)
            elapsed = mark
            yield elapsed


class TwinRun:
    """One run of a twin: its id (the ticket's job), its events (opening with `events`, then
    the faults injected), its start on the clock and on the telemetry sink; `stream` sends a
    batch of readings live, `finish` ends the run on the sink and returns the RunResult."""

    def __init__(self, twin: Twin, ticket: SignedTicket, events: Iterable[str]) -> None:
        self.twin = twin
        self.ticket = ticket
        self.id = str(ticket.payload.get("job_id") or ticket.ticket_hash[:32])
        self.events: list[str] = list(events)
        self.events.extend(f"fault injected: {fault.describe()}" for fault in twin.faults)
        self.started_at = twin.clock.now()
        self.sink = twin.telemetry
        if self.sink is not None:
            self.sink.run_started(self.id)

    def stream(self, batch: Sequence[TelemetryReading]) -> None:
        if self.sink is not None:
            self.sink.readings(self.id, batch)

    def finish(
        self,
        units: Sequence[UnitMeasurement],
        telemetry: Sequence[TelemetryReading],
        last_event: str,
        *,
        ok: bool = True,
    ) -> RunResult:
        twin = self.twin
        finished_at = twin.clock.now()
        self.events.append(last_event)
        if self.sink is not None:
            self.sink.run_ended(self.id, ok)
        return RunResult(
            machine_id=twin.machine_id,
            firmware=twin.firmware,
            ticket_hash=self.ticket.ticket_hash,
            started_at=self.started_at,
            finished_at=finished_at,
            units=tuple(units),
            telemetry=tuple(telemetry),
            events=tuple(self.events),
        )


class FamilyMachines:
    """The common part of a family's MachineKit: the fault check, the twin's common arguments
    and no adapter of its own (a real machine is registered by its site's gateway). A subclass
    sets `family`, `machine_types`, `fault_kinds` and `fault_check`."""

    family: str
    machine_types: tuple[str, ...]
    fault_kinds: tuple[str, ...]

    @staticmethod
    def fault_check(fault: Fault) -> None:
        raise NotImplementedError

    def check_fault(self, fault: Fault) -> None:
        self.fault_check(fault)

    def twin_arguments(self, machine: Machine, setup: TwinSetup) -> TwinArguments:
        """Refused (field `machine_type`) for a type the family does not run; else the keyword
        arguments every twin takes, from `machine` and `setup`."""
        check_machine_type(self.family, self.machine_types, machine)
        return {
            "firmware": machine.firmware,
            "control_public_key_pem": setup.control_public_key_pem,
            "clock": setup.clock,
            "seed": setup.seed,
            "telemetry": setup.telemetry,
        }

    def connect(self, machine: Machine) -> MachineAdapter | None:
        return None


def check_all_keys(
    document: Any, keys: tuple[str, ...], *, optional: tuple[str, ...] = ()
) -> Mapping[str, Any]:
    """A measurement document holding every one of `keys` and nothing but them and `optional`
    (ValidationFailed naming `measurements.<key>`)."""
    checked = check_document_keys(document, (*keys, *optional))
    missing = [key for key in keys if key not in checked]
    if missing:
        raise ValidationFailed(
            f"measurements.{missing[0]} is missing", field=f"measurements.{missing[0]}"
        )
    return checked


def number_at(
    value: Any, where: str, what: str | None = None, *, high: float | None = None
) -> float:
    """`value` as a finite number >= 0 (and at most `high`), else ValidationFailed naming
    `where` (and saying `what` it must be)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (high is not None and value > high)
    ):
        limit = f" and at most {high:g}" if high is not None else ""
        rule = f"{what} (a number >= 0{limit})" if what else f"a number >= 0{limit}"
        raise ValidationFailed(f"{where} must be {rule}, not {value!r}", field=where)
    return float(value)
