"""Use cases: run a scenario's replications on an executor, summarise and compare them, run the
validation suite, and export today's network from the live database as a scenario.

Executors: `serial` (this process), `local` (a process pool on this machine's cores; the
default), `dask://HOST:PORT` (a dask.distributed scheduler), or a `distributed.Client`. Each
replication is a pure function of (scenario, replication index), so every executor returns
identical results for the same seeds.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime
from typing import Any

from nearfab.common.errors import DomainError
from nearfab.designs import FamilyRegistry
from nearfab.simulation.errors import ScenarioInvalid
from nearfab.simulation.logic.costs import CATEGORIES
from nearfab.simulation.logic.engine import ReplicationResult, simulate
from nearfab.simulation.logic.machine_models import modelled_prescription, simulation_kit
from nearfab.simulation.logic.spec import ScenarioSpec
from nearfab.simulation.logic.stats import estimate
from nearfab.simulation.logic.validation import Check, run_validation
from nearfab.simulation.schemas import ScenarioIn, parse_scenario

Progress = Callable[[int, int], None]  # (done, total)


def _one(args: tuple[ScenarioSpec, int]) -> ReplicationResult:
    return simulate(args[0], args[1])


def run_replications(
    spec: ScenarioSpec,
    replications: int | None = None,
    executor: Any = "local",
    progress: Progress | None = None,
) -> list[ReplicationResult]:
    """Replications 0..n-1 of `spec`, in replication order, on `executor`."""
    n = replications if replications is not None else spec.replications
    tasks = [(spec, i) for i in range(n)]
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, n)

    if isinstance(executor, str) and executor.startswith("dask://"):
        from distributed import Client

        with Client(executor.removeprefix("dask://"), timeout="20s") as client:  # type: ignore[no-untyped-call]
            return _on_dask(client, tasks, tick)
    if not isinstance(executor, str):  # a distributed.Client
        return _on_dask(executor, tasks, tick)
    workers = min(n, os.cpu_count() or 1)
    if executor == "serial" or workers <= 1 or n == 1:
        out = []
        for task in tasks:
            out.append(_one(task))
            tick()
        return out
    if executor != "local":
        raise ScenarioInvalid(
            f"unknown executor {executor!r}: use local, serial or dask://HOST:PORT",
            field="executor",
        )
    results: dict[int, ReplicationResult] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_one, task): task[1] for task in tasks}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            tick()
    return [results[i] for i in range(n)]


def _on_dask(
    client: Any, tasks: list[tuple[ScenarioSpec, int]], tick: Callable[[], None]
) -> list[ReplicationResult]:
    from distributed import as_completed as dask_completed

    futures = client.map(_one, tasks, pure=False)
    index = {f.key: i for i, f in enumerate(futures)}
    results: dict[int, ReplicationResult] = {}
    for future in dask_completed(futures):  # type: ignore[no-untyped-call]
        results[index[future.key]] = future.result()
        tick()
    return [results[i] for i in range(len(tasks))]


# -- summaries --------------------------------------------------------------------------------

SCALARS = (
    "lead_time_mean",
    "lead_time_p50",
    "lead_time_p90",
    "lead_time_p95",
    "within_target_share",
    "wait_mean",
    "wip_mean",
    "in_transit_mean",
    "orders",
    "delivered",
    "open_orders",
    "blocked",
)


def summarise(
    spec: ScenarioSpec, results: Sequence[ReplicationResult], level: float = 0.95
) -> dict[str, Any]:
    """Means and `level` confidence intervals over replications of every output."""

    def est(values: Sequence[float]) -> dict[str, float]:
        return estimate(values, level).as_dict()

    out: dict[str, Any] = {
        "scenario": spec.name,
        "description": spec.description,
        "replications": len(results),
        "seed": spec.seed,
        "horizon_days": spec.horizon_days,
        "warmup_days": spec.warmup_days,
        "metrics": {k: est([float(getattr(r, k)) for r in results]) for k in SCALARS},
        "cost_per_dose": {
            k: est([r.cost_per_dose[k] for r in results]) for k in (*CATEGORIES, "total")
        },
        "waste": {k: est([float(r.waste[k]) for r in results]) for k in results[0].waste}
        if results
        else {},
        "utilisation": {s.name: est([r.utilisation[s.name] for r in results]) for s in spec.sites},
        "wip_by_site": {s.name: est([r.wip_by_site[s.name] for r in results]) for s in spec.sites},
        "by_product": {
            p.name: {
                k: est([r.by_product[p.name][k] for r in results])
                for k in ("lead_time_mean", "within_target_share")
            }
            for p in spec.products
        },
        "events": sum(r.events for r in results),
    }
    if results and results[0].collection_to_administration:
        # products collected from the patient: collection to administration, and the new
        # collections a failed batch needed, per order delivered
        out["collection_to_administration"] = {
            "mean_days": est([r.collection_to_administration["mean"] for r in results]),
            "p90_days": est([r.collection_to_administration["p90"] for r in results]),
            "recollections_per_order": est(
                [
                    r.collection_to_administration["recollections"]
                    / r.collection_to_administration["orders"]
                    if r.collection_to_administration["orders"]
                    else math.nan
                    for r in results
                ]
            ),
        }
    groups: dict[str, list[Any]] = defaultdict(list)
    for r in results:
        for d in r.disruptions:
            groups[d.name].append(d)
    out["disruptions"] = {
        name: {
            "kind": items[0].kind,
            "target": items[0].target,
            "occurrences_per_replication": len(items) / max(1, len(results)),
            "late_orders": est([d.late_orders for d in items]),
            "excess_late_orders": est([d.excess_late for d in items]),
            "time_to_recover_days": est(
                [
                    d.time_to_recover_days if d.time_to_recover_days is not None else math.nan
                    for d in items
                ]
            ),
            "not_recovered": sum(d.time_to_recover_days is None for d in items),
        }
        for name, items in groups.items()
    }
    return out


def run_scenario(
    scenario: ScenarioIn | ScenarioSpec,
    replications: int | None = None,
    executor: Any = "local",
    progress: Progress | None = None,
    families: FamilyRegistry | None = None,
) -> tuple[ScenarioSpec, list[ReplicationResult], dict[str, Any]]:
    """Simulate a scenario (its designs made by their families in `families`); returns its
    spec, the raw replications and the summary."""
    spec = scenario.to_spec(families) if isinstance(scenario, ScenarioIn) else scenario
    results = run_replications(spec, replications, executor, progress)
    return spec, results, summarise(spec, results)


def compare(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per scenario with the headline figures (means and 95 % CI half-widths)."""
    rows = []
    for s in summaries:
        m = s["metrics"]
        c = s["cost_per_dose"]
        row: dict[str, Any] = {
            "scenario": s["scenario"],
            "lead_time_mean_days": m["lead_time_mean"]["mean"],
            "lead_time_p95_days": m["lead_time_p95"]["mean"],
            "within_target_share": m["within_target_share"]["mean"],
            "within_target_ci": [
                m["within_target_share"]["ci_low"],
                m["within_target_share"]["ci_high"],
            ],
            "delivered": m["delivered"]["mean"],
            "cost_per_dose": c["total"]["mean"],
            "cost_per_dose_ci": [c["total"]["ci_low"], c["total"]["ci_high"]],
            "mean_utilisation": sum(u["mean"] for u in s["utilisation"].values())
            / max(1, len(s["utilisation"])),
            "waste_units": sum(w["mean"] for w in s["waste"].values()),
        }
        for k in CATEGORIES:
            row[f"cost_{k}"] = c[k]["mean"]
        collected = s.get("collection_to_administration")
        if collected is not None:
            row["collection_to_administration_mean_days"] = collected["mean_days"]["mean"]
            row["collection_to_administration_mean_ci"] = [
                collected["mean_days"]["ci_low"],
                collected["mean_days"]["ci_high"],
            ]
            row["collection_to_administration_p90_days"] = collected["p90_days"]["mean"]
            row["recollections_per_order"] = collected["recollections_per_order"]["mean"]
        rows.append(row)
    return rows


def validate(
    executor: Any = "local", scale: float = 1.0, progress: Progress | None = None
) -> list[Check]:
    """The validation suite (see logic.validation) on `executor`."""

    def runner(spec: ScenarioSpec, n: int) -> list[ReplicationResult]:
        return run_replications(spec, n, executor, progress)

    return run_validation(runner, scale)


# -- export from the live database --------------------------------------------------------------

DEFAULT_COSTS: dict[str, float] = {
    # assumptions, not measurements: the database holds no money figures (docs/simulation.md)
    "capital_per_machine": 60_000.0,
    "capital_life_years": 5.0,
    "discount_rate": 0.035,
    "fixed_per_site_per_year": 45_000.0,
    "labour_rate_per_hour": 35.0,
    "labour_hours_per_batch": 0.75,
    "materials_per_batch": 12.0,
    "qc_per_batch": 8.0,
    "courier_cost": 25.0,
    "courier_days": 0.5,
    "target_lead_time_days": 2.0,
    "default_cycle_days": 1.0 / 24.0,
    "default_rate_per_day": 2.0,
}


def export_scenario(
    uow: Any,
    families: FamilyRegistry,
    *,
    name: str = "today",
    horizon_days: float = 365.0,
    costs: dict[str, float] | None = None,
) -> ScenarioIn:
    """Today's network as a scenario: active sites and their machines, effective master files,
    cycle times and failure rates measured from batch records, demand from orders. A product
    whose family is in `families` is exported with its design envelope and the prescription
    mix of its orders (each order in the family's words, `SimulationKit.prescription_of`), so
    the simulator times each batch with the family's model (measured batch times are then not
    used for it)."""
    from sqlalchemy import select

    from nearfab.masterfiles import MasterFileStatus
    from nearfab.masterfiles import reads as masterfiles_reads
    from nearfab.network import reads as network_reads
    from nearfab.orders import reads as orders_reads
    from nearfab.production import BatchStatus
    from nearfab.production import reads as production_reads

    c = {**DEFAULT_COSTS, **(costs or {})}
    session = uow.session
    sites = [
        s for s in network_reads.sites(session) if s.kind != "control" and s.status == "active"
    ]
    if not sites:
        raise ScenarioInvalid("the network has no active manufacturing site", field="sites")
    masters = [
        m for m in masterfiles_reads.master_files(session) if m.status == MasterFileStatus.EFFECTIVE
    ]
    products_by_code = {m.code: m for m in masters}
    # machines and qualifications are read as the owner's view rows (id, site, status, code)
    machine, qual = network_reads.machine_view(), network_reads.qualification_view()
    machines = list(session.execute(select(machine)))
    quals = list(session.execute(select(qual).where(qual.c.revoked.is_(False))))
    batches = production_reads.all_batch_records(session)
    orders = orders_reads.all_orders(session)

    cycle: dict[tuple[str, str], list[float]] = defaultdict(list)
    outcomes: dict[str, list[bool]] = defaultdict(list)
    for b in batches:
        if b.finished_at is not None and b.status != BatchStatus.FAILED:
            cycle[(b.site_id, b.master_file_code)].append(
                (b.finished_at - b.started_at).total_seconds() / 86_400.0
            )
        if b.status in (
            BatchStatus.FAILED,
            BatchStatus.REJECTED,
            BatchStatus.RELEASED,
            BatchStatus.COMPLETED,
        ):
            outcomes[b.master_file_code].append(
                b.status in (BatchStatus.FAILED, BatchStatus.REJECTED)
            )
    times = [o.created_at for o in orders]
    span_days = _span_days(times)
    order_rate = (
        {
            code: sum(1 for o in orders if o.master_file_code == code) / span_days
            for code in products_by_code
        }
        if span_days > 0
        else {}
    )

    products = []
    designed: set[str] = set()
    for code, mf in products_by_code.items():
        fails = outcomes.get(code, [])
        design = _design(mf, [o for o in orders if o.master_file_code == code], families)
        if design is not None:
            designed.add(code)
        products.append(
            {
                "name": code,
                "family": mf.product_family,
                **({"design": design} if design is not None else {}),
                "target_lead_time_days": c["target_lead_time_days"],
                "cycle": 0.0 if design is not None else c["default_cycle_days"],
                "qc": 0.0,  # RTRT: the release test is done in-line
                "qp_release": {"kind": "exponential", "mean": 2.0 / 24.0},
                "shelf_life_days": float(mf.shelf_life_days),
                "batch_failure_probability": min(0.5, sum(fails) / len(fails)) if fails else 0.0,
                "materials_per_batch": c["materials_per_batch"],
                "qc_per_batch": c["qc_per_batch"],
                "labour_hours_per_batch": c["labour_hours_per_batch"],
            }
        )
    site_rows = []
    regions = []
    legs = []
    batches_by_site = {s.id: sum(1 for b in batches if b.site_id == s.id) for s in sites}
    total_batches = sum(batches_by_site.values())
    for s in sites:
        own = [m for m in machines if m.site_id == s.id and m.status != "retired"]
        if not own:
            continue
        codes = sorted(
            {q.master_file_code for q in quals if q.machine_id in {m.id for m in own}}
            & set(products_by_code)
        )
        measured = {
            code: {"kind": "empirical", "values": [round(x, 6) for x in cycle[(s.id, code)]]}
            for code in codes
            if cycle.get((s.id, code)) and code not in designed
        }
        site_rows.append(
            {
                "name": s.code,
                "kind": s.kind,
                "slots": len(own),
                "products": codes,
                "cycle": measured,
                "hours_per_day": 24.0,
                "capital": {
                    "cost": c["capital_per_machine"] * len(own),
                    "life_years": c["capital_life_years"],
                    "rate": c["discount_rate"],
                },
                "fixed_per_year": c["fixed_per_site_per_year"],
                "labour_rate_per_hour": c["labour_rate_per_hour"],
            }
        )
        legs.append(
            {
                "name": f"{s.code}-courier",
                "mode": "courier",
                "time": {"kind": "exponential", "mean": c["courier_days"]},
                "cost_per_shipment": c["courier_cost"],
            }
        )
        share = (batches_by_site[s.id] / total_batches) if total_batches else 1.0 / len(sites)
        mix = {code: order_rate.get(code, 0.0) for code in codes}
        rate = sum(mix.values()) * share if order_rate else c["default_rate_per_day"]
        regions.append(
            {
                "name": f"{s.code}-patients",
                "site": s.code,
                "rate_per_day": round(rate, 6),
                "mix": {k: v for k, v in mix.items() if v > 0}
                or ({codes[0]: 1.0} if codes else {}),
                "outbound": f"{s.code}-courier",
            }
        )
    data = {
        "name": name,
        "description": f"exported from the live database on {_today(times)}",
        "horizon_days": horizon_days,
        "products": products,
        "sites": site_rows,
        "legs": legs,
        "regions": regions,
    }
    return parse_scenario(data, "exported scenario", families=families)


def _design(
    master_file: Any, orders: Sequence[Any], families: FamilyRegistry
) -> dict[str, Any] | None:
    """The design section of an exported product: the master file's envelope and its orders'
    prescriptions in the family's words (weight = how many orders said the same), keeping
    those the family accepts. None when the family is not registered or no order is usable."""
    if master_file.product_family not in families.names():
        return None
    family = families.get(master_file.product_family)
    kit = simulation_kit(family)
    envelope = dict(master_file.design_envelope or {})
    counts: dict[tuple[tuple[str, Any], ...], int] = defaultdict(int)
    for o in orders:
        says = kit.prescription_of(o)
        if says is not None:
            counts[tuple(says.items())] += 1
    prescriptions = []
    for key, n in sorted(counts.items(), key=lambda kv: _order_key(kv[0])):
        says = dict(key)
        try:
            modelled_prescription(family, envelope, says)
        except DomainError:  # refused (e.g. made under an older envelope): not in the mix
            continue
        prescriptions.append({**says, "weight": float(n)})
    if not prescriptions:
        return None
    return {"envelope": envelope, "prescriptions": prescriptions}


def _order_key(items: tuple[tuple[str, Any], ...]) -> tuple[tuple[int, Any], ...]:
    """Prescriptions in the order of their values as the family lists them (numbers before
    words), so the mix, and the draws from it, come out the same on every export."""
    return tuple(
        (0, v) if isinstance(v, int | float) and not isinstance(v, bool) else (1, str(v))
        for _, v in items
    )


def _span_days(times: list[datetime]) -> float:
    if len(times) < 2:
        return 0.0
    return max(1.0, (max(times) - min(times)).total_seconds() / 86_400.0)


def _today(times: list[datetime]) -> str:
    return max(times).date().isoformat() if times else "an empty database"
