"""The discrete-event engine (SimPy): orders flow from demand to patient through the network.

One order: created in a region (Poisson demand with trend, seasonality and surges, or a fixed
schedule) → pre-processing (prescription check; collecting the patient's cells) → inbound leg
(patient material to the site, if any) → a slot at the site (setup + cycle, or the product
family's machine time for the order's design; QC inside the slot when it occupies the machine;
started only on shift, paused outside it) → QC and QP release → outbound leg → patient.
A failed batch (Bernoulli, found at QC), a breakdown or an outage in mid-batch scraps the batch
and the order is made again; a dose older than its shelf life on arrival is wasted and remade.

A product whose family collects starting material from the patient (a prescription with a
collection, `Prescription.collected`): the collection starts when the order does and ends
with `pre_process`; the run starts no earlier than the family's `to_start_days` after it and
the product is administered no earlier than `to_administration_days` after the run ends (or
when QC, release and the outbound leg are done, if later). A failed batch needs a new
collection: `pre_process` and the inbound leg again, then a new run. The time from the first
collection to administration is measured per order.

Time is SimPy's clock, in days from the start of the run; the engine never reads a wall clock.
Everything random comes from per-purpose streams keyed by (seed, replication, stream), so the
same seed gives the same result on any executor.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from nearfab.simulation.logic.costs import CostLedger
from nearfab.simulation.logic.distributions import Sampler, Uniforms, stream
from nearfab.simulation.logic.spec import (
    DAYS_PER_YEAR,
    WINDOW_EPS,
    Disruption,
    Material,
    Prescription,
    Product,
    ScenarioSpec,
    Site,
)

JOB, BREAKDOWN, OUTAGE = 1, 0, -1  # slot priorities (lower wins; outages preempt everything)

Proc = Generator[simpy.Event, Any, Any]


class Level:
    """An integer level (orders at a site, busy slots, orders in transit) and its time integral
    over the measured window [start, ∞); optional per-bucket integrals for charts."""

    __slots__ = ("area", "area2", "bucket_days", "buckets", "last", "level", "start", "watchers")

    def __init__(self, start: float, buckets: int = 0, bucket_days: float = 1.0) -> None:
        self.level = 0
        self.last = 0.0
        self.area = 0.0
        self.area2 = 0.0
        self.start = start
        self.buckets = [0.0] * buckets
        self.bucket_days = bucket_days
        # (threshold level, callback-id) pairs: recovery watchers fire when level <= threshold
        self.watchers: list[tuple[int, int]] = []

    def change(
        self, now: float, delta: int, recovered: list[tuple[int, float]] | None = None
    ) -> None:
        level = self.level
        last = self.last
        if level and now > last:
            if now > self.start:
                t0 = last if last > self.start else self.start
                dt = now - t0
                self.area += level * dt
                self.area2 += level * level * dt
            if self.buckets:
                self._bucket(last, now, level)
        self.last = now
        self.level = level = level + delta
        if delta < 0 and self.watchers and recovered is not None:
            keep = []
            for threshold, ident in self.watchers:
                if level <= threshold:
                    recovered.append((ident, now))
                else:
                    keep.append((threshold, ident))
            self.watchers = keep

    def _bucket(self, t0: float, t1: float, level: int) -> None:
        width = self.bucket_days
        buckets = self.buckets
        n = len(buckets)
        i = int(t0 / width)
        while t0 < t1 and i < n:
            edge = (i + 1) * width
            end = t1 if t1 < edge else edge
            buckets[i] += level * (end - t0)
            t0 = end
            i += 1

    def close(self, now: float) -> None:
        self.change(now, 0)


@dataclass
class DisruptionImpact:
    name: str
    kind: str
    target: str
    start: float
    end: float
    affected_orders: int = 0
    late_orders: int = 0
    excess_late: float = 0.0
    time_to_recover_days: float | None = None
    backlog_at_end: int = 0


@dataclass
class ReplicationResult:
    """Everything one replication measured; plain Python values (picklable, comparable)."""

    scenario: str
    replication: int
    seed: int
    window_days: float
    orders: int = 0
    delivered: int = 0
    open_orders: int = 0
    blocked: int = 0
    lead_time_mean: float = math.nan
    lead_time_p50: float = math.nan
    lead_time_p90: float = math.nan
    lead_time_p95: float = math.nan
    within_target_share: float = math.nan
    wait_mean: float = math.nan  # waiting for a slot (first attempt)
    wip_mean: float = 0.0  # orders in the system, time average (Little's L)
    in_transit_mean: float = 0.0
    in_transit_var: float = 0.0
    arrival_rate: float = 0.0  # measured orders per day in the window
    waste: dict[str, int] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    cost_per_dose: dict[str, float] = field(default_factory=dict)
    utilisation: dict[str, float] = field(default_factory=dict)
    utilisation_over_time: dict[str, list[float]] = field(default_factory=dict)
    wip_by_site: dict[str, float] = field(default_factory=dict)
    by_product: dict[str, dict[str, float]] = field(default_factory=dict)
    disruptions: list[DisruptionImpact] = field(default_factory=list)
    lead_times: list[float] = field(default_factory=list)  # a sample, for charts
    events: int = 0
    # orders of products collected from the patient: time from collection to administration
    # (mean, p90, days), orders measured and new collections per order; empty without any
    collection_to_administration: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


class _SiteState:
    __slots__ = (
        "busy",
        "closed",
        "deliveries",
        "index",
        "occupancy",
        "preemptive",
        "resource",
        "shifted",
        "shortage_until",
        "spec",
    )

    def __init__(
        self,
        env: simpy.Environment,
        spec: Site,
        index: int,
        preemptive: bool,
        start: float,
        buckets: int,
        bucket_days: float,
    ) -> None:
        self.spec = spec
        self.index = index
        self.preemptive = preemptive
        self.resource: simpy.Resource = (
            simpy.PreemptiveResource(env, spec.slots)
            if preemptive
            else simpy.Resource(env, spec.slots)
        )
        self.occupancy = Level(start)
        self.busy = Level(start, buckets, bucket_days)
        self.closed = False
        self.shortage_until = 0.0
        self.shifted = not spec.always_open
        self.deliveries: list[tuple[float, int, int]] = []  # (time, region, product)


class _Stock:
    __slots__ = ("lots", "on_order", "waiting")

    def __init__(self) -> None:
        self.lots: deque[list[float]] = deque()  # [expiry, quantity], oldest first
        self.on_order = 0
        self.waiting: list[simpy.Event] = []


class _LegState:
    __slots__ = ("cost", "down_until", "spec", "time")

    def __init__(self, cost: float, time: Sampler, spec_name: str) -> None:
        self.cost = cost
        self.time = time
        self.down_until = 0.0
        self.spec = spec_name


class Engine:
    """One replication of one scenario. Use `simulate(spec, replication)`."""

    def __init__(self, spec: ScenarioSpec, replication: int, *, trace: bool = False) -> None:
        self.spec = spec
        self.replication = replication
        self.env = simpy.Environment()
        seed = spec.seed
        self.start = spec.warmup_days
        self.horizon = spec.horizon_days
        n_buckets = max(1, math.ceil(spec.horizon_days / spec.bucket_days))
        self.products = {p.name: i for i, p in enumerate(spec.products)}
        site_kinds = {d.target for d in spec.disruptions if d.kind == "site_outage"}
        self.sites: list[_SiteState] = []
        self.site_index: dict[str, int] = {}
        for i, s in enumerate(spec.sites):
            preemptive = s.mtbf_days is not None or s.name in site_kinds
            self.sites.append(
                _SiteState(self.env, s, i, preemptive, self.start, n_buckets, spec.bucket_days)
            )
            self.site_index[s.name] = i
        key = 0

        def next_stream() -> np.random.Generator:
            nonlocal key
            key += 1
            return stream(seed, replication, key)

        # streams are keyed by declaration order in the scenario, never by run order
        self.legs: dict[str, _LegState] = {
            leg.name: _LegState(leg.cost_per_shipment, Sampler(leg.time, next_stream()), leg.name)
            for leg in spec.legs
        }
        self.site_setup = [Sampler(s.setup, next_stream()) for s in spec.sites]
        self.site_mttr = [Sampler(s.mttr, next_stream()) for s in spec.sites]
        self.site_cycle = [
            [Sampler(s.cycle_for(p), next_stream()) for p in spec.products] for s in spec.sites
        ]
        self.site_fail_u = [Uniforms(next_stream()) for _ in spec.sites]
        self.site_ttf = [next_stream() for _ in spec.sites]
        self.pre = [Sampler(p.pre_process, next_stream()) for p in spec.products]
        self.qc = [Sampler(p.qc, next_stream()) for p in spec.products]
        self.qp = [Sampler(p.qp_release, next_stream()) for p in spec.products]
        self.region_rng = [next_stream() for _ in spec.regions]
        self.region_u = [Uniforms(next_stream()) for _ in spec.regions]
        # last, so adding a QP team leaves every other stream (and result) as it was
        team = spec.qp_team
        self.qp_team = simpy.Resource(self.env, capacity=team.count) if team else None
        self.qp_review = Sampler(team.review, next_stream()) if team else None
        self.material_lead = {m.name: Sampler(m.lead_time, next_stream()) for m in spec.materials}
        self.materials = {m.name: m for m in spec.materials}
        # products with a design: the family's model per prescription (worked out when the
        # scenario became a spec), one stream each (after every other stream, so scenarios
        # without designs draw exactly as before)
        self.jobs: list[tuple[Prescription, ...]] = [
            p.design.prescriptions if p.design is not None else () for p in spec.products
        ]
        self.rx_u: list[Uniforms | None] = [
            Uniforms(next_stream()) if jobs else None for jobs in self.jobs
        ]
        self.rx_cumulative: list[list[float]] = []
        for p in spec.products:
            weights = [rx.weight for rx in p.design.prescriptions] if p.design else []
            total = sum(weights)
            self.rx_cumulative.append([w / total for w in np.cumsum(weights)] if weights else [])
        # (site, start, end, product, prescription or -1) of every stretch of machine work
        self.trace: list[tuple[int, float, float, int, int]] | None = [] if trace else None
        # (site, material) -> FIFO lots [expiry, quantity], units on order, waiters
        self.stock: dict[tuple[int, str], _Stock] = {}

        self.costs = CostLedger(spec, self.start)
        self.wip = Level(self.start)
        self.in_transit = Level(self.start)
        self.recovered: list[tuple[int, float]] = []
        self.impacts: list[DisruptionImpact] = []
        self.recall_open: dict[int, int] = {}
        self.waste = {
            "failed_batch": 0,
            "scrapped_in_process": 0,
            "expired": 0,
            "recalled": 0,
            "expired_material": 0,
        }
        self.blocked = 0
        self.arrivals_in_window = 0
        # per-order records (measured orders only)
        self.o_created: list[float] = []
        self.o_lead: list[float] = []
        self.o_product: list[int] = []
        self.o_region: list[int] = []
        self.o_site: list[int] = []
        self.o_wait: list[float] = []
        self.o_collected: list[float] = []  # collection to administration, collected products
        self.recollections = 0
        self.collects = any(rx.collected for jobs in self.jobs for rx in jobs)
        self.open_created: list[tuple[float, int, int, int]] = []
        self._open: set[int] = set()
        self._open_info: dict[int, tuple[float, int, int, int]] = {}
        self._next_order = 0

    # -- demand -------------------------------------------------------------------------------

    def _surge(self, region: str, t: float) -> float:
        factor = 1.0
        for d in self.spec.disruptions:
            if d.kind == "demand_surge" and d.target in ("*", region):
                for s, e in occurrences(d, self.horizon):
                    if s <= t < e:
                        factor *= d.factor
        return factor

    def _arrivals(self, r: int) -> Proc:
        spec = self.spec
        region = spec.regions[r]
        env = self.env
        mix = region.mix or ((spec.products[0].name, 1.0),)
        names = [self.products[n] for n, _ in mix]
        total = sum(w for _, w in mix)
        cumulative = list(np.cumsum([w / total for _, w in mix]))
        u = self.region_u[r]
        if region.schedule:
            for t in sorted(region.schedule):
                if t >= self.horizon:
                    break
                if t > env.now:
                    yield env.timeout(t - env.now)
                env.process(self._order(r, self._pick(names, cumulative, u), None))
            return
        base = region.rate_per_day
        if base <= 0:
            return
        trend = region.trend_per_year
        amp = region.seasonality_amplitude
        surges = [
            d
            for d in spec.disruptions
            if d.kind == "demand_surge" and d.target in ("*", region.name)
        ]
        growth_max = max(1.0, (1.0 + trend) ** (self.horizon / DAYS_PER_YEAR))
        surge_max = math.prod(max(1.0, d.factor) for d in surges)
        homogeneous = trend == 0 and amp == 0 and not surges
        lam_max = base * growth_max * (1.0 + abs(amp)) * surge_max
        gaps = self.region_rng[r]
        buffer: list[float] = []
        i = 0
        t = 0.0
        while True:
            if i >= len(buffer):
                buffer = gaps.exponential(1.0 / lam_max, 512).tolist()
                i = 0
            t += buffer[i]
            i += 1
            if t >= self.horizon:
                return
            if not homogeneous:
                rate = base * (1.0 + trend) ** (t / DAYS_PER_YEAR)
                if amp:
                    rate *= 1.0 + amp * math.cos(
                        2 * math.pi * (t - region.seasonality_peak_day) / DAYS_PER_YEAR
                    )
                if surges:
                    rate *= self._surge(region.name, t)
                if u() * lam_max > rate:
                    continue
            yield env.timeout(t - env.now)
            product = names[0] if len(names) == 1 else self._pick(names, cumulative, u)
            env.process(self._order(r, product, None))

    @staticmethod
    def _pick(names: list[int], cumulative: list[float], u: Uniforms) -> int:
        if len(names) == 1:
            return names[0]
        x = u()
        for name, c in zip(names, cumulative, strict=True):
            if x < c:
                return name
        return names[-1]

    # -- one order ----------------------------------------------------------------------------

    def _route(self, r: int) -> _SiteState | None:
        site = self.sites[self.site_index[self.spec.regions[r].site]]
        for _ in range(len(self.sites)):
            s = site.spec
            full = s.max_queue is not None and site.occupancy.level >= s.slots + s.max_queue
            if not (site.closed or full):
                return site
            if s.backup is None:
                return None if full else site  # closed without a backup: wait for it
            site = self.sites[self.site_index[s.backup]]
        return site

    def _ship(self, leg_name: str | None) -> Proc:
        if leg_name is None:
            return
        leg = self.legs[leg_name]
        env = self.env
        if leg.down_until > env.now:
            yield env.timeout(leg.down_until - env.now)
        self.costs.transport(env.now, leg.cost)
        self.in_transit.change(env.now, 1)
        yield env.timeout(leg.time())
        self.in_transit.change(env.now, -1)

    def _collect(self, p: int, inbound: str | None) -> Proc:
        """Pre-processing (the prescription check, or collecting the patient's material),
        then the inbound leg; returns when pre-processing ended (the collection's time)."""
        pre = self.pre[p]
        if pre.constant != 0.0:
            yield self.env.timeout(pre())
        collected_at = self.env.now
        yield from self._ship(inbound)
        return collected_at

    def _order(self, r: int, p: int, recall: int | None) -> Proc:
        env = self.env
        spec = self.spec
        region = spec.regions[r]
        product = spec.products[p]
        created = env.now
        measured = created >= self.start
        ident = self._next_order
        self._next_order += 1
        if measured:
            self.arrivals_in_window += 1
        self.wip.change(created, 1)
        collected_at = yield from self._collect(p, region.inbound)
        site = self._route(r)
        if site is None:
            self.blocked += measured
            self.wip.change(env.now, -1, self.recovered)
            return
        site.occupancy.change(env.now, 1)
        if measured:
            self._open.add(ident)
            self._open_info[ident] = (created, p, r, site.index)
        rx = self._prescription(p)
        job = self.jobs[p][rx] if rx >= 0 else None
        collected = collected_at if job is not None and job.collected else None
        wait = -1.0
        while True:
            first_wait, passed, run_end = yield from self._manufacture(
                site, product, p, rx, collected
            )
            if wait < 0:
                wait = first_wait
            site.occupancy.change(env.now, -1, self.recovered)
            if not passed:  # a new collection from the patient, then a new run
                self.recollections += measured
                collected = yield from self._collect(p, region.inbound)
                site.occupancy.change(env.now, 1)
                continue
            made = env.now
            yield from self._ship(region.outbound)
            if product.shelf_life_days is not None and env.now - made > product.shelf_life_days:
                self.waste["expired"] += 1
                site.occupancy.change(env.now, 1)
                continue
            if job is not None and collected is not None:
                ready = run_end + job.to_administration_days
                if ready > env.now:
                    yield env.timeout(ready - env.now)
            break
        now = env.now
        self.wip.change(now, -1, self.recovered)
        site.deliveries.append((now, r, p))
        if recall is not None:
            left = self.recall_open[recall] - 1
            self.recall_open[recall] = left
            if left == 0:
                self.recovered.append((recall, now))
        if measured:
            self._open.discard(ident)
            del self._open_info[ident]
            self.o_created.append(created)
            self.o_lead.append(now - created)
            self.o_product.append(p)
            self.o_region.append(r)
            self.o_site.append(site.index)
            self.o_wait.append(wait)
            if collected is not None:
                self.o_collected.append(now - created)

    def _prescription(self, p: int) -> int:
        """The prescription (index into the product's mix) of a new order; -1 without a design."""
        jobs = self.jobs[p]
        if not jobs:
            return -1
        if len(jobs) == 1:
            return 0
        u = self.rx_u[p]
        assert u is not None
        x = u()
        for k, c in enumerate(self.rx_cumulative[p]):
            if x < c:
                return k
        return len(jobs) - 1

    def _manufacture(
        self,
        site: _SiteState,
        product: Product,
        p: int,
        rx: int = -1,
        collected: float | None = None,
    ) -> Proc:
        """Make one batch at `site` until one passes QC; return the first wait for a slot
        (until the batch starts: a slot free outside the shift waits for the shift), whether
        the batch passed and when its run ended. With `collected` (the time the patient's
        material was collected), the run starts no earlier than the prescription's
        `to_start_days` after it, and a failed batch is returned (passed False): the material
        is used up and the order needs a new collection."""
        env = self.env
        i = site.index
        first_wait = -1.0
        job = self.jobs[p][rx] if rx >= 0 else None
        fail_p = site.spec.batch_failure_probability
        if fail_p is None:
            if job is not None and job.failure_probability is not None:
                fail_p = job.failure_probability
            else:
                fail_p = product.batch_failure_probability
        machine_days = job.machine_days if job is not None else 0.0
        cycle = self.site_cycle[i][p]
        setup = self.site_setup[i]
        costs = self.costs
        trace = self.trace
        earliest = -math.inf
        if collected is not None and job is not None and job.to_start_days is not None:
            earliest = collected + job.to_start_days
        while True:
            if earliest > env.now:
                yield env.timeout(earliest - env.now)
            if site.shortage_until > env.now:
                yield env.timeout(site.shortage_until - env.now)
            if product.material is not None:
                yield from self._draw(site.index, product.material)
            asked = env.now
            while True:
                if site.preemptive:
                    req = site.resource.request(priority=JOB)  # type: ignore[call-arg]
                else:
                    req = site.resource.request()
                yield req
                if not site.shifted:
                    break
                closed = site.spec.until_open(env.now)
                if closed <= 0:
                    break
                try:  # holding the slot until the shift starts: nothing started yet
                    yield env.timeout(closed)
                    break
                except simpy.Interrupt:
                    continue  # preempted before starting: nothing lost, queue again
            if first_wait < 0:
                first_wait = env.now - asked
            site.busy.change(env.now, 1)
            duration = setup() + cycle() + machine_days
            costs.batch(env.now, site.spec, product)
            qc_time = self.qc[p]() if product.qc.kind != "fixed" or product.qc.mean else 0.0
            if product.qc_occupies_machine:
                duration += qc_time
            started = env.now
            pausing = site.shifted and site.spec.shift_end == "pause"
            if site.preemptive:
                try:
                    if pausing:
                        yield from self._work(site, duration, p, rx)
                    else:
                        yield env.timeout(duration)
                except simpy.Interrupt:
                    site.busy.change(env.now, -1)
                    self.waste["scrapped_in_process"] += 1
                    if trace is not None and not pausing:
                        trace.append((i, started, env.now, p, rx))
                    continue
            elif pausing:
                yield from self._work(site, duration, p, rx)
            else:
                yield env.timeout(duration)
            if trace is not None and not pausing:
                trace.append((i, started, env.now, p, rx))
            site.resource.release(req)
            site.busy.change(env.now, -1)
            run_end = env.now
            if not product.qc_occupies_machine and qc_time > 0:
                yield env.timeout(qc_time)
            costs.qc(env.now, product)
            if self.qp_team is not None:
                yield from self._certify()
            else:
                qp = self.qp[p]
                if qp.constant != 0.0:
                    yield env.timeout(qp())
            if fail_p > 0 and self.site_fail_u[i]() < fail_p:
                self.waste["failed_batch"] += 1
                if collected is not None:
                    return first_wait, False, run_end
                continue
            return first_wait, True, run_end

    def _work(self, site: _SiteState, duration: float, p: int, rx: int) -> Proc:
        """`duration` of machine time inside the site's shifts: work stops at a shift's end and
        resumes when the next one starts, holding the slot; `busy` counts working time only.
        On an interrupt the slot is left counted busy, for the caller to release."""
        env = self.env
        spec = site.spec
        trace = self.trace
        left = duration
        paused = False
        t0 = env.now
        try:
            while True:
                start, end = spec.window(env.now)
                if start - env.now > WINDOW_EPS:
                    site.busy.change(env.now, -1)
                    paused = True
                    yield env.timeout(start - env.now)
                    site.busy.change(env.now, 1)
                    paused = False
                t0 = env.now
                step = end - t0
                if left <= step + WINDOW_EPS:
                    yield env.timeout(left)
                    if trace is not None:
                        trace.append((site.index, t0, env.now, p, rx))
                    return
                yield env.timeout(step)
                left -= step
                if trace is not None:
                    trace.append((site.index, t0, env.now, p, rx))
        except simpy.Interrupt:
            if paused:
                site.busy.change(env.now, 1)
            elif trace is not None and env.now > t0:
                trace.append((site.index, t0, env.now, p, rx))
            raise

    def _stock_of(self, site: int, name: str) -> _Stock:
        found = self.stock.get((site, name))
        if found is None:
            m = self.materials[name]
            found = self.stock[(site, name)] = _Stock()
            if m.initial:
                found.lots.append([self._expiry(m), m.initial])
        return found

    def _expiry(self, m: Material) -> float:
        return self.env.now + m.shelf_life_days if m.shelf_life_days else math.inf

    def _draw(self, site: int, name: str) -> Proc:
        """Take one unit of material for a batch: discard expired lots, wait for a delivery
        when none is left, and reorder at the reorder point."""
        m = self.materials[name]
        stock = self._stock_of(site, name)
        while True:
            while stock.lots and stock.lots[0][0] <= self.env.now:
                if self.env.now >= self.start:
                    self.waste["expired_material"] += int(stock.lots[0][1])
                stock.lots.popleft()
            if stock.lots:
                stock.lots[0][1] -= 1
                if stock.lots[0][1] <= 0:
                    stock.lots.popleft()
                break
            self._reorder(site, m, stock)
            arrived = self.env.event()
            stock.waiting.append(arrived)
            yield arrived
        self._reorder(site, m, stock)

    def _reorder(self, site: int, m: Material, stock: _Stock) -> None:
        on_hand = sum(int(q) for _, q in stock.lots)
        if on_hand + stock.on_order <= m.reorder_point:
            stock.on_order += m.order_quantity
            self.env.process(self._deliver(site, m, stock))

    def _deliver(self, site: int, m: Material, stock: _Stock) -> Proc:
        yield self.env.timeout(self.material_lead[m.name]())
        stock.on_order -= m.order_quantity
        stock.lots.append([self._expiry(m), m.order_quantity])
        waiting, stock.waiting = stock.waiting, []
        for event in waiting:
            event.succeed()

    def _certify(self) -> Proc:
        """Wait for a QP of the team to be free and on duty, then for the certification."""
        team, review = self.spec.qp_team, self.qp_review
        assert team is not None and review is not None and self.qp_team is not None
        with self.qp_team.request() as req:
            yield req
            wait = team.until_open(self.env.now)
            if wait > 0:
                yield self.env.timeout(wait)
            yield self.env.timeout(review())

    # -- machines and disruptions ---------------------------------------------------------------

    def _breakdowns(self, site: _SiteState) -> Proc:
        env = self.env
        mtbf = site.spec.mtbf_days
        assert mtbf is not None
        rng = self.site_ttf[site.index]
        mttr = self.site_mttr[site.index]
        # one failure process per slot: superposed, a slot fails at rate slots / mtbf
        rate_mean = mtbf / site.spec.slots
        while True:
            yield env.timeout(float(rng.exponential(rate_mean)))
            req = site.resource.request(priority=BREAKDOWN, preempt=True)  # type: ignore[call-arg]
            try:
                yield req
                yield env.timeout(mttr())
            except simpy.Interrupt:
                pass
            site.resource.release(req)

    def _disruption(self, d: Disruption) -> Proc:
        env = self.env
        for s, e in occurrences(d, self.horizon):
            if s > env.now:
                yield env.timeout(s - env.now)
            impact = DisruptionImpact(
                name=d.name or f"{d.kind}:{d.target}", kind=d.kind, target=d.target, start=s, end=e
            )
            ident = len(self.impacts)
            self.impacts.append(impact)
            if d.kind == "site_outage":
                site = self.sites[self.site_index[d.target]]
                before = site.occupancy.level
                site.closed = True
                reqs = []
                for _ in range(site.spec.slots):
                    req = site.resource.request(priority=OUTAGE, preempt=True)  # type: ignore[call-arg]
                    reqs.append(req)
                yield env.timeout(e - s)
                for req in reqs:
                    site.resource.release(req)
                site.closed = False
                self._watch(site.occupancy, before, ident, impact)
            elif d.kind == "material_shortage":
                site = self.sites[self.site_index[d.target]]
                before = site.occupancy.level
                site.shortage_until = e
                yield env.timeout(e - s)
                self._watch(site.occupancy, before, ident, impact)
            elif d.kind == "transport_failure":
                before = self.wip.level
                targets = [leg for leg in self.legs.values() if d.target in ("*", leg.spec)]
                for leg in targets:
                    leg.down_until = max(leg.down_until, e)
                yield env.timeout(e - s)
                self._watch(self.wip, before, ident, impact)
            elif d.kind == "demand_surge":
                before = self.wip.level
                yield env.timeout(e - s)
                self._watch(self.wip, before, ident, impact)
            elif d.kind == "recall":
                site = self.sites[self.site_index[d.target]]
                hits = [x for x in site.deliveries if s - d.lookback_days <= x[0] <= s]
                site.deliveries = [
                    x for x in site.deliveries if x[0] > s or x[0] < s - d.lookback_days
                ]
                self.waste["recalled"] += len(hits)
                impact.affected_orders = len(hits)
                impact.late_orders = len(hits)
                impact.excess_late = float(len(hits))
                if hits:
                    self.recall_open[ident] = len(hits)
                    for _, r, p in hits:
                        env.process(self._order(r, p, ident))
                else:
                    impact.time_to_recover_days = 0.0

    def _watch(self, level: Level, before: int, ident: int, impact: DisruptionImpact) -> None:
        impact.backlog_at_end = level.level
        if level.level <= before:
            impact.time_to_recover_days = 0.0
        else:
            level.watchers.append((before, ident))

    # -- run ----------------------------------------------------------------------------------

    def run(self) -> ReplicationResult:
        env = self.env
        for r in range(len(self.spec.regions)):
            env.process(self._arrivals(r))
        for site in self.sites:
            if site.spec.mtbf_days is not None:
                env.process(self._breakdowns(site))
        for d in self.spec.disruptions:
            env.process(self._disruption(d))
        env.run(until=self.horizon)
        return self._result()

    def _result(self) -> ReplicationResult:
        from nearfab.simulation.logic.results import collect

        return collect(self)


def occurrences(d: Disruption, horizon: float) -> list[tuple[float, float]]:
    """The [start, end) windows of a disruption within the horizon (repeats every `every`)."""
    out: list[tuple[float, float]] = []
    s = d.start
    while s < horizon:
        out.append((s, s + d.duration))
        if not d.every:
            break
        s += d.every
    return out


def simulate(spec: ScenarioSpec, replication: int = 0) -> ReplicationResult:
    """Run replication `replication` of `spec`: a pure function of (spec, replication)."""
    return Engine(spec, replication).run()


def simulate_traced(
    spec: ScenarioSpec, replication: int = 0
) -> tuple[ReplicationResult, list[tuple[int, float, float, int, int]]]:
    """`simulate`, plus every stretch of machine work as (site index, start, end, product
    index, prescription index or -1): to check shifts and family machine times."""
    engine = Engine(spec, replication, trace=True)
    result = engine.run()
    assert engine.trace is not None
    return result, engine.trace
