"""cell_therapy's `machines` part: implements nearfab.production.kit.MachineKit.

The family runs closed, automated cell micro-factories: a bioreactor that expands the
patient's cells for days, harvests, washes and fills the infusion bag(s). Its digital twin takes
a signed job ticket (verified exactly as a real machine must: unsigned, altered, foreign-key,
wrong-machine, expired and replayed tickets are refused) and returns a RunResult:

- telemetry every sample: temperature, pH, dissolved oxygen, glucose, lactate (the critical
  process parameters) and the in-line viable cell density; once a day (and at seeding) the
  in-process count of the day's sample: viable cell density and viability;
- one unit per bag filled, carrying its viable cells and viability.

The batch record keeps the measurement document (below) built from those: the product's viable
cells and viability, the fold expansion, the days of culture and the per-day trajectory.

Model (logic/growth.py): logistic growth of viable cells at the run's doubling time (log-normal
around the master file's median, with its donor-to-donor CV), a basal death rate netted into
it, glucose consumed and lactate made in proportion to the viable cells (a perfused vessel fed
`medium_ml_per_day`), pH falling with lactate, dissolved oxygen falling with density. The
harvest is at the end of the first day, not before the shortest validated culture, whose
sampled count reaches the harvest target, or at the longest validated culture whatever the
count. The formulated product holds the dose (target_cells) or all there is when short.

Faults (`Fault.from_unit` is the culture day, 0-based, the fault starts):
- contamination (severity: the contaminant's initial load, ×10^-3 of a full one): the
  contaminant grows (doubling every 2 h), eats glucose, makes acid (pH falls) and oxygen
  demand (DO falls) and kills the culture; the micro-factory stops the run when its sensors see
  it (load 1/2): nothing is harvested;
- slow_growth (severity: the fraction of the growth rate lost, below 1);
- equipment_fault (severity: °C the vessel's temperature falls below its setpoint, a failed
  heater, at most 20): growth slows by Q10 = 2 and the temperature leaves its range.

Time: the clock is the platform's; a culture day takes `seconds_per_day` of it (from the fleet:
its seconds per unit of machine work, so at the fleet's defaults a day runs in a minute and the
demo's speed-up applies), and every timestamp is the clock's. The run's culture time is in the
document (days), never read off the clock. Deterministic for a given seed; `noise=False` runs
follow the model exactly (no donor or measurement variation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

from nearfab.common.errors import ValidationFailed
from nearfab.families.cell_therapy.logic.design import sci
from nearfab.families.cell_therapy.logic.growth import (
    growth_rate_per_day,
    log_normal_sigma,
    logistic_cells,
    logistic_fraction,
    step,
)
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

FAMILY = "cell_therapy"
CELL_MICRO_FACTORY = "cell_micro_factory"

FaultKind = Literal["contamination", "slow_growth", "equipment_fault"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

# -- telemetry metrics -------------------------------------------------------------------------

TEMPERATURE = "temperature_c"
PH = "ph"
DISSOLVED_OXYGEN = "dissolved_oxygen_pct"
GLUCOSE = "glucose_mmol_l"
LACTATE = "lactate_mmol_l"
CELL_DENSITY = "cell_density_e6_per_ml"  # in-line probe, every sample
DAILY_DENSITY = "daily_cell_density_e6_per_ml"  # the day's sampled count
DAILY_VIABILITY = "daily_viability_pct"  # the day's sampled viability
DENSITY_UNIT = "10^6 cells/mL"

# the critical process parameters, with the limits a master file validates by default
DEFAULT_PROCESS_PARAMETERS: dict[str, dict[str, Any]] = {
    TEMPERATURE: {"target": 37.0, "low": 36.0, "high": 38.0, "unit": "°C"},
    PH: {"target": 7.2, "low": 6.9, "high": 7.5, "unit": "pH"},
    DISSOLVED_OXYGEN: {"target": 50.0, "low": 30.0, "high": 80.0, "unit": "% air sat."},
    GLUCOSE: {"target": 8.0, "low": 2.0, "high": 25.0, "unit": "mmol/L"},
    LACTATE: {"target": 8.0, "low": 0.0, "high": 20.0, "unit": "mmol/L"},
}
# in-process controls: reported, not critical process parameters
IN_PROCESS: dict[str, dict[str, Any]] = {
    CELL_DENSITY: {"target": 1.0, "low": 0.0, "high": 10.0, "unit": DENSITY_UNIT},
    DAILY_DENSITY: {"target": 1.0, "low": 0.0, "high": 10.0, "unit": DENSITY_UNIT},
    DAILY_VIABILITY: {"target": 90.0, "low": 70.0, "high": 100.0, "unit": "%"},
}

# -- the measurement document ------------------------------------------------------------------

VIABLE_CELLS = "viable_cells"  # viable cells in the product (all bags)
VIABILITY = "viability"  # fraction of viable cells at harvest
FOLD_EXPANSION = "fold_expansion"  # viable density at harvest / at seeding
CULTURE_DAYS = "culture_days"  # days the culture ran (a day begun counts)
DENSITY_PER_DAY = "cell_density_per_day"  # viable cells/mL, [0] at seeding, then each day
VIABILITY_PER_DAY = "viability_per_day"  # fraction, [0] at seeding, then each day
BAGS = "bags"  # bags filled: the units made
HARVESTED = "harvested"  # False: the culture was stopped before harvest
STOP_REASON = "stop_reason"  # why, or None
DOCUMENT_KEYS = (
    VIABLE_CELLS,
    VIABILITY,
    FOLD_EXPANSION,
    CULTURE_DAYS,
    DENSITY_PER_DAY,
    VIABILITY_PER_DAY,
    BAGS,
    HARVESTED,
    STOP_REASON,
)
# optional: the QC laboratory's results, entered after the run; the release part reads and
# validates them (docs/cell-therapy.md), this part only keeps them as an object
QC = "qc"
STOPPED = "culture stopped: "  # the event that says why a culture was stopped
# the batch page's chart: each day's count against the growth model's expectation
GROWTH_SPEC = "growth_trajectory"  # the master file's cqa_specs key giving its tolerance_pct
DEFAULT_GROWTH_TOLERANCE_PCT = 50.0

# -- the model's constants (assumptions of the twin, in the units written) ---------------------

SEED_VIABILITY = 0.95  # viability of the seeded cells
BASAL_DEATH_PER_DAY = 0.03  # turnover already netted into the doubling time
GLUCOSE_FEED_MMOL_L = 11.0  # glucose of the fresh medium (11 mM, as RPMI 1640)
# glucose uptake per viable cell: an assumption of the order reported for activated T cells
# (about a pmol a day); with lactate at 1.8 mol per mol of glucose (aerobic glycolysis, at most
# 2) a perfused 10^6 cells/mL culture sits near 9 mM glucose and 4 mM lactate
GLUCOSE_PMOL_PER_CELL_DAY = 1.0
LACTATE_PER_GLUCOSE = 1.8
STARVATION_MMOL_L = 0.5  # below it, cells die
STARVATION_DEATH_PER_DAY = 0.5
PH_MEDIUM = 7.35  # fresh medium
PH_PER_LACTATE = 0.012  # pH fall per mM lactate (bicarbonate-buffered medium)
DO_PER_DENSITY = 2.0  # % air saturation lost per 10^6 cells/mL
Q10 = 2.0  # growth rate doubles per 10 °C (below the setpoint it slows)
CONTAMINANT_DOUBLING_H = 2.0
CONTAMINANT_LOAD_SCALE = 1e-3  # severity 1: a thousandth of a full load at the start
CONTAMINATION_DETECTED = 0.5  # load at which DO and pH give it away
CONTAMINANT_GLUCOSE_MMOL_L_DAY = 30.0  # at full load
CONTAMINANT_ACID_MMOL_L_DAY = 20.0
CONTAMINANT_PH = 0.6
CONTAMINANT_DO = 40.0
CONTAMINANT_DEATH_PER_DAY = 2.0
MAX_TEMPERATURE_FALL_C = 20.0
# measurement variation
SENSOR_SD: dict[str, float] = {
    TEMPERATURE: 0.05,
    PH: 0.01,
    DISSOLVED_OXYGEN: 0.5,
    GLUCOSE: 0.1,
    LACTATE: 0.1,
}
NON_NEGATIVE = frozenset({DISSOLVED_OXYGEN, GLUCOSE, LACTATE})
PROBE_CV = 0.03  # in-line density probe
COUNT_CV = 0.05  # a day's sampled count
VIABILITY_SD = 0.005  # a day's sampled viability (fraction)
PRODUCT_COUNT_CV = 0.03  # the final product's count
AR1_PHI = 0.8  # autocorrelation of successive sensor samples


def check_fault(fault: Fault) -> None:
    """The faults a micro-factory's twin can suffer (module docstring gives their severities)."""
    check_fault_kind(FAMILY, FAULT_KINDS, fault)
    if fault.kind == "slow_growth" and fault.severity >= 1:
        raise ValidationFailed(
            "slow_growth severity is the fraction of the growth rate lost; it must be below 1",
            field="fault.severity",
        )
    if fault.kind == "contamination" and fault.severity <= 0:
        raise ValidationFailed(
            "contamination severity is the contaminant's initial load; it must be above 0",
            field="fault.severity",
        )
    if fault.kind == "equipment_fault" and fault.severity > MAX_TEMPERATURE_FALL_C:
        raise ValidationFailed(
            f"equipment_fault severity is the °C the vessel's temperature falls; at most "
            f"{MAX_TEMPERATURE_FALL_C:g}",
            field="fault.severity",
        )


# -- the ticket's design -------------------------------------------------------------------------


class _Culture:
    """What the twin reads from the ticket's design."""

    def __init__(self, design: Mapping[str, Any]) -> None:
        self.seed_cells = self._positive(design, "seed_cells")
        self.volume_ml = self._positive(design, "culture_volume_ml")
        self.capacity = self._positive(design, "max_density_cells_per_ml") * self.volume_ml
        if self.seed_cells >= self.capacity:
            raise TicketRejected(
                "ticket design.seed_cells must be below the vessel's capacity",
                field="design.seed_cells",
            )
        self.doubling_time_h = self._positive(design, "doubling_time_h")
        self.doubling_time_cv = self._number(design, "doubling_time_cv", minimum=0.0)
        self.target_cells = self._positive(design, "target_cells")
        self.harvest_cells = self._positive(design, "harvest_cells")
        self.process_yield = self._positive(design, "process_yield")
        self.feed_ml_per_day = self._number(design, "medium_ml_per_day", minimum=0.0)
        self.days_min = self._count(design, "expansion_days_min")
        self.days_max = self._count(design, "expansion_days_max")
        if self.days_min > self.days_max:
            raise TicketRejected(
                "ticket design.expansion_days_min is above expansion_days_max",
                field="design.expansion_days_min",
            )
        self.bags = self._count(design, "bags")

    @staticmethod
    def _number(design: Mapping[str, Any], key: str, *, minimum: float) -> float:
        value = ticket_number(design.get(key), f"design.{key}")
        if value < minimum:
            raise TicketRejected(
                f"ticket design.{key} must be at least {minimum:g}", field=f"design.{key}"
            )
        return value

    @staticmethod
    def _positive(design: Mapping[str, Any], key: str) -> float:
        value = ticket_number(design.get(key), f"design.{key}")
        if value <= 0:
            raise TicketRejected(f"ticket design.{key} must be positive", field=f"design.{key}")
        return value

    @staticmethod
    def _count(design: Mapping[str, Any], key: str) -> int:
        value = design.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TicketRejected(
                f"ticket design.{key} must be a positive integer, not {value!r}",
                field=f"design.{key}",
            )
        return value


def _design(payload: Mapping[str, Any]) -> _Culture:
    design = payload.get("design")
    if not isinstance(design, Mapping):
        raise TicketRejected("ticket has no design", field="design")
    return _Culture(design)


class SimulatedCellMicroFactory(Twin):
    """A digital twin of a closed automated cell micro-factory (module docstring)."""

    fault_check = staticmethod(check_fault)

    def __init__(
        self,
        machine_id: str,
        *,
        seconds_per_day: float = 60.0,
        sample_every_s: float = 10.0,
        noise: bool = True,
        **twin: Unpack[TwinArguments],
    ) -> None:
        if not seconds_per_day > 0:
            raise ValidationFailed("seconds_per_day must be positive", field="seconds_per_day")
        if not sample_every_s > 0:
            raise ValidationFailed("sample_every_s must be positive", field="sample_every_s")
        super().__init__(machine_id, **twin)
        self.seconds_per_day = float(seconds_per_day)
        self.sample_every_s = float(sample_every_s)
        self.noise = noise

    @property
    def samples_per_day(self) -> int:
        return max(1, math.ceil(self.seconds_per_day / self.sample_every_s - 1e-9))

    # -- variation --------------------------------------------------------------------------

    def normal(self) -> float:
        return float(self._rng.standard_normal()) if self.noise else 0.0

    def doubling_time_h(self, culture: _Culture) -> float:
        """This run's doubling time: log-normal around the validated median (donor variation)."""
        sigma = log_normal_sigma(culture.doubling_time_cv)
        return culture.doubling_time_h * math.exp(sigma * self.normal())

    # -- fault effects ----------------------------------------------------------------------

    def _active(self, kind: str, day: int) -> list[Fault]:
        return [f for f in self._faults if f.kind == kind and day >= f.from_unit]

    def temperature_fall(self, day: int) -> float:
        return float(sum(f.severity for f in self._active("equipment_fault", day)))

    def growth_factor(self, day: int) -> float:
        factor = 1.0
        for fault in self._active("slow_growth", day):
            factor *= 1.0 - fault.severity
        return factor * math.pow(Q10, -self.temperature_fall(day) / 10.0)

    # -- the run ----------------------------------------------------------------------------

    def execute(self, ticket: SignedTicket) -> RunResult:
        self.admit(ticket)
        culture = _design(ticket.payload)
        setpoints = ticket_setpoints(ticket.payload, DEFAULT_PROCESS_PARAMETERS)
        self.mark_run(ticket)
        return _Run(self, culture, setpoints, ticket).run()


class _Run:
    """One expansion run of a twin: the culture's state, stepped sample by sample."""

    def __init__(
        self,
        twin: SimulatedCellMicroFactory,
        culture: _Culture,
        setpoints: Mapping[str, Any],
        ticket: SignedTicket,
    ) -> None:
        self.twin = twin
        self.culture = culture
        self.temperature_set = float(setpoints[TEMPERATURE].target)
        self.oxygen_set = float(setpoints[DISSOLVED_OXYGEN].target)
        self.units = {metric: str(setpoints[metric].unit) for metric in setpoints}
        self.ticket = ticket
        self.viable = culture.seed_cells
        self.dead = culture.seed_cells * (1.0 - SEED_VIABILITY) / SEED_VIABILITY
        self.glucose = GLUCOSE_FEED_MMOL_L
        self.lactate = 0.0
        self.contaminant = 0.0
        self.sensor_state = dict.fromkeys(SENSOR_SD, 0.0)
        self.telemetry: list[TelemetryReading] = []
        self.events: list[str] = []

    # -- readings ---------------------------------------------------------------------------

    def _read(self, metric: str, value: float, unit: str) -> None:
        # nine significant digits: a density of 0.005 × 10^6 cells/mL keeps its precision
        value = float(f"{value:.9g}")
        self.telemetry.append(TelemetryReading(self.twin.clock.now(), metric, value, unit))

    def _sensor(self, metric: str, value: float) -> None:
        noise = (
            AR1_PHI * self.sensor_state[metric]
            + SENSOR_SD[metric] * math.sqrt(1.0 - AR1_PHI**2) * self.twin.normal()
        )
        self.sensor_state[metric] = noise
        reading = value + noise
        if metric in NON_NEGATIVE:  # a concentration reads 0 at worst
            reading = max(0.0, reading)
        self._read(metric, reading, self.units[metric])

    def _density_e6(self) -> float:
        return self.viable / self.culture.volume_ml / 1e6

    def _viability(self) -> float:
        total = self.viable + self.dead
        return self.viable / total if total > 0 else 0.0

    def _daily_count(self) -> tuple[float, float]:
        """The day's sampled count: (viable cells in the vessel, viability), as measured."""
        counted = max(0.0, self.viable * (1.0 + COUNT_CV * self.twin.normal()))
        viability = min(1.0, max(0.0, self._viability() + VIABILITY_SD * self.twin.normal()))
        self._read(DAILY_DENSITY, counted / self.culture.volume_ml / 1e6, DENSITY_UNIT)
        self._read(DAILY_VIABILITY, viability * 100.0, "%")
        return counted, viability

    # -- one sample's worth of culture --------------------------------------------------------

    def _advance(self, day: int, hours: float, growth_rate: float) -> None:
        culture = self.culture
        h = hours / 24.0
        # the contaminant, and what it does meanwhile (its mean load over the step)
        start_load = self.contaminant
        self.contaminant = logistic_fraction(
            start_load, growth_rate_per_day(CONTAMINANT_DOUBLING_H), h
        )
        load = (start_load + self.contaminant) / 2.0
        extra_death = CONTAMINANT_DEATH_PER_DAY * load
        if self.glucose < STARVATION_MMOL_L:
            extra_death += STARVATION_DEATH_PER_DAY
        growth = growth_rate * self.twin.growth_factor(day)
        self.viable, integral = step(self.viable, growth, extra_death, culture.capacity, h)
        self.dead += (BASAL_DEATH_PER_DAY + extra_death) * integral
        # glucose and lactate of a perfused vessel, with the step's mean viable density
        mean_density = integral / h / culture.volume_ml  # cells/mL
        uptake = GLUCOSE_PMOL_PER_CELL_DAY * mean_density * 1e-6  # pmol/mL/day -> mM/day
        uptake_total = uptake + CONTAMINANT_GLUCOSE_MMOL_L_DAY * load
        made = LACTATE_PER_GLUCOSE * uptake + CONTAMINANT_ACID_MMOL_L_DAY * load
        dilution = culture.feed_ml_per_day / culture.volume_ml  # per day
        if dilution > 0:
            decay = math.exp(-dilution * h)
            glucose_ss = GLUCOSE_FEED_MMOL_L - uptake_total / dilution
            lactate_ss = made / dilution
            self.glucose = glucose_ss + (self.glucose - glucose_ss) * decay
            self.lactate = lactate_ss + (self.lactate - lactate_ss) * decay
        else:
            self.glucose -= uptake_total * h
            self.lactate += made * h
        self.glucose = max(0.0, self.glucose)

    def _sample(self, day: int) -> None:
        fall = self.twin.temperature_fall(day)
        self._sensor(TEMPERATURE, self.temperature_set - fall)
        self._sensor(
            PH, PH_MEDIUM - PH_PER_LACTATE * self.lactate - CONTAMINANT_PH * self.contaminant
        )
        oxygen = (
            self.oxygen_set
            - DO_PER_DENSITY * self._density_e6()
            - CONTAMINANT_DO * self.contaminant
        )
        self._sensor(DISSOLVED_OXYGEN, max(0.0, oxygen))
        self._sensor(GLUCOSE, self.glucose)
        self._sensor(LACTATE, self.lactate)
        probe = self._density_e6() * (1.0 + PROBE_CV * self.twin.normal())
        self._read(CELL_DENSITY, max(0.0, probe), DENSITY_UNIT)

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> RunResult:
        twin, culture, clock = self.twin, self.culture, self.twin.clock
        doubling_h = twin.doubling_time_h(culture)
        rate = growth_rate_per_day(doubling_h)
        per_day = twin.samples_per_day
        hours = 24.0 / per_day
        log = TwinRun(
            twin,
            self.ticket,
            [
                "ticket verified",
                f"run started: {sci(culture.seed_cells)} viable cells seeded in "
                f"{culture.volume_ml:g} mL; harvest at {sci(culture.harvest_cells)} viable "
                f"cells, day {culture.days_min}–{culture.days_max}",
            ],
        )
        self.events = log.events
        counted, viability = self._daily_count()  # at seeding
        harvest: tuple[float, float] | None = None
        stop: str | None = None
        day = 0
        while day < culture.days_max and harvest is None and stop is None:
            first = len(self.telemetry)
            for fault in twin.faults:
                if fault.from_unit == day:
                    self.events.append(f"day {day}: {fault.kind} takes effect")
                    if fault.kind == "contamination":
                        load = min(1.0, fault.severity * CONTAMINANT_LOAD_SCALE)
                        self.contaminant = max(self.contaminant, load)
            for k in range(per_day):
                clock.sleep(twin.seconds_per_day / per_day)
                self._advance(day, hours, rate)
                self._sample(day)
                if self.contaminant >= CONTAMINATION_DETECTED:
                    at_day = day + (k + 1) / per_day
                    stop = (
                        f"contamination suspected on day {at_day:.1f} (dissolved oxygen and pH "
                        "falling, glucose consumed): the closed vessel was not harvested"
                    )
                    break
            day += 1
            counted, viability = self._daily_count()
            log.stream(self.telemetry[first:])  # live, a day's worth at a time
            grown = counted >= culture.harvest_cells * (1 - 1e-9)
            if stop is None and day >= culture.days_min and grown:
                harvest = counted, viability
        units: list[UnitMeasurement] = []
        if stop is not None:
            self.events.append(STOPPED + stop)
        else:
            if harvest is None:
                harvest = counted, viability
                self.events.append(
                    f"longest validated culture ({culture.days_max} days) reached with "
                    f"{sci(counted)} viable cells, below the harvest target "
                    f"{sci(culture.harvest_cells)}"
                )
            units = self._fill(day, *harvest)
        filled = f"{len(units)} bag{'' if len(units) == 1 else 's'} filled"
        return log.finish(
            units,
            self.telemetry,
            f"run finished: {day} days of culture, {filled}",
            ok=stop is None,
        )

    def _fill(self, day: int, counted: float, viability: float) -> list[UnitMeasurement]:
        """Harvest, wash and formulate: the dose, or all there is when short, in the bags."""
        culture = self.culture
        available = counted * culture.process_yield
        formulated = min(available, culture.target_cells)
        measured = max(0.0, formulated * (1.0 + PRODUCT_COUNT_CV * self.twin.normal()))
        self.events.append(
            f"harvested on day {day}: {sci(counted)} viable cells, viability "
            f"{viability * 100:.1f} %; {sci(measured)} formulated into {culture.bags} "
            f"bag{'' if culture.bags == 1 else 's'}"
        )
        at = self.twin.clock.now()
        per_bag = measured / culture.bags
        return [
            UnitMeasurement(index, at, {VIABLE_CELLS: per_bag, VIABILITY: viability})
            for index in range(culture.bags)
        ]


# -- the measurement document --------------------------------------------------------------------


def _series(outcome: RunResult, metric: str) -> list[float]:
    return [r.value for r in outcome.telemetry if r.metric == metric]


def _count_at(value: Any, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationFailed(
            f"{where} must be {what} (an integer >= 0), not {value!r}", field=where
        )
    return value


def _list_at(value: Any, where: str, what: str, *, high: float | None = None) -> list[float]:
    if not isinstance(value, list) or not value:
        raise ValidationFailed(f"{where} must be a non-empty list of {what}", field=where)
    return [number_at(v, f"{where}[{i}]", what, high=high) for i, v in enumerate(value)]


def expected_density_per_day(design: Mapping[str, Any], days: int) -> list[float]:
    """The growth model's viable cells/mL at the end of each day 0..days for `design`."""
    volume = float(design["culture_volume_ml"])
    capacity = float(design["max_density_cells_per_ml"]) * volume
    rate = growth_rate_per_day(float(design["doubling_time_h"]))
    seed = float(design["seed_cells"])
    return [logistic_cells(seed, capacity, rate, day) / volume for day in range(days + 1)]


class CellTherapyMachines(FamilyMachines):
    """Cell micro-factories: their twin, metrics, faults and the batch record's culture."""

    family = FAMILY
    machine_types: tuple[str, ...] = (CELL_MICRO_FACTORY,)
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    fault_check = staticmethod(check_fault)

    @property
    def metrics(self) -> Mapping[str, MetricSpec]:
        return {
            **metric_specs(DEFAULT_PROCESS_PARAMETERS),
            **metric_specs(IN_PROCESS, cpp=False),
        }

    def twin(self, machine: Machine, setup: TwinSetup) -> SimulatedCellMicroFactory:
        return SimulatedCellMicroFactory(
            machine.id,
            **self.twin_arguments(machine, setup),
            # a culture day is the twin's unit of machine work (module docstring)
            seconds_per_day=setup.seconds_per_unit,
            sample_every_s=setup.sample_every_s,
        )

    def design_summary(self, design: Mapping[str, Any]) -> str:
        if not design:
            return ""
        bags = int(design.get("bags", 0))
        return (
            f"{sci(float(design.get('target_cells', 0)))} viable cells "
            f"({sci(float(design.get('dose_per_kg', 0)))}/kg × "
            f"{float(design.get('body_weight_kg', 0)):g} kg) in {bags} bag"
            f"{'s' if bags != 1 else ''} of {float(design.get('bag_volume_ml', 0)):g} mL; "
            f"{design.get('expansion_days')} days of expansion from "
            f"{sci(float(design.get('seed_cells', 0)))}"
        )

    def measurement_document(self, outcome: RunResult) -> dict[str, Any]:
        densities = [round(v * 1e6, 1) for v in _series(outcome, DAILY_DENSITY)]
        viabilities = [round(v / 100.0, 5) for v in _series(outcome, DAILY_VIABILITY)]
        stop = next(
            (e.removeprefix(STOPPED) for e in outcome.events if e.startswith(STOPPED)), None
        )
        units = outcome.units
        if units:
            viable = sum(float(u.values[VIABLE_CELLS]) for u in units)
            viability = float(units[0].values[VIABILITY])
        else:
            viable = 0.0
            viability = viabilities[-1] if viabilities else 0.0
        fold = densities[-1] / densities[0] if densities and densities[0] > 0 else 0.0
        return {
            VIABLE_CELLS: round(viable, 1),
            VIABILITY: round(viability, 5),
            FOLD_EXPANSION: round(fold, 4),
            CULTURE_DAYS: max(0, len(densities) - 1),
            DENSITY_PER_DAY: densities,
            VIABILITY_PER_DAY: viabilities,
            BAGS: len(units),
            HARVESTED: stop is None,
            STOP_REASON: stop,
        }

    def check_measurements(self, document: Any) -> dict[str, Any]:
        document = check_all_keys(document, DOCUMENT_KEYS, optional=(QC,))

        def at(key: str) -> str:
            return f"measurements.{key}"

        days = _count_at(document[CULTURE_DAYS], at(CULTURE_DAYS), "the days of culture")
        densities = _list_at(document[DENSITY_PER_DAY], at(DENSITY_PER_DAY), "viable cells/mL")
        viabilities = _list_at(
            document[VIABILITY_PER_DAY], at(VIABILITY_PER_DAY), "a viability fraction", high=1.0
        )
        for key, values in ((DENSITY_PER_DAY, densities), (VIABILITY_PER_DAY, viabilities)):
            if len(values) != days + 1:
                raise ValidationFailed(
                    f"{at(key)} must hold one value at seeding and one per day of culture "
                    f"({days + 1}), not {len(values)}",
                    field=at(key),
                )
        harvested = document[HARVESTED]
        if not isinstance(harvested, bool):
            raise ValidationFailed(f"{at(HARVESTED)} must be true or false", field=at(HARVESTED))
        reason = document[STOP_REASON]
        if harvested and reason is not None:
            raise ValidationFailed(
                f"{at(STOP_REASON)} must be null for a harvested culture", field=at(STOP_REASON)
            )
        if not harvested and (not isinstance(reason, str) or not reason.strip()):
            raise ValidationFailed(
                f"{at(STOP_REASON)} must say why a culture was not harvested",
                field=at(STOP_REASON),
            )
        bags = _count_at(document[BAGS], at(BAGS), "the bags filled")
        if not harvested and bags:
            raise ValidationFailed(
                f"{at(BAGS)} must be 0 for a culture that was not harvested", field=at(BAGS)
            )
        checked: dict[str, Any] = {}
        if QC in document:
            if not isinstance(document[QC], Mapping):
                raise ValidationFailed(
                    f"{at(QC)} must be an object (the QC laboratory's results)", field=at(QC)
                )
            checked[QC] = dict(document[QC])
        return {
            **checked,
            VIABLE_CELLS: number_at(document[VIABLE_CELLS], at(VIABLE_CELLS), "a count of cells"),
            VIABILITY: number_at(document[VIABILITY], at(VIABILITY), "a fraction", high=1.0),
            FOLD_EXPANSION: number_at(
                document[FOLD_EXPANSION], at(FOLD_EXPANSION), "a fold expansion"
            ),
            CULTURE_DAYS: days,
            DENSITY_PER_DAY: densities,
            VIABILITY_PER_DAY: viabilities,
            BAGS: bags,
            HARVESTED: harvested,
            STOP_REASON: reason,
        }

    def units_made(self, document: Mapping[str, Any]) -> int:
        return int(document.get(BAGS) or 0)

    def measurement_series(
        self,
        document: Mapping[str, Any] | None,
        design: Mapping[str, Any],
        cqa_specs: Mapping[str, Any],
    ) -> MeasurementSeries | None:
        """Each day's viable cell density as a percentage of the growth model's expectation
        for the design (100 % = on the model), against the master file's tolerance."""
        densities = list((document or {}).get(DENSITY_PER_DAY) or [])[1:]
        try:
            expected = expected_density_per_day(design, len(densities))[1:]
        except (KeyError, TypeError, ValueError):
            return None
        if not densities:
            return None
        spec = cqa_specs.get(GROWTH_SPEC) or {}
        tolerance = float(spec.get("tolerance_pct", DEFAULT_GROWTH_TOLERANCE_PCT))
        return MeasurementSeries(
            values=tuple(
                round(100.0 * float(d) / e, 2) for d, e in zip(densities, expected, strict=True)
            ),
            target=100.0,
            tolerance_pct=tolerance,
            label="viable cell density per day, of the growth model",
            unit="%",
            specification="growth trajectory",
        )
