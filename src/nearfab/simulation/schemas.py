"""The scenario file (YAML), checked with pydantic; `to_spec()` gives the engine its dataclasses.

Times are in days. A duration is a number (fixed) or a mapping such as
`{kind: exponential, mean: 2}`, `{kind: lognormal, mean: 3, sd: 1}`,
`{kind: triangular, low: 1, mode: 2, high: 4}`. See docs/simulation.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nearfab.common.errors import DomainError
from nearfab.designs import FamilyRegistry
from nearfab.simulation.errors import ScenarioInvalid
from nearfab.simulation.logic.costs import annualised, per_day
from nearfab.simulation.logic.machine_models import modelled_prescription
from nearfab.simulation.logic.spec import (
    Design,
    Disruption,
    Dist,
    Leg,
    Material,
    Product,
    QpTeam,
    Region,
    ScenarioSpec,
    Site,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DistIn(_Strict):
    kind: Literal[
        "fixed",
        "exponential",
        "normal",
        "lognormal",
        "gamma",
        "uniform",
        "triangular",
        "empirical",
    ] = "fixed"
    mean: float = Field(0.0, ge=0)
    sd: float = Field(0.0, ge=0)
    low: float = Field(0.0, ge=0)
    high: float = Field(0.0, ge=0)
    mode: float = Field(0.0, ge=0)
    values: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> DistIn:
        k = self.kind
        if k in ("exponential", "lognormal", "gamma") and self.mean <= 0:
            raise ValueError(f"a {k} distribution needs a positive mean")
        if k in ("lognormal", "gamma", "normal") and self.sd <= 0 and k != "normal":
            raise ValueError(f"a {k} distribution needs a positive sd")
        if k in ("uniform", "triangular") and not self.low <= self.high:
            raise ValueError("low must not exceed high")
        if k == "triangular" and not self.low <= self.mode <= self.high:
            raise ValueError("mode must lie between low and high")
        if k == "empirical" and not self.values:
            raise ValueError("an empirical distribution needs values")
        return self

    def spec(self) -> Dist:
        return Dist(
            self.kind, self.mean, self.sd, self.low, self.high, self.mode, tuple(self.values)
        )


Duration = float | DistIn


def _dist(value: Duration | None) -> Dist:
    if value is None:
        return Dist()
    if isinstance(value, DistIn):
        return value.spec()
    if value < 0:
        raise ValueError("durations are non-negative")
    return Dist("fixed", float(value))


class CapitalIn(_Strict):
    cost: float = Field(ge=0)
    life_years: float = Field(gt=0)
    rate: float = Field(0.035, ge=0)


class PrescriptionIn(BaseModel):
    """One kind of prescription in the product's mix: what it says is the product family's own
    mapping (checked by the family's model, `SimulationKit.design`); the core reads only
    `weight`, how often an order draws it."""

    model_config = ConfigDict(extra="allow")
    weight: float = Field(1.0, gt=0)

    def says(self) -> dict[str, Any]:
        """The prescription in the family's words (everything but `weight`)."""
        return dict(self.model_extra or {})


class DesignIn(_Strict):
    """Personalised designs made by the product family's model (the FamilyRegistry): the
    master file's design envelope and the prescription mix."""

    envelope: dict[str, Any]
    prescriptions: list[PrescriptionIn] = Field(min_length=1)


class ProductIn(_Strict):
    name: str
    family: str | None = None  # the product family (registry name); a `design` needs one
    target_lead_time_days: float = Field(7.0, gt=0)
    pre_process: Duration = 0.0
    cycle: Duration = 0.0
    qc: Duration = 0.0
    qc_occupies_machine: bool = False
    qp_release: Duration = 0.0
    shelf_life_days: float | None = Field(None, gt=0)
    batch_failure_probability: float = Field(0.0, ge=0, lt=1)
    materials_per_batch: float = Field(0.0, ge=0)
    qc_per_batch: float = Field(0.0, ge=0)
    labour_hours_per_batch: float = Field(0.0, ge=0)
    material: str | None = None  # a name from `materials`, one unit drawn per batch
    design: DesignIn | None = None  # machine time from the family's model (`cycle` is extra)


class SiteIn(_Strict):
    name: str
    kind: str = "hospital_pharmacy"
    slots: int = Field(1, ge=1)
    products: list[str] = Field(default_factory=list)
    setup: Duration = 0.0
    cycle: dict[str, Duration] = Field(default_factory=dict)
    mtbf_days: float | None = Field(None, gt=0)
    mttr: Duration = 0.0
    batch_failure_probability: float | None = Field(None, ge=0, lt=1)
    hours_per_day: float = Field(24.0, gt=0, le=24)
    shift_start_h: float = Field(8.0, ge=0, lt=24)
    days_per_week: int = Field(7, ge=1, le=7)
    shift_end: Literal["pause", "finish"] = "pause"
    max_queue: int | None = Field(None, ge=0)
    backup: str | None = None
    capital_per_day: float | None = Field(None, ge=0)
    capital: CapitalIn | None = None
    fixed_per_day: float | None = Field(None, ge=0)
    fixed_per_year: float | None = Field(None, ge=0)
    labour_rate_per_hour: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _one_of(self) -> SiteIn:
        if self.capital_per_day is not None and self.capital is not None:
            raise ValueError("give capital_per_day or capital, not both")
        if self.fixed_per_day is not None and self.fixed_per_year is not None:
            raise ValueError("give fixed_per_day or fixed_per_year, not both")
        return self


class LegIn(_Strict):
    name: str
    mode: str = "courier"
    time: Duration = 0.0
    cost_per_shipment: float = Field(0.0, ge=0)


class RegionIn(_Strict):
    name: str
    site: str
    rate_per_day: float = Field(0.0, ge=0)
    trend_per_year: float = Field(0.0, gt=-1)
    seasonality_amplitude: float = Field(0.0, ge=0, lt=1)
    seasonality_peak_day: float = 0.0
    schedule: list[float] = Field(default_factory=list)
    mix: dict[str, float] = Field(default_factory=dict)
    inbound: str | None = None
    outbound: str | None = None


class DisruptionIn(_Strict):
    kind: Literal["site_outage", "transport_failure", "demand_surge", "material_shortage", "recall"]
    target: str = "*"
    start: float = Field(ge=0)
    duration: float = Field(0.0, ge=0)
    every: float | None = Field(None, gt=0)
    factor: float = Field(1.0, gt=0)
    lookback_days: float = Field(0.0, ge=0)
    name: str = ""


class MaterialIn(_Strict):
    """A consumable kept in stock at each site using it: one unit per batch, reordered at the
    reorder point, arriving after the lead time, discarded after its shelf life."""

    name: str
    lead_time: Duration = 0.0
    order_quantity: int = Field(10, ge=1)
    reorder_point: int = Field(2, ge=0)
    initial: int = Field(10, ge=0)
    shelf_life_days: float | None = Field(None, gt=0)


class QpTeamIn(_Strict):
    """Qualified Persons certifying batches (replaces the products' `qp_release` delays)."""

    count: int = Field(1, ge=1)
    review: Duration = 0.0
    day_start_h: float = Field(8.0, ge=0, lt=24)
    day_end_h: float = Field(18.0, gt=0, le=24)
    days_per_week: int = Field(5, ge=1, le=7)

    @model_validator(mode="after")
    def _hours(self) -> QpTeamIn:
        if self.day_end_h <= self.day_start_h:
            raise ValueError("day_end_h must be after day_start_h")
        return self


class ScenarioIn(_Strict):
    name: str
    description: str = ""
    horizon_days: float = Field(gt=0)
    warmup_days: float = Field(0.0, ge=0)
    seed: int = 12345
    replications: int = Field(10, ge=1, le=10_000)
    bucket_days: float = Field(7.0, gt=0)
    products: list[ProductIn] = Field(min_length=1)
    sites: list[SiteIn] = Field(min_length=1)
    legs: list[LegIn] = Field(default_factory=list)
    regions: list[RegionIn] = Field(min_length=1)
    disruptions: list[DisruptionIn] = Field(default_factory=list)
    qp_team: QpTeamIn | None = None
    materials: list[MaterialIn] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> ScenarioIn:
        products = {p.name for p in self.products}
        sites = {s.name for s in self.sites}
        legs = {leg.name for leg in self.legs}
        if self.warmup_days >= self.horizon_days:
            raise ValueError("warmup_days must be shorter than horizon_days")
        for what, names in (
            ("product", [p.name for p in self.products]),
            ("site", [s.name for s in self.sites]),
            ("leg", [leg.name for leg in self.legs]),
            ("region", [r.name for r in self.regions]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {what} name(s): {', '.join(dupes)}")
        materials = {m.name for m in self.materials}
        for product in self.products:
            if product.material is not None and product.material not in materials:
                raise ValueError(
                    f"product {product.name!r} names unknown material {product.material!r}"
                )
        for s in self.sites:
            for p in [*s.products, *s.cycle]:
                if p not in products:
                    raise ValueError(f"site {s.name!r} names unknown product {p!r}")
            if s.backup is not None and s.backup not in sites:
                raise ValueError(f"site {s.name!r} has unknown backup site {s.backup!r}")
        for r in self.regions:
            if r.site not in sites:
                raise ValueError(f"region {r.name!r} is served by unknown site {r.site!r}")
            for leg in (r.inbound, r.outbound):
                if leg is not None and leg not in legs:
                    raise ValueError(f"region {r.name!r} uses unknown leg {leg!r}")
            for p in r.mix:
                if p not in products:
                    raise ValueError(f"region {r.name!r} mix names unknown product {p!r}")
        targets = {
            "site_outage": sites,
            "material_shortage": sites,
            "recall": sites,
            "transport_failure": legs | {"*"},
            "demand_surge": {r.name for r in self.regions} | {"*"},
        }
        for d in self.disruptions:
            if d.target not in targets[d.kind]:
                raise ValueError(f"{d.kind} has unknown target {d.target!r}")
        return self

    def to_spec(self, families: FamilyRegistry | None = None) -> ScenarioSpec:
        """The engine's view; a product's design is worked out by its family in `families`
        (needed only when a product has a design)."""
        designs = modelled_designs(self, families)

        def site(s: SiteIn) -> Site:
            if s.capital is not None:
                capital = per_day(annualised(s.capital.cost, s.capital.life_years, s.capital.rate))
            else:
                capital = s.capital_per_day or 0.0
            fixed = (
                s.fixed_per_day if s.fixed_per_day is not None else per_day(s.fixed_per_year or 0.0)
            )
            return Site(
                name=s.name,
                kind=s.kind,
                slots=s.slots,
                products=tuple(s.products),
                setup=_dist(s.setup),
                cycle=tuple((k, _dist(v)) for k, v in s.cycle.items()),
                mtbf_days=s.mtbf_days,
                mttr=_dist(s.mttr),
                batch_failure_probability=s.batch_failure_probability,
                hours_per_day=s.hours_per_day,
                shift_start_h=s.shift_start_h,
                days_per_week=s.days_per_week,
                shift_end=s.shift_end,
                max_queue=s.max_queue,
                backup=s.backup,
                capital_per_day=capital,
                fixed_per_day=fixed,
                labour_rate_per_hour=s.labour_rate_per_hour,
            )

        return ScenarioSpec(
            name=self.name,
            description=self.description,
            horizon_days=self.horizon_days,
            warmup_days=self.warmup_days,
            seed=self.seed,
            replications=self.replications,
            bucket_days=self.bucket_days,
            products=tuple(
                Product(
                    name=p.name,
                    family=p.family,
                    target_lead_time_days=p.target_lead_time_days,
                    pre_process=_dist(p.pre_process),
                    cycle=_dist(p.cycle),
                    qc=_dist(p.qc),
                    qc_occupies_machine=p.qc_occupies_machine,
                    qp_release=_dist(p.qp_release),
                    shelf_life_days=p.shelf_life_days,
                    batch_failure_probability=p.batch_failure_probability,
                    materials_per_batch=p.materials_per_batch,
                    qc_per_batch=p.qc_per_batch,
                    labour_hours_per_batch=p.labour_hours_per_batch,
                    material=p.material,
                    design=designs.get(i),
                )
                for i, p in enumerate(self.products)
            ),
            sites=tuple(site(s) for s in self.sites),
            legs=tuple(
                Leg(leg.name, leg.mode, _dist(leg.time), leg.cost_per_shipment) for leg in self.legs
            ),
            regions=tuple(
                Region(
                    name=r.name,
                    site=r.site,
                    rate_per_day=r.rate_per_day,
                    trend_per_year=r.trend_per_year,
                    seasonality_amplitude=r.seasonality_amplitude,
                    seasonality_peak_day=r.seasonality_peak_day,
                    schedule=tuple(r.schedule),
                    mix=tuple(r.mix.items()),
                    inbound=r.inbound,
                    outbound=r.outbound,
                )
                for r in self.regions
            ),
            disruptions=tuple(
                Disruption(
                    d.kind,
                    d.target,
                    d.start,
                    d.duration,
                    d.every,
                    d.factor,
                    d.lookback_days,
                    d.name,
                )
                for d in self.disruptions
            ),
            qp_team=(
                QpTeam(
                    count=self.qp_team.count,
                    review=_dist(self.qp_team.review),
                    day_start_h=self.qp_team.day_start_h,
                    day_end_h=self.qp_team.day_end_h,
                    days_per_week=self.qp_team.days_per_week,
                )
                if self.qp_team is not None
                else None
            ),
            materials=tuple(
                Material(
                    name=m.name,
                    lead_time=_dist(m.lead_time),
                    order_quantity=m.order_quantity,
                    reorder_point=m.reorder_point,
                    initial=m.initial,
                    shelf_life_days=m.shelf_life_days,
                )
                for m in self.materials
            ),
        )


_BRANCH = re.compile(r"^(float|int|DistIn|CapitalIn|function-after\[.*\])$")


def _first_error(errors: list[Any]) -> Any:
    """The error to show: for a duration given as a mapping, the mapping branch's complaint,
    not the number branch's "should be a valid number"."""
    for e in errors:
        if not ("float" in e["loc"] and isinstance(e.get("input"), dict)):
            return e
    return errors[0]


def _field_path(loc: tuple[int | str, ...]) -> str:
    # drop pydantic's union-branch tags ("float", "DistIn") from the path a person reads
    parts = [str(p) for p in loc if not (isinstance(p, str) and _BRANCH.match(p))]
    return ".".join(parts) or "scenario"


def modelled_designs(
    scenario: ScenarioIn, families: FamilyRegistry | None, source: str = "scenario"
) -> dict[int, Design]:
    """Every product design (by product index) through its family's model, as the platform
    would make it. A design without a family, a family not in `families`, a bad envelope or a
    prescription the family refuses raises ScenarioInvalid naming the field (e.g.
    `products.0.design.prescriptions.2.units`)."""
    out: dict[int, Design] = {}
    for i, product in enumerate(scenario.products):
        if product.design is None:
            continue
        path = f"products.{i}.family"
        if product.family is None:
            raise ScenarioInvalid(
                f"{source}: {path}: a product with a design names the product family that makes it",
                field=path,
            )
        if families is None:
            raise ScenarioInvalid(
                f"{source}: {path}: no product families were given to make the design of "
                f"{product.family!r} (bootstrap.product_families())",
                field=path,
            )
        try:
            family = families.get(product.family)
        except DomainError as exc:
            raise ScenarioInvalid(f"{source}: {path}: {exc.message}", field=path) from None
        at = f"products.{i}.design"
        envelope = product.design.envelope
        mix = []
        for k, rx in enumerate(product.design.prescriptions):
            try:
                mix.append(modelled_prescription(family, envelope, rx.says(), rx.weight))
            except DomainError as exc:
                name = exc.field or ""
                if name.startswith("design_envelope"):
                    where = f"{at}.envelope" + name.removeprefix("design_envelope")
                else:
                    where = f"{at}.prescriptions.{k}" + (f".{name}" if name else "")
                raise ScenarioInvalid(f"{source}: {where}: {exc.message}", field=where) from None
        out[i] = Design(envelope=dict(envelope), prescriptions=tuple(mix))
    return out


def parse_scenario(
    data: Any, source: str = "scenario", *, families: FamilyRegistry | None = None
) -> ScenarioIn:
    """Check a scenario mapping; a bad one raises ScenarioInvalid naming the field and reason.
    Product designs are checked by their families in `families` (required when a product has
    a design)."""
    if not isinstance(data, dict):
        raise ScenarioInvalid(f"{source}: a scenario must be a mapping", field="scenario")
    try:
        scenario = ScenarioIn.model_validate(data)
    except ValidationError as exc:
        first = _first_error(exc.errors())
        path = _field_path(tuple(first["loc"]))
        reason = first["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ScenarioInvalid(f"{source}: {path}: {reason}{more}", field=path) from None
    modelled_designs(scenario, families, source)
    return scenario


def load_scenario(path: str | Path, families: FamilyRegistry | None = None) -> ScenarioIn:
    """Read and check a scenario YAML file (designs by their families in `families`)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioInvalid(f"{p}: cannot read ({exc.strerror})", field="scenario") from None
    except yaml.YAMLError as exc:
        raise ScenarioInvalid(f"{p}: not valid YAML ({exc})", field="scenario") from None
    return parse_scenario(data, str(p), families=families)


def dump_scenario(scenario: ScenarioIn) -> str:
    """The scenario as YAML (defaults left out)."""
    data = scenario.model_dump(mode="json", exclude_defaults=True)
    data = {"name": scenario.name, "horizon_days": scenario.horizon_days, **data}
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


class UnitTypeIn(BaseModel):
    """A kind of manufacturing unit the planner may add (e.g. a 4-slot micro-factory)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    slots: int = Field(ge=1)
    capital: float = Field(ge=0, description="paid in the year the unit is added")
    fixed_per_year: float = Field(ge=0)


class ScaleOutIn(BaseModel):
    """A multi-year demand forecast and the units that can meet it (`simulate scale-out`)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "scale-out"
    demand_per_day: list[float] = Field(min_length=1, description="forecast, one value a year")
    unit_types: list[UnitTypeIn] = Field(min_length=1)
    cycle_days: float = Field(gt=0, description="days a dose occupies a slot")
    slack_days: float = Field(ge=0, description="longest acceptable wait for a slot")
    service_level: float = Field(default=0.95, gt=0, lt=1)
    discount_rate: float = Field(default=0.035, ge=0, lt=1)

    @model_validator(mode="after")
    def _demand_not_negative(self) -> ScaleOutIn:
        for i, value in enumerate(self.demand_per_day):
            if value < 0:
                raise ValueError(f"demand_per_day.{i} must be 0 or more")
        return self


def load_scale_out(path: str | Path) -> ScaleOutIn:
    """Read and check a scale-out forecast file; errors name the field."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioInvalid(f"{p}: cannot read ({exc.strerror})", field="forecast") from None
    except yaml.YAMLError as exc:
        raise ScenarioInvalid(f"{p}: not valid YAML ({exc})", field="forecast") from None
    if not isinstance(data, dict):
        raise ScenarioInvalid(f"{p}: a forecast must be a mapping", field="forecast")
    try:
        return ScaleOutIn.model_validate(data)
    except ValidationError as exc:
        first = _first_error(exc.errors())
        path = _field_path(tuple(first["loc"]))
        reason = first["msg"].removeprefix("Value error, ")
        raise ScenarioInvalid(f"{p}: {path}: {reason}", field=path) from None
