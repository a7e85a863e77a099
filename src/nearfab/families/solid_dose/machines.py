"""solid_dose's `machines` part: implements nearfab.production.kit.MachineKit.

The family runs semi-solid extrusion tablet printers. Its digital twin takes a signed job ticket
and returns a RunResult whose units carry their in-line weighed mass (`mass_mg`); the batch
record keeps them as the measurement document {"unit_masses_mg": [...]}. The twin verifies the
ticket exactly as a real machine must (unsigned, altered, foreign-key, wrong-machine or expired
tickets are refused), takes all its time from the injected clock, and is deterministic for a
given seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

from nearfab.common.errors import ValidationFailed
from nearfab.families.twin import FamilyMachines, Twin, TwinRun
from nearfab.network import Machine
from nearfab.production.kit import (
    MeasurementSeries,
    MetricSpec,
    TwinSetup,
    check_document_keys,
    check_fault_kind,
    metric_specs,
)
from nearfab.production.machines import (
    Fault,
    RunResult,
    Setpoint,
    TelemetryReading,
    UnitMeasurement,
    ticket_number,
    ticket_setpoints,
)
from nearfab.production.tickets import SignedTicket, TicketRejected

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from nearfab.families.twin import TwinArguments

FAMILY = "solid_dose"
TABLET_PRINTER = "tablet_printer"

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

MASS = "mass_mg"  # a unit's measurement: its mass, weighed in line
DOCUMENT_KEY = "unit_masses_mg"  # the batch record's measurement document: per-unit masses
DEFAULT_MASS_TOLERANCE_PCT = 7.5  # the master file's unit_mass specification when it gives none

MASS_RELATIVE_SD = 0.012  # unit-to-unit mass variation of a healthy run (1.2 % RSD)
AR1_PHI = 0.8  # autocorrelation of successive telemetry samples
CLOG_EXTRA_MASS_SD = 0.03  # extra relative mass scatter per unit of clog severity (erratic flow)
TEMPERATURE_MASS_COEFF = 0.002  # +0.2 % mass per °C of drift (lower melt viscosity, more flow)
HUMIDITY_MASS_COEFF = 0.0005  # +0.05 % mass per %RH added (moisture uptake)


def check_fault(fault: Fault) -> None:
    """The faults a tablet printer's twin can suffer. severity: nozzle_clog, fraction of flow
    lost (mass falls, pressure rises, in proportion); temperature_drift, °C of nozzle
    temperature rise per unit; humidity_excursion, %RH added."""
    check_fault_kind(FAMILY, FAULT_KINDS, fault)
    if fault.kind == "nozzle_clog" and fault.severity >= 1:
        raise ValidationFailed(
            "nozzle_clog severity is the fraction of flow lost; it must be below 1",
            field="fault.severity",
        )


def _design(payload: Mapping[str, Any]) -> tuple[float, int]:
    design = payload.get("design")
    if not isinstance(design, Mapping):
        raise TicketRejected("ticket has no design", field="design")
    target = ticket_number(design.get("target_mass_mg"), "design.target_mass_mg")
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


class SimulatedTabletPrinter(Twin):
    """A digital twin of a semi-solid extrusion tablet printer."""

    fault_check = staticmethod(check_fault)

    def __init__(
        self,
        machine_id: str,
        *,
        seconds_per_unit: float = 60.0,
        sample_every_s: float = 10.0,
        **twin: Unpack[TwinArguments],
    ) -> None:
        if not seconds_per_unit > 0:
            raise ValidationFailed("seconds_per_unit must be positive", field="seconds_per_unit")
        if not sample_every_s > 0:
            raise ValidationFailed("sample_every_s must be positive", field="sample_every_s")
        super().__init__(machine_id, **twin)
        self.seconds_per_unit = float(seconds_per_unit)
        self.sample_every_s = float(sample_every_s)

    # -- fault effects --------------------------------------------------------------------

    def _offset(self, metric: str, setpoint: Setpoint, unit: int, progress: float) -> float:
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
        clock = self.clock
        self.admit(ticket)
        target_mass, n_units = _design(ticket.payload)
        self.mark_run(ticket)
        setpoints = ticket_setpoints(ticket.payload, DEFAULT_PROCESS_PARAMETERS)

        log = TwinRun(
            self,
            ticket,
            ["ticket verified", f"run started: {n_units} units, target mass {target_mass:.3f} mg"],
        )
        rng = self._rng
        ar_state = dict.fromkeys(setpoints, 0.0)
        innovation_scale = math.sqrt(1.0 - AR1_PHI**2)
        telemetry: list[TelemetryReading] = []
        units: list[UnitMeasurement] = []

        for index in range(n_units):
            for fault in self._faults:
                if fault.from_unit == index:
                    log.events.append(f"unit {index}: {fault.kind} takes effect")
            first_reading = len(telemetry)
            for elapsed in self.ticks(self.sample_every_s, self.seconds_per_unit):
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
            # live, a unit's worth at a time, as a real printer streams
            log.stream(telemetry[first_reading:])
            factor, sd = self._mass_factor(index)
            mass = target_mass * factor * (1.0 + float(rng.normal(0.0, sd)))
            units.append(UnitMeasurement(index, clock.now(), {MASS: round(max(mass, 0.0), 4)}))

        return log.finish(units, telemetry, f"run finished: {n_units} units")


def _masses(document: Mapping[str, Any]) -> list[float]:
    return list(document.get(DOCUMENT_KEY) or [])


class SolidDoseMachines(FamilyMachines):
    """Tablet printers: their twin, metrics, faults and the batch record's unit masses."""

    family = FAMILY
    machine_types: tuple[str, ...] = (TABLET_PRINTER,)
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    fault_check = staticmethod(check_fault)

    @property
    def metrics(self) -> Mapping[str, MetricSpec]:
        return metric_specs(DEFAULT_PROCESS_PARAMETERS)

    def twin(self, machine: Machine, setup: TwinSetup) -> SimulatedTabletPrinter:
        return SimulatedTabletPrinter(
            machine.id,
            **self.twin_arguments(machine, setup),
            seconds_per_unit=setup.seconds_per_unit,
            sample_every_s=setup.sample_every_s,
        )

    def design_summary(self, design: Mapping[str, Any]) -> str:
        if not design:
            return ""
        return (
            f"{design.get('units')} × {float(design.get('dose_mg', 0)):g} mg, target "
            f"{float(design.get('target_mass_mg', 0)):.2f} mg ({design.get('shape')} "
            f"Ø {design.get('diameter_mm')} × {design.get('height_mm')} mm)"
        )

    def measurement_document(self, outcome: RunResult) -> dict[str, Any]:
        return {DOCUMENT_KEY: [round(float(u.values[MASS]), 4) for u in outcome.units]}

    def check_measurements(self, document: Any) -> dict[str, Any]:
        document = check_document_keys(document, (DOCUMENT_KEY,))
        masses = document.get(DOCUMENT_KEY)
        where = f"measurements.{DOCUMENT_KEY}"
        if not isinstance(masses, list):
            raise ValidationFailed(f"{where} must be a list of masses in mg", field=where)
        for i, mass in enumerate(masses):
            if (
                isinstance(mass, bool)
                or not isinstance(mass, int | float)
                or not math.isfinite(mass)
                or mass < 0
            ):
                raise ValidationFailed(
                    f"{where}[{i}] must be a mass in mg (a number >= 0), not {mass!r}",
                    field=f"{where}[{i}]",
                )
        return {DOCUMENT_KEY: list(masses)}

    def units_made(self, document: Mapping[str, Any]) -> int:
        return len(_masses(document))

    def measurement_series(
        self,
        document: Mapping[str, Any] | None,
        design: Mapping[str, Any],
        cqa_specs: Mapping[str, Any],
    ) -> MeasurementSeries | None:
        masses = _masses(document or {})
        target = float(design.get("target_mass_mg", 0) or 0)
        if not masses or target <= 0:
            return None
        spec = cqa_specs.get("unit_mass") or {}
        tolerance = float(spec.get("tolerance_pct", DEFAULT_MASS_TOLERANCE_PCT))
        return MeasurementSeries(
            values=tuple(float(m) for m in masses),
            target=target,
            tolerance_pct=tolerance,
            label="mass",
            unit="mg",
            specification="unit-mass specification",
        )
