"""Machine adapters: the interface every machine the platform drives obeys, real or simulated.

A real machine adapter and a digital twin both take a signed job ticket and return a RunResult:
what each unit measured, process telemetry and an event log. What a machine makes, what it
measures and which faults a twin can suffer belong to the product family (its `machines` part,
production.kit.MachineKit); this module holds only what every machine shares, and the helpers a
twin uses to read its ticket (the process parameters, numbers).

A twin verifies the ticket exactly as a real machine must (unsigned, altered, foreign-key,
wrong-machine, expired or replayed tickets are refused), takes all its time from the injected
clock, and is deterministic for a given seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from nearfab.common.errors import ValidationFailed
from nearfab.production.tickets import SignedTicket, TicketRejected, verify_ticket


@dataclass(frozen=True)
class TelemetryReading:
    at: datetime
    metric: str
    value: float
    unit: str


@dataclass(frozen=True)
class UnitMeasurement:
    """What a machine measured on one unit it made, by measurement name (the family's names)."""

    index: int
    at: datetime
    values: Mapping[str, float]


@dataclass(frozen=True)
class Fault:
    """A fault to simulate, active from unit `from_unit` (0-based) to the end of the run.

    `kind` names one of the fault kinds of the machine's family (MachineKit.fault_kinds, checked
    by the family when the fault is injected); `severity` is in that kind's own measure.
    """

    kind: str
    severity: float = 0.3
    from_unit: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind.strip():
            raise ValidationFailed("fault kind must be a non-empty name", field="fault.kind")
        if (
            isinstance(self.severity, bool)
            or not isinstance(self.severity, int | float)
            or not math.isfinite(self.severity)
            or self.severity < 0
        ):
            raise ValidationFailed(
                f"fault severity must be a non-negative number, not {self.severity}",
                field="fault.severity",
            )
        if isinstance(self.from_unit, bool) or not isinstance(self.from_unit, int):
            raise ValidationFailed("fault from_unit must be an integer", field="fault.from_unit")
        if self.from_unit < 0:
            raise ValidationFailed("fault from_unit must be 0 or more", field="fault.from_unit")

    def describe(self) -> str:
        return f"{self.kind} severity {self.severity:.2f} from unit {self.from_unit}"


@dataclass(frozen=True)
class RunResult:
    machine_id: str
    firmware: str
    ticket_hash: str
    started_at: datetime
    finished_at: datetime
    units: tuple[UnitMeasurement, ...]
    telemetry: tuple[TelemetryReading, ...]
    events: tuple[str, ...]


class TelemetrySink(Protocol):
    """Where a machine's live telemetry goes as it runs (the telemetry domain's gateway); the
    RunResult still carries every reading for the batch record."""

    def run_started(self, run: str) -> None: ...

    def readings(self, run: str | None, batch: Sequence[TelemetryReading]) -> None: ...

    def run_ended(self, run: str, ok: bool) -> None: ...


class MachineAdapter(Protocol):
    """What the platform needs from any machine, real or simulated."""

    machine_id: str
    firmware: str

    def execute(self, ticket: SignedTicket) -> RunResult: ...


class SimulatedMachine(MachineAdapter, Protocol):
    """A digital twin: a machine adapter whose faults can be injected (and cleared)."""

    @property
    def faults(self) -> tuple[Fault, ...]: ...

    def inject_fault(self, fault: Fault) -> None:
        """Make every following run suffer `fault` (like a real fault, it persists)."""
        ...

    def clear_faults(self) -> None:
        """Maintenance: the machine is healthy again."""
        ...


# -- reading a ticket (helpers for twins) ---------------------------------------------------


@dataclass(frozen=True)
class Setpoint:
    """One process parameter of a run: its target and validated range."""

    metric: str
    target: float
    low: float
    high: float
    unit: str

    @property
    def noise_sd(self) -> float:
        """Sampling noise: a sixth of the narrower half of the acceptance band."""
        half_width = min(self.target - self.low, self.high - self.target)
        if half_width <= 0:
            half_width = max(abs(self.target) * 0.01, 1e-3)
        return half_width / 6.0


def admit_ticket(
    ticket: SignedTicket,
    public_key_pem: str,
    *,
    machine_id: str,
    now: datetime,
    executed: set[str],
) -> None:
    """What a twin checks before it runs `ticket`: the control site's signature, for this
    machine, unexpired (`verify_ticket`), and not run here before (a ticket authorises one
    run, never a replay: TicketRejected `ticket_replayed`). The twin adds the ticket's hash
    to `executed` once it has read the ticket's design."""
    verify_ticket(ticket, public_key_pem, machine_id=machine_id, now=now)
    if ticket.ticket_hash in executed:
        raise TicketRejected(
            "ticket already executed on this machine: a ticket is good for one run",
            field="ticket",
            code="ticket_replayed",
        )


def ticket_number(value: Any, field: str) -> float:
    """A finite number from a ticket, or TicketRejected naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TicketRejected(f"ticket {field} must be a number, not {value!r}", field=field)
    number = float(value)
    if not math.isfinite(number):
        raise TicketRejected(f"ticket {field} must be finite", field=field)
    return number


def ticket_setpoints(
    payload: Mapping[str, Any], defaults: Mapping[str, Mapping[str, Any]]
) -> dict[str, Setpoint]:
    """The setpoints of every metric in `defaults` (metric -> target, low, high, unit): the
    ticket's `process_parameters` where it gives one, else the default."""
    given = payload.get("process_parameters") or {}
    if not isinstance(given, Mapping):
        raise TicketRejected(
            "ticket process_parameters must be an object", field="process_parameters"
        )
    setpoints: dict[str, Setpoint] = {}
    for metric, default in defaults.items():
        spec = given.get(metric)
        if spec is None:
            spec = default
        if not isinstance(spec, Mapping):
            raise TicketRejected(
                f"ticket process_parameters.{metric} must be an object",
                field=f"process_parameters.{metric}",
            )
        where = f"process_parameters.{metric}"
        target = ticket_number(spec.get("target"), f"{where}.target")
        low = ticket_number(spec.get("low"), f"{where}.low")
        high = ticket_number(spec.get("high"), f"{where}.high")
        if not low <= target <= high:
            raise TicketRejected(
                f"ticket {where}: target {target} is not within [{low}, {high}]", field=where
            )
        unit = spec.get("unit", default["unit"])
        setpoints[metric] = Setpoint(metric, target, low, high, str(unit))
    return setpoints
