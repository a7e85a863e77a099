"""From one finished engine run to a `ReplicationResult` (lead times, utilisation, impacts)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from nearfab.simulation.logic.engine import ReplicationResult

if TYPE_CHECKING:
    from nearfab.simulation.logic.engine import Engine


def collect(engine: Engine) -> ReplicationResult:
    spec = engine.spec
    now = engine.horizon
    window = engine.horizon - engine.start
    for level in (engine.wip, engine.in_transit):
        level.close(now)
    for site in engine.sites:
        site.busy.close(now)
        site.occupancy.close(now)
    lead = np.asarray(engine.o_lead, dtype=float)
    created = np.asarray(engine.o_created, dtype=float)
    product = np.asarray(engine.o_product, dtype=np.int64)
    region = np.asarray(engine.o_region, dtype=np.int64)
    site_of = np.asarray(engine.o_site, dtype=np.int64)
    targets = np.asarray([p.target_lead_time_days for p in spec.products], dtype=float)
    late = lead > targets[product] + 1e-9 if lead.size else np.zeros(0, dtype=bool)
    res = ReplicationResult(
        scenario=spec.name, replication=engine.replication, seed=spec.seed, window_days=window
    )
    res.orders = engine.arrivals_in_window
    res.delivered = int(lead.size)
    res.open_orders = len(engine._open)
    res.blocked = engine.blocked
    if lead.size:
        res.lead_time_mean = float(lead.mean())
        p50, p90, p95 = np.percentile(lead, [50, 90, 95])
        res.lead_time_p50, res.lead_time_p90, res.lead_time_p95 = float(p50), float(p90), float(p95)
        res.within_target_share = float(1.0 - late.mean())
        res.wait_mean = float(np.mean(engine.o_wait))
        step = max(1, math.ceil(lead.size / spec.lead_time_sample))
        res.lead_times = [round(x, 6) for x in lead[::step].tolist()]
    res.wip_mean = engine.wip.area / window
    mean_t = engine.in_transit.area / window
    res.in_transit_mean = mean_t
    res.in_transit_var = engine.in_transit.area2 / window - mean_t * mean_t
    res.arrival_rate = engine.arrivals_in_window / window
    res.waste = dict(engine.waste)
    res.costs = dict(engine.costs.totals)
    res.cost_per_dose = engine.costs.per_dose(res.delivered)
    for site in engine.sites:
        s = site.spec
        name = s.name
        slots = s.slots
        width = site.busy.bucket_days
        res.wip_by_site[name] = site.occupancy.area / window
        if s.always_open:
            res.utilisation[name] = site.busy.area / (slots * window)
            res.utilisation_over_time[name] = [
                round(b / (slots * min(width, max(engine.horizon - i * width, 1e-12))), 6)
                for i, b in enumerate(site.busy.buckets)
            ]
            continue
        # with shifts: the share of the machine time the shifts offer (working time only)
        offered = s.open_time(engine.start, now)
        res.utilisation[name] = site.busy.area / (slots * offered) if offered > 0 else 0.0
        res.utilisation_over_time[name] = []
        for i, b in enumerate(site.busy.buckets):
            on_shift = s.open_time(i * width, min((i + 1) * width, now))
            res.utilisation_over_time[name].append(
                round(b / (slots * on_shift), 6) if on_shift > 0 else 0.0
            )
    for i, p in enumerate(spec.products):
        mask = product == i
        n = int(mask.sum())
        res.by_product[p.name] = {
            "delivered": float(n),
            "lead_time_mean": float(lead[mask].mean()) if n else math.nan,
            "within_target_share": float(1.0 - late[mask].mean()) if n else math.nan,
        }
    # disruptions: late orders in the system during the window, and the excess over baseline
    recovered = dict(engine.recovered)
    baseline = float(late.mean()) if lead.size else 0.0
    delivered_at = created + lead
    site_index = engine.site_index
    region_index = {r.name: i for i, r in enumerate(spec.regions)}
    for ident, impact in enumerate(engine.impacts):
        if impact.time_to_recover_days is None and ident in recovered:
            impact.time_to_recover_days = recovered[ident] - impact.end
            if impact.kind == "recall":
                impact.time_to_recover_days = recovered[ident] - impact.start
        if impact.kind == "recall":
            continue
        mask = (created <= impact.end) & (delivered_at >= impact.start)
        if impact.kind in ("site_outage", "material_shortage") and impact.target in site_index:
            mask &= site_of == site_index[impact.target]
        elif impact.kind == "demand_surge" and impact.target in region_index:
            mask &= region == region_index[impact.target]
        affected = int(mask.sum())
        n_late = int((late & mask).sum())
        impact.affected_orders = affected
        impact.late_orders = n_late
        impact.excess_late = max(0.0, n_late - baseline * affected)
    if engine.collects:
        collected = np.asarray(engine.o_collected, dtype=float)
        res.collection_to_administration = {
            "orders": float(collected.size),
            "mean": float(collected.mean()) if collected.size else math.nan,
            "p90": float(np.percentile(collected, 90)) if collected.size else math.nan,
            "recollections": float(engine.recollections),
        }
    res.disruptions = list(engine.impacts)
    res.events = next(engine.env._eid)  # events scheduled by SimPy in this run
    return res
