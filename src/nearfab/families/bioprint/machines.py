"""bioprint's `machines` part: implements nearfab.production.kit.MachineKit.

The family runs pneumatic extrusion bioprinters: a cartridge of islet-laden bioink is pushed
through a heated nozzle by air pressure onto a cooled bed, layer by layer, and each construct is
crosslinked by a UV dose. The digital twin takes a signed job ticket (verified exactly as a real
machine must: unsigned, altered, foreign-key, wrong-machine, expired and replayed tickets are
refused) and prints the design's constructs, one unit each:

- telemetry while a construct prints (in-process monitoring): extrusion pressure, nozzle and
  bed temperature, and the construct's UV crosslinking dose: the critical process parameters,
  whose limits (the master file's `process_parameters`) raise alarms and CPP excursions in the
  core's monitoring; and the in-process viability of each construct (live/dead estimate);
- one unit per construct, carrying its islet equivalents and viability.

Model (the twin's assumptions, in the units written): islets survive the print with
`BASE_VIABILITY`; shear in the nozzle kills more as the pressure rises above its target
(`SHEAR_LOSS_PER_KPA` per kPa), and a UV dose above the validated high limit kills
`UV_LOSS_PER_MJ` per mJ/cm² over it. Faults (`Fault.from_unit`: the construct it starts at):
- nozzle_clog (severity: kPa the pressure climbs per construct from then on);
- uv_overdose (severity: the fraction the UV dose is over its target, e.g. 0.6);
- bed_warm (severity: °C the bed drifts above its setpoint; the bioink gels less firmly).
Deterministic for a given seed; the clock is the platform's (a construct takes the fleet's
seconds per unit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

from nearfab.common.errors import ValidationFailed
from nearfab.families.twin import FamilyMachines, Twin, TwinRun, check_all_keys, number_at
from nearfab.network import Machine
from nearfab.production.kit import (
    MeasurementSeries,
    MetricSpec,
    TwinSetup,
    check_fault_kind,
    metric_specs,
)
from nearfab.production.machines import (
    Fault,
    RunResult,
    TelemetryReading,
    UnitMeasurement,
    ticket_number,
    ticket_setpoints,
)
from nearfab.production.tickets import SignedTicket, TicketRejected

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from nearfab.families.twin import TwinArguments

FAMILY = "bioprint"
EXTRUSION_BIOPRINTER = "extrusion_bioprinter"

FaultKind = Literal["nozzle_clog", "uv_overdose", "bed_warm"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

PRESSURE = "pressure_kpa"
NOZZLE_TEMPERATURE = "nozzle_temp_c"
BED_TEMPERATURE = "bed_temp_c"
UV_DOSE = "uv_dose_mj_cm2"
CONSTRUCT_VIABILITY = "construct_viability_pct"

# the critical process parameters with the limits a master file validates by default: a
# cell-friendly extrusion pressure, a thermoresponsive bioink held liquid in the nozzle and
# gelled on a cooled bed, and a crosslinking dose between under-cured and cytotoxic
DEFAULT_PROCESS_PARAMETERS: dict[str, dict[str, Any]] = {
    PRESSURE: {"target": 30.0, "low": 20.0, "high": 45.0, "unit": "kPa"},
    NOZZLE_TEMPERATURE: {"target": 24.0, "low": 21.0, "high": 27.0, "unit": "°C"},
    BED_TEMPERATURE: {"target": 12.0, "low": 8.0, "high": 16.0, "unit": "°C"},
    UV_DOSE: {"target": 300.0, "low": 200.0, "high": 450.0, "unit": "mJ/cm²"},
}
IN_PROCESS: dict[str, dict[str, Any]] = {
    CONSTRUCT_VIABILITY: {"target": 90.0, "low": 70.0, "high": 100.0, "unit": "%"},
}

# the measurement document
CONSTRUCTS = "constructs"  # constructs printed: the units made
IEQ_PRINTED = "ieq_printed"  # islet equivalents in the printed constructs
VIABILITY = "viability"  # mean in-process viability of the constructs (fraction)
VIABILITY_PER_CONSTRUCT = "viability_per_construct"
UV_DOSE_MEAN = "uv_dose_mean_mj_cm2"
PRESSURE_MAX = "pressure_max_kpa"
DOCUMENT_KEYS = (
    CONSTRUCTS,
    IEQ_PRINTED,
    VIABILITY,
    VIABILITY_PER_CONSTRUCT,
    UV_DOSE_MEAN,
    PRESSURE_MAX,
)
QC = "qc"  # the laboratory's results, entered after the print (release.py reads them)

BASE_VIABILITY = 0.92  # islets through a nozzle at the target pressure
SHEAR_LOSS_PER_KPA = 0.006  # viability lost per kPa above the target pressure
UV_LOSS_PER_MJ = 0.0008  # viability lost per mJ/cm² above the validated high limit
SAMPLES_PER_CONSTRUCT = 4
SENSOR_SD: dict[str, float] = {
    PRESSURE: 0.4,
    NOZZLE_TEMPERATURE: 0.1,
    BED_TEMPERATURE: 0.1,
    UV_DOSE: 3.0,
}
VIABILITY_SD = 0.01
IEQ_CV = 0.02  # construct-to-construct variation of the islets dispensed


def check_fault(fault: Fault) -> None:
    check_fault_kind(FAMILY, FAULT_KINDS, fault)
    if fault.kind == "uv_overdose" and fault.severity > 5:
        raise ValidationFailed(
            "uv_overdose severity is the fraction over the target dose; at most 5",
            field="fault.severity",
        )


def _design(payload: Mapping[str, Any]) -> tuple[int, float]:
    design = payload.get("design")
    if not isinstance(design, Mapping):
        raise TicketRejected("ticket has no design", field="design")
    constructs = design.get("constructs")
    if isinstance(constructs, bool) or not isinstance(constructs, int) or constructs < 1:
        raise TicketRejected(
            "ticket design.constructs must be a positive integer", field="design.constructs"
        )
    ieq = ticket_number(design.get("target_ieq"), "design.target_ieq")
    if ieq <= 0:
        raise TicketRejected("ticket design.target_ieq must be positive", field="design.target_ieq")
    return constructs, ieq


class SimulatedExtrusionBioprinter(Twin):
    """A digital twin of a pneumatic extrusion bioprinter (module docstring)."""

    fault_check = staticmethod(check_fault)

    def __init__(
        self,
        machine_id: str,
        *,
        seconds_per_construct: float = 60.0,
        noise: bool = True,
        **twin: Unpack[TwinArguments],
    ) -> None:
        super().__init__(machine_id, **twin)
        self.seconds_per_construct = float(seconds_per_construct)
        self.noise = noise

    def _normal(self) -> float:
        return float(self._rng.standard_normal()) if self.noise else 0.0

    def _severity(self, kind: str, unit: int) -> float:
        return float(
            sum(f.severity for f in self._faults if f.kind == kind and unit >= f.from_unit)
        )

    def _clog(self, unit: int) -> float:
        """kPa the pressure has climbed by construct `unit` (a clog worsens construct by
        construct from where it starts)."""
        return float(
            sum(
                f.severity * (unit - f.from_unit + 1)
                for f in self._faults
                if f.kind == "nozzle_clog" and unit >= f.from_unit
            )
        )

    def execute(self, ticket: SignedTicket) -> RunResult:
        clock = self.clock
        self.admit(ticket)
        constructs, target_ieq = _design(ticket.payload)
        setpoints = ticket_setpoints(ticket.payload, DEFAULT_PROCESS_PARAMETERS)
        self.mark_run(ticket)
        log = TwinRun(
            self,
            ticket,
            ["ticket verified", f"print started: {constructs} constructs, {target_ieq:g} IEQ"],
        )
        readings: list[TelemetryReading] = []
        units: list[UnitMeasurement] = []
        per_construct = target_ieq / constructs
        p, nz, bed, uv = (
            setpoints[m] for m in (PRESSURE, NOZZLE_TEMPERATURE, BED_TEMPERATURE, UV_DOSE)
        )

        def read(metric: str, value: float) -> None:
            unit = setpoints[metric].unit if metric in setpoints else IN_PROCESS[metric]["unit"]
            readings.append(TelemetryReading(clock.now(), metric, float(f"{value:.6g}"), str(unit)))

        for index in range(constructs):
            first = len(readings)
            pressure = p.target + self._clog(index)
            bed_temp = bed.target + self._severity("bed_warm", index)
            for _ in range(SAMPLES_PER_CONSTRUCT):
                clock.sleep(self.seconds_per_construct / SAMPLES_PER_CONSTRUCT)
                read(PRESSURE, pressure + SENSOR_SD[PRESSURE] * self._normal())
                read(NOZZLE_TEMPERATURE, nz.target + SENSOR_SD[NOZZLE_TEMPERATURE] * self._normal())
                read(BED_TEMPERATURE, bed_temp + SENSOR_SD[BED_TEMPERATURE] * self._normal())
            dose = uv.target * (1.0 + self._severity("uv_overdose", index))
            dose += SENSOR_SD[UV_DOSE] * self._normal()
            read(UV_DOSE, dose)
            viability = (
                BASE_VIABILITY
                - SHEAR_LOSS_PER_KPA * max(0.0, pressure - p.target)
                - UV_LOSS_PER_MJ * max(0.0, dose - uv.high)
                + VIABILITY_SD * self._normal()
            )
            viability = min(1.0, max(0.0, viability))
            read(CONSTRUCT_VIABILITY, viability * 100.0)
            ieq = max(0.0, per_construct * (1.0 + IEQ_CV * self._normal()))
            units.append(UnitMeasurement(index, clock.now(), {"ieq": ieq, VIABILITY: viability}))
            log.stream(readings[first:])
        return log.finish(units, readings, f"print finished: {constructs} constructs crosslinked")


class BioprintMachines(FamilyMachines):
    """Extrusion bioprinters: their twin, metrics, faults and the batch record's print."""

    family = FAMILY
    machine_types: tuple[str, ...] = (EXTRUSION_BIOPRINTER,)
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    fault_check = staticmethod(check_fault)

    @property
    def metrics(self) -> Mapping[str, MetricSpec]:
        return {
            **metric_specs(DEFAULT_PROCESS_PARAMETERS),
            **metric_specs(IN_PROCESS, cpp=False),
        }

    def twin(self, machine: Machine, setup: TwinSetup) -> SimulatedExtrusionBioprinter:
        return SimulatedExtrusionBioprinter(
            machine.id,
            **self.twin_arguments(machine, setup),
            seconds_per_construct=setup.seconds_per_unit,
        )

    def design_summary(self, design: Mapping[str, Any]) -> str:
        if not design:
            return ""
        return (
            f"{float(design.get('target_ieq', 0)):,.0f} IEQ"
            f" ({float(design.get('dose_per_kg', 0)):,.0f} IEQ/kg ×"
            f" {float(design.get('body_weight_kg', 0)):g} kg) in {design.get('constructs')}"
            f" constructs of {float(design.get('construct_volume_ml', 0)):g} mL bioink"
        )

    def measurement_document(self, outcome: RunResult) -> dict[str, Any]:
        units = outcome.units
        viabilities = [round(float(u.values[VIABILITY]), 5) for u in units]
        doses = [r.value for r in outcome.telemetry if r.metric == UV_DOSE]
        pressures = [r.value for r in outcome.telemetry if r.metric == PRESSURE]
        return {
            CONSTRUCTS: len(units),
            IEQ_PRINTED: round(sum(float(u.values["ieq"]) for u in units), 1),
            VIABILITY: round(sum(viabilities) / len(viabilities), 5) if viabilities else 0.0,
            VIABILITY_PER_CONSTRUCT: viabilities,
            UV_DOSE_MEAN: round(sum(doses) / len(doses), 2) if doses else 0.0,
            PRESSURE_MAX: round(max(pressures), 2) if pressures else 0.0,
        }

    def check_measurements(self, document: Any) -> dict[str, Any]:
        document = check_all_keys(document, DOCUMENT_KEYS, optional=(QC,))
        constructs = document[CONSTRUCTS]
        if isinstance(constructs, bool) or not isinstance(constructs, int) or constructs < 0:
            raise ValidationFailed(
                "measurements.constructs must be a whole number >= 0",
                field="measurements.constructs",
            )
        per = document[VIABILITY_PER_CONSTRUCT]
        if not isinstance(per, list) or len(per) != constructs:
            raise ValidationFailed(
                f"measurements.{VIABILITY_PER_CONSTRUCT} must hold one viability per construct",
                field=f"measurements.{VIABILITY_PER_CONSTRUCT}",
            )
        checked: dict[str, Any] = {
            CONSTRUCTS: constructs,
            IEQ_PRINTED: number_at(document[IEQ_PRINTED], f"measurements.{IEQ_PRINTED}"),
            VIABILITY: number_at(document[VIABILITY], f"measurements.{VIABILITY}", high=1.0),
            VIABILITY_PER_CONSTRUCT: [
                number_at(v, f"measurements.{VIABILITY_PER_CONSTRUCT}[{i}]", high=1.0)
                for i, v in enumerate(per)
            ],
            UV_DOSE_MEAN: number_at(document[UV_DOSE_MEAN], f"measurements.{UV_DOSE_MEAN}"),
            PRESSURE_MAX: number_at(document[PRESSURE_MAX], f"measurements.{PRESSURE_MAX}"),
        }
        if QC in document:
            if not isinstance(document[QC], Mapping):
                raise ValidationFailed(
                    "measurements.qc must be an object (the laboratory's results)",
                    field="measurements.qc",
                )
            checked[QC] = dict(document[QC])
        return checked

    def units_made(self, document: Mapping[str, Any]) -> int:
        return int(document.get(CONSTRUCTS) or 0)

    def measurement_series(
        self,
        document: Mapping[str, Any] | None,
        design: Mapping[str, Any],
        cqa_specs: Mapping[str, Any],
    ) -> MeasurementSeries | None:
        """Each construct's in-process viability (%) against the family's target."""
        values = list((document or {}).get(VIABILITY_PER_CONSTRUCT) or [])
        if not values:
            return None
        return MeasurementSeries(
            values=tuple(round(100.0 * float(v), 2) for v in values),
            target=IN_PROCESS[CONSTRUCT_VIABILITY]["target"],
            tolerance_pct=20.0,
            label="viability per construct (in-process)",
            unit="%",
            specification="viability",
        )
