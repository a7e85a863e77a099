"""The engine's own, validated-elsewhere view of a scenario: frozen dataclasses, times in days.

`nearfab.simulation.schemas` parses and checks the YAML (pydantic) and builds these; the engine
and the planner depend only on this module, so they stay pure and typed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DAYS_PER_YEAR = 365.0
WINDOW_EPS = 1e-9  # days (86 µs): a shift window ending within this of now is over
SHIFT_END_POLICIES: tuple[str, ...] = ("pause", "finish")


@dataclass(frozen=True)
class Dist:
    """A duration distribution in days (or any positive quantity).

    kind: fixed (value in `mean`), exponential (mean), normal (mean, sd; truncated at 0),
    lognormal (mean, sd of the variable itself), gamma (mean, sd), uniform (low, high),
    triangular (low, mode, high), empirical (resampled `values`).
    """

    kind: str = "fixed"
    mean: float = 0.0
    sd: float = 0.0
    low: float = 0.0
    high: float = 0.0
    mode: float = 0.0
    values: tuple[float, ...] = ()

    def expected(self) -> float:
        if self.kind in ("uniform",):
            return (self.low + self.high) / 2.0
        if self.kind == "triangular":
            return (self.low + self.mode + self.high) / 3.0
        if self.kind == "empirical":
            return sum(self.values) / len(self.values) if self.values else 0.0
        return self.mean

    @property
    def is_zero(self) -> bool:
        return self.kind == "fixed" and self.mean == 0.0


ZERO = Dist()


@dataclass(frozen=True)
class Prescription:
    """One kind of prescription in a product's mix, as its family makes it
    (`logic.machine_models.modelled_prescription`): what it says, in the family's words; the
    design the platform would make; the machine time (days) and material (g) the family gives
    that design, and its batch failure probability (None: the family has no failure model).
    Each order draws one by `weight`."""

    says: Mapping[str, Any] = field(default_factory=dict, hash=False)
    machine_days: float = 0.0
    weight: float = 1.0
    failure_probability: float | None = None
    material_g: float = 0.0
    design: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # starting material collected from the patient (the family's `collection(design)`): the
    # run starts `to_start_days` after the collection at the earliest, and the product is
    # administered `to_administration_days` after the run ends at the earliest; None: no
    # collection (a failed batch is then simply made again)
    to_start_days: float | None = None
    to_administration_days: float = 0.0

    @property
    def collected(self) -> bool:
        return self.to_start_days is not None


@dataclass(frozen=True)
class Design:
    """A product made to each order's design, exactly as the platform makes it: the master
    file's design envelope and the prescription mix, each already worked out by the product
    family's model (`nearfab.designs` registry). A batch's machine time (and failure
    probability, if the family gives one) comes from there, not from a distribution."""

    envelope: Mapping[str, Any] = field(default_factory=dict, hash=False)
    prescriptions: tuple[Prescription, ...] = ()


@dataclass(frozen=True)
class Product:
    name: str
    family: str | None = None  # the product family (registry name); needed for a `design`
    target_lead_time_days: float = 7.0
    pre_process: Dist = ZERO  # e.g. the prescription check, or collecting the patient's cells
    cycle: Dist = ZERO  # default machine time per batch (a site may override)
    qc: Dist = ZERO
    qc_occupies_machine: bool = False
    qp_release: Dist = ZERO  # waiting for a QP decision after QC
    shelf_life_days: float | None = None
    batch_failure_probability: float = 0.0
    materials_per_batch: float = 0.0
    qc_per_batch: float = 0.0
    labour_hours_per_batch: float = 0.0
    material_shortage_wait: bool = True
    material: str | None = None  # a `Material` drawn per batch (None: not modelled)
    # with a design, the family's machine model gives each batch's machine time; `cycle` is
    # then extra machine time on top of it (loading, post-processing), 0 by default
    design: Design | None = None


@dataclass(frozen=True)
class Site:
    name: str
    kind: str = "hospital_pharmacy"
    slots: int = 1
    products: tuple[str, ...] = ()  # empty: every product
    setup: Dist = ZERO
    cycle: tuple[tuple[str, Dist], ...] = ()  # per-product override of Product.cycle
    mtbf_days: float | None = None  # per slot
    mttr: Dist = ZERO
    batch_failure_probability: float | None = None  # overrides the product's
    hours_per_day: float = 24.0  # length of the daily shift (24: always staffed)
    shift_start_h: float = 8.0  # the shift runs shift_start_h .. shift_start_h + hours_per_day
    days_per_week: int = 7  # working days; day 0 of the horizon is a Monday
    shift_end: str = "pause"  # a batch running at the shift end: "pause" (resume next shift)
    # or "finish" (runs on unattended); either way, no batch starts outside a shift
    max_queue: int | None = None  # orders waiting beyond the slots; None = unlimited
    backup: str | None = None  # where new orders go when this site is out or full
    capital_per_day: float = 0.0
    fixed_per_day: float = 0.0
    labour_rate_per_hour: float = 0.0

    def cycle_for(self, product: Product) -> Dist:
        for name, dist in self.cycle:
            if name == product.name:
                return dist
        return product.cycle

    # -- shifts ----------------------------------------------------------------------------

    @property
    def always_open(self) -> bool:
        return self.hours_per_day >= 24.0 and self.days_per_week >= 7

    def _shift(self, day: int) -> tuple[float, float] | None:
        """The shift starting on `day` (days from the start, day 0 a Monday), if it works."""
        if day % 7 >= self.days_per_week:
            return None
        start = day + self.shift_start_h / 24.0
        return start, start + self.hours_per_day / 24.0

    def window(self, t: float) -> tuple[float, float]:
        """The shift window [start, end) in progress at time `t`, or the next one; shifts that
        touch are merged. `start` <= t while a shift is on (the machine may work now)."""
        if self.always_open:
            return t, math.inf
        day = math.floor(t) - 1  # a shift that began yesterday may still be on
        for d in range(day, day + 9):
            shift = self._shift(d)
            if shift is None or shift[1] - t <= WINDOW_EPS:
                continue
            start, end = shift
            nxt = d + 1
            while nxt < d + 8:
                follow = self._shift(nxt)
                if follow is None or abs(follow[0] - end) > WINDOW_EPS:
                    break
                end = follow[1]
                nxt += 1
            return start, end
        raise ValueError("a site needs at least one working day a week")

    def until_open(self, t: float) -> float:
        """Days from `t` until the site is on shift (0 when it is)."""
        start, _ = self.window(t)
        return start - t if start - t > WINDOW_EPS else 0.0

    def open_time(self, t0: float, t1: float) -> float:
        """Shift time (days) within [t0, t1]: the machine time a slot can give in it."""
        if self.always_open:
            return max(0.0, t1 - t0)
        total = 0.0
        for d in range(math.floor(t0) - 1, math.ceil(t1) + 1):
            shift = self._shift(d)
            if shift is not None:
                total += max(0.0, min(shift[1], t1) - max(shift[0], t0))
        return total


@dataclass(frozen=True)
class Leg:
    name: str
    mode: str = "courier"
    time: Dist = ZERO
    cost_per_shipment: float = 0.0


@dataclass(frozen=True)
class Region:
    name: str
    site: str
    rate_per_day: float = 0.0
    trend_per_year: float = 0.0  # 0.1: demand grows 10 % a year (compounded)
    seasonality_amplitude: float = 0.0  # 0.2: +-20 % over the year
    seasonality_peak_day: float = 0.0
    schedule: tuple[float, ...] = ()  # fixed arrival times (days) instead of Poisson
    mix: tuple[tuple[str, float], ...] = ()  # product shares; empty: the first product
    inbound: str | None = None  # leg bringing the patient's material to the site
    outbound: str | None = None  # leg bringing the dose to the patient


@dataclass(frozen=True)
class Disruption:
    """kind: site_outage (target site), transport_failure (target leg), demand_surge (target
    region or "*", factor), material_shortage (target site), recall (target site, lookback)."""

    kind: str
    target: str = "*"
    start: float = 0.0
    duration: float = 0.0
    every: float | None = None  # repeat period (days)
    factor: float = 1.0
    lookback_days: float = 0.0
    name: str = ""


@dataclass(frozen=True)
class Material:
    """A consumable kept in stock at every site that uses it (e.g. a printing ink or a culture
    medium): one unit per batch, reordered (`order_quantity`) when stock plus open orders fall to
    `reorder_point`, arriving after `lead_time`; a lot older than `shelf_life_days` is
    discarded (waste)."""

    name: str
    lead_time: Dist = ZERO
    order_quantity: int = 10
    reorder_point: int = 2
    initial: int = 10
    shelf_life_days: float | None = None


@dataclass(frozen=True)
class QpTeam:
    """The Qualified Persons who certify every batch: one shared resource for the network,
    working `day_start_h`–`day_end_h` on the first `days_per_week` days of each week (day 0 of
    the horizon is a Monday). A certification started before closing time is finished."""

    count: int = 1
    review: Dist = ZERO  # the time one certification takes
    day_start_h: float = 8.0
    day_end_h: float = 18.0
    days_per_week: int = 5

    def until_open(self, t: float) -> float:
        """Days from time `t` (in days) until a QP is on duty (0 when one is)."""
        if self.days_per_week >= 7 and self.day_start_h <= 0 and self.day_end_h >= 24:
            return 0.0
        day = math.floor(t)
        hour = (t - day) * 24.0
        for ahead in range(8):
            d = day + ahead
            if d % 7 >= self.days_per_week:
                continue
            start = d + self.day_start_h / 24.0
            end = d + self.day_end_h / 24.0
            if ahead == 0 and hour >= self.day_end_h:
                continue
            return max(0.0, start - t) if t < end else 0.0
        raise ValueError("a QP team needs at least one working day a week")


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    horizon_days: float
    products: tuple[Product, ...]
    sites: tuple[Site, ...]
    regions: tuple[Region, ...]
    legs: tuple[Leg, ...] = ()
    disruptions: tuple[Disruption, ...] = ()
    warmup_days: float = 0.0
    seed: int = 12345
    replications: int = 10
    bucket_days: float = 7.0
    lead_time_sample: int = 4000  # lead times kept per replication for charts
    description: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=())
    qp_team: QpTeam | None = None  # None: each product's `qp_release` delay instead
    materials: tuple[Material, ...] = ()
