"""Machine adapters, and a simulated tablet printer (digital twin) obeying the same interface.

A real machine adapter and the simulator both take a signed job ticket and return a RunResult:
per-unit masses, process telemetry and an event log. The simulator verifies the ticket exactly
as a real machine must (unsigned, altered, foreign-key, wrong-machine or expired tickets are
refused), takes all its time from the injected clock, and is deterministic for a given seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, get_args

import numpy as np

from nearfab.common.clock import Clock
from nearfab.common.errors import ValidationFailed
from nearfab.production.tickets import SignedTicket, TicketRejected, verify_ticket

FaultKind = Literal["nozzle_clog", "temperature_drift", "humidity_excursion"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

NOZZLE_TEMPERATURE = "nozzle_temperature_c"
EXTRUSION_PRESSURE = "extrusion_pressure_kpa"
PRINT_SPEED = "print_speed_mm_s"
CHAMBER_HUMIDITY = "chamber_humidity_pct"
METRICS: tuple[str, ...] = (NOZZLE_TEMPERATURE, EXTRUSION_PRESSURE, PRINT_SPEED, CHAMBER_HUMIDITY)

DEFAULT_PROCESS_PARAMETERS: dict[str, dict[str, Any]] = {
    NOZZLE_TEMPERATURE: {"target": 180.0, "low": 175.0, "high": 185.0, "unit": "°C"},
    EXTRUSION_PRESSURE: {"target": 450.0, "low": 390.0, "high": 510.0, "unit": "kPa"},
    PRINT_SPEED: {"target": 20.0, "low": 18.0, "high": 22.0, "unit": "mm/s"},
    CHAMBER_HUMIDITY: {"target": 35.0, "low": 20.0, "high": 50.0, "unit": "%RH"},
}

MASS_RELATIVE_SD = 0.012  # unit-to-unit mass variation of a healthy run (1.2 % RSD)
AR1_PHI = 0.8  # autocorrelation of successive telemetry samples
CLOG_EXTRA_MASS_SD = 0.03  # extra relative mass scatter per unit of clog severity (erratic flow)
TEMPERATURE_MASS_COEFF = 0.002  # +0.2 % mass per °C of drift (lower melt viscosity, more flow)
HUMIDITY_MASS_COEFF = 0.0005  # +0.05 % mass per %RH added (moisture uptake)


@dataclass(frozen=True)
class TelemetryReading:
    at: datetime
    metric: str
    value: float
    unit: str


@dataclass(frozen=True)
class UnitMeasurement:
    index: int
    at: datetime
    mass_mg: float


@dataclass(frozen=True)
class Fault:
    """A fault to simulate, active from unit `from_unit` (0-based) to the end of the run.

    severity: nozzle_clog, fraction of flow lost (mass falls, pressure rises, in proportion);
    temperature_drift, °C of nozzle temperature rise per unit; humidity_excursion, %RH added.
    """

    kind: FaultKind
    severity: float = 0.3
    from_unit: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValidationFailed(
                f"unknown fault kind {self.kind!r} (known: {', '.join(FAULT_KINDS)})",
                field="fault.kind",
            )
        if not math.isfinite(self.severity) or self.severity < 0:
            raise ValidationFailed(
                f"fault severity must be a non-negative number, not {self.severity}",
                field="fault.severity",
            )
        if self.kind == "nozzle_clog" and self.severity >= 1:
            raise ValidationFailed(
                "nozzle_clog severity is the fraction of flow lost; it must be below 1",
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


@dataclass(frozen=True)
class _Setpoint:
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


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TicketRejected(f"ticket {field} must be a number, not {value!r}", field=field)
    number = float(value)
    if not math.isfinite(number):
        raise TicketRejected(f"ticket {field} must be finite", field=field)
    return number


def _design(payload: Mapping[str, Any]) -> tuple[float, int]:
    design = payload.get("design")
    if not isinstance(design, Mapping):
        raise TicketRejected("ticket has no design", field="design")
    target = _number(design.get("target_mass_mg"), "design.target_mass_mg")
    if target <= 0:
        raise TicketRejected(
            "ticket design.target_mass_mg must be positive", field="design.target_mass_mg"
        )
    units = design.get("units")
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise TicketRejected(
            f"ticket design.units must be a positive integer, not {units!r}",
            field="design.units",
        )
    return target, units


def _setpoints(payload: Mapping[str, Any]) -> dict[str, _Setpoint]:
    given = payload.get("process_parameters") or {}
    if not isinstance(given, Mapping):
        raise TicketRejected(
            "ticket process_parameters must be an object", field="process_parameters"
        )
    setpoints: dict[str, _Setpoint] = {}
    for metric in METRICS:
        default = DEFAULT_PROCESS_PARAMETERS[metric]
        spec = given.get(metric)
        if spec is None:
            spec = default
        if not isinstance(spec, Mapping):
            raise TicketRejected(
                f"ticket process_parameters.{metric} must be an object",
                field=f"process_parameters.{metric}",
            )
        where = f"process_parameters.{metric}"
        target = _number(spec.get("target"), f"{where}.target")
        low = _number(spec.get("low"), f"{where}.low")
        high = _number(spec.get("high"), f"{where}.high")
        if not low <= target <= high:
            raise TicketRejected(
                f"ticket {where}: target {target} is not within [{low}, {high}]", field=where
            )
        unit = spec.get("unit", default["unit"])
        setpoints[metric] = _Setpoint(metric, target, low, high, str(unit))
    return setpoints


class SimulatedTabletPrinter:
    """A digital twin of a semi-solid extrusion tablet printer."""

    def __init__(
        self,
        machine_id: str,
        *,
        firmware: str,
        control_public_key_pem: str,
        clock: Clock,
        seed: int | None = None,
        faults: Sequence[Fault] = (),
        seconds_per_unit: float = 60.0,
        sample_every_s: float = 10.0,
        telemetry: TelemetrySink | None = None,
    ) -> None:
        if not seconds_per_unit > 0:
            raise ValidationFailed("seconds_per_unit must be positive", field="seconds_per_unit")
        if not sample_every_s > 0:
            raise ValidationFailed("sample_every_s must be positive", field="sample_every_s")
        self.machine_id = machine_id
        self.firmware = firmware
        self._public_key_pem = control_public_key_pem
        self._clock = clock
        self._rng = np.random.default_rng(seed)
        self._faults: list[Fault] = list(faults)
        # tickets this machine has run: a ticket authorises one run, never a replay
        self._executed: set[str] = set()
        self.seconds_per_unit = float(seconds_per_unit)
        self.sample_every_s = float(sample_every_s)
        self.telemetry = telemetry

    @property
    def faults(self) -> tuple[Fault, ...]:
        return tuple(self._faults)

    def inject_fault(self, fault: Fault) -> None:
        """Make every following run suffer `fault` (like a real fault, it persists)."""
        self._faults.append(fault)

    def clear_faults(self) -> None:
        """Maintenance: the machine is healthy again."""
        self._faults.clear()

    # -- fault effects --------------------------------------------------------------------

    def _offset(self, metric: str, setpoint: _Setpoint, unit: int, progress: float) -> float:
        """Deviation of `metric` from its target at `progress` (units done, fractional)."""
        offset = 0.0
        for fault in self._faults:
            if fault.kind == "nozzle_clog" and metric == EXTRUSION_PRESSURE:
                if unit >= fault.from_unit:
                    offset += setpoint.target * fault.severity
            elif fault.kind == "temperature_drift" and metric == NOZZLE_TEMPERATURE:
                offset += fault.severity * max(0.0, progress - fault.from_unit)
            elif (
                fault.kind == "humidity_excursion"
                and metric == CHAMBER_HUMIDITY
                and unit >= fault.from_unit
            ):
                offset += fault.severity
        return offset

    def _mass_factor(self, unit: int) -> tuple[float, float]:
        """(systematic factor, relative SD) of unit `unit`'s mass under the active faults."""
        factor = 1.0
        sd = MASS_RELATIVE_SD
        for fault in self._faults:
            if fault.kind == "nozzle_clog" and unit >= fault.from_unit:
                factor *= 1.0 - fault.severity
                sd += CLOG_EXTRA_MASS_SD * fault.severity
            elif fault.kind == "temperature_drift":
                drift = fault.severity * max(0.0, unit + 1 - fault.from_unit)
                factor *= 1.0 + TEMPERATURE_MASS_COEFF * drift
            elif fault.kind == "humidity_excursion" and unit >= fault.from_unit:
                factor *= 1.0 + HUMIDITY_MASS_COEFF * fault.severity
        return factor, sd

    # -- the run --------------------------------------------------------------------------

    def execute(self, ticket: SignedTicket) -> RunResult:
        clock = self._clock
        verify_ticket(ticket, self._public_key_pem, machine_id=self.machine_id, now=clock.now())
        if ticket.ticket_hash in self._executed:
            raise TicketRejected(
                "ticket already executed on this machine: a ticket is good for one run",
                field="ticket",
                code="ticket_replayed",
            )
        target_mass, n_units = _design(ticket.payload)
        self._executed.add(ticket.ticket_hash)
        setpoints = _setpoints(ticket.payload)

        events: list[str] = [
            "ticket verified",
            f"run started: {n_units} units, target mass {target_mass:.3f} mg",
        ]
        events.extend(f"fault injected: {fault.describe()}" for fault in self._faults)
        started_at = clock.now()
        run = str(ticket.payload.get("job_id") or ticket.ticket_hash[:32])
        sink = self.telemetry
        if sink is not None:
            sink.run_started(run)

        rng = self._rng
        ar_state = dict.fromkeys(setpoints, 0.0)
        innovation_scale = math.sqrt(1.0 - AR1_PHI**2)
        n_samples = max(1, math.ceil(self.seconds_per_unit / self.sample_every_s - 1e-9))
        telemetry: list[TelemetryReading] = []
        units: list[UnitMeasurement] = []

        for index in range(n_units):
            for fault in self._faults:
                if fault.from_unit == index:
                    events.append(f"unit {index}: {fault.kind} takes effect")
            elapsed = 0.0
            first_reading = len(telemetry)
            for k in range(1, n_samples + 1):
                mark = min(k * self.sample_every_s, self.seconds_per_unit)
                clock.sleep(mark - elapsed)
                elapsed = mark
                at = clock.now()
                progress = index + elapsed / self.seconds_per_unit
                for metric, setpoint in setpoints.items():
                    noise = AR1_PHI * ar_state[metric] + setpoint.noise_sd * (
                        innovation_scale * float(rng.standard_normal())
                    )
                    ar_state[metric] = noise
                    value = setpoint.target + self._offset(metric, setpoint, index, progress)
                    telemetry.append(
                        TelemetryReading(at, metric, round(value + noise, 3), setpoint.unit)
                    )
            if sink is not None:  # live, a unit's worth at a time, as a real printer streams
                sink.readings(run, telemetry[first_reading:])
            factor, sd = self._mass_factor(index)
            mass = target_mass * factor * (1.0 + float(rng.normal(0.0, sd)))
            units.append(UnitMeasurement(index, clock.now(), round(max(mass, 0.0), 4)))

        finished_at = clock.now()
        events.append(f"run finished: {n_units} units")
        if sink is not None:
            sink.run_ended(run, True)
        return RunResult(
            machine_id=self.machine_id,
            firmware=self.firmware,
            ticket_hash=ticket.ticket_hash,
            started_at=started_at,
            finished_at=finished_at,
            units=tuple(units),
            telemetry=tuple(telemetry),
            events=tuple(events),
        )
