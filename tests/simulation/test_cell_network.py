"""A patient-specific product through the network: collection to administration and cost per
patient, with the cell_therapy family's own model (expansion days and the failed-culture
probability from its growth model, the earliest collection-to-run and run-to-administration
times from its `collection(design)`), all figures checked against hand calculations.

Hand figures used below (docs/cell-therapy.md; families/cell_therapy/family.py):
- the family's collection: the run starts no earlier than 24 h = 1 d after the collection, the
  product is administered no earlier than 48 h = 2 d after the run ends;
- 70 kg at 2 x 10^6 cells/kg, envelope below: target 1.4e8 cells, harvest 1.4e8 / 0.8 =
  1.75e8; K = 1e7/mL x 200 mL = 2e9, N0 = 1e7, r = ln 2 x 24 / 36 = 0.46210 /d;
  t = ln[1.75e8 (2e9 - 1e7) / (1e7 (2e9 - 1.75e8))] / r = ln 19.082 / 0.46210 = 6.381 d
  -> 7 whole days of expansion;
- 70 kg at 3 x 10^6 cells/kg: harvest 2.1e8 / 0.8 = 2.625e8; ln-fold = ln[2.625e8 x 1.99e9 /
  (1e7 x 1.7375e9)] = ln 30.065 = 3.4034; t = 3.4034 / 0.46210 = 7.365 d -> 8 days.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from nearfab.bootstrap import product_families
from nearfab.cli.simulate import app
from nearfab.simulation import parse_scenario
from nearfab.simulation.logic.engine import Engine
from nearfab.simulation.logic.spec import ScenarioSpec

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenarios"
FAMILIES = product_families()

COLLECTION_LEAD = 1.0  # 24 h from collection to the run's start (the family's figure)
ADMINISTRATION_LEAD = 2.0  # 48 h from the run's end to administration (the family's figure)


def envelope(cv: float = 0.0, max_days: int = 10) -> dict[str, Any]:
    return {
        "dose_per_kg": {"min": 1.0e6, "max": 5.0e6},
        "body_weight_kg": {"min": 10, "max": 150},
        "max_total_cells": 5.0e8,
        "seed_cells": 1.0e7,
        "culture_volume_ml": 200,
        "max_density_cells_per_ml": 1.0e7,
        "doubling_time_h": 36,
        "doubling_time_cv": cv,
        "process_yield": 0.8,
        "expansion_days": {"min": 5, "max": max_days},
        "viability_min": 0.7,
        "cells_per_ml_max": 2.0e6,
        "bag_volume_ml": {"min": 10, "max": 100},
        "medium_ml_per_day": 100,
    }


def scenario(
    *,
    schedule: list[float],
    dose_per_kg: float = 2.0e6,
    cv: float = 0.0,
    max_days: int = 10,
    qc: float = 0.0,
    inbound_days: float | None = None,
    slots: int = 1,
    horizon: float = 60.0,
    **product: Any,
) -> ScenarioSpec:
    legs = []
    region: dict[str, Any] = {"name": "r", "site": "unit", "schedule": schedule}
    if inbound_days is not None:
        legs = [
            {"name": "in", "time": inbound_days, "cost_per_shipment": 300},
            {"name": "out", "time": 0.0, "cost_per_shipment": 400},
        ]
        region |= {"inbound": "in", "outbound": "out"}
    data = {
        "name": "one patient",
        "horizon_days": horizon,
        "replications": 1,
        "products": [
            {
                "name": "cells",
                "family": "cell_therapy",
                "pre_process": 1.0,  # the collection itself takes a day
                "qc": qc,
                **product,
                "design": {
                    "envelope": envelope(cv, max_days),
                    "prescriptions": [{"dose_per_kg": dose_per_kg, "body_weight_kg": 70}],
                },
            }
        ],
        "sites": [
            {
                "name": "unit",
                "slots": slots,
                "capital_per_day": 100.0,
                "fixed_per_day": 200.0,
                "labour_rate_per_hour": 50.0,
            }
        ],
        "legs": legs,
        "regions": [region],
    }
    return parse_scenario(data, families=FAMILIES).to_spec(FAMILIES)


def run(spec: ScenarioSpec, replication: int = 0) -> Engine:
    engine = Engine(spec, replication)
    engine.run()
    return engine


def test_the_family_model_reaches_the_spec() -> None:
    rx = scenario(schedule=[0.0]).products[0].design.prescriptions[0]  # type: ignore[union-attr]
    assert rx.machine_days == 7.0
    assert rx.to_start_days == COLLECTION_LEAD
    assert rx.to_administration_days == ADMINISTRATION_LEAD
    assert rx.failure_probability == 0.0  # CV 0: Td 36 h is within Td* (below)


def test_one_patient_the_administration_lead_binds() -> None:
    # collection 1 d (pre_process) + collection lead 1 d + expansion 7 d + administration
    # lead 2 d (QC 0, no legs: nothing else waits) = 11 d
    engine = run(scenario(schedule=[0.0]))
    assert engine.o_collected == [1.0 + COLLECTION_LEAD + 7.0 + ADMINISTRATION_LEAD]
    assert engine.o_collected == [11.0]
    assert engine.recollections == 0


def test_one_patient_qc_longer_than_the_administration_lead() -> None:
    # the lead times are the earliest: QC of 3 d after the run outlasts the 2-d lead
    # 1 + 1 + 7 + 3 = 12 d
    engine = run(scenario(schedule=[0.0], qc=3.0))
    assert engine.o_collected == [12.0]


def test_one_patient_a_long_inbound_leg_outlasts_the_collection_lead() -> None:
    # material shipped for 2.5 d: the run starts 2.5 d after the collection, not 1 d
    # 1 + 2.5 + 7 + 2 = 12.5 d
    engine = run(scenario(schedule=[0.0], inbound_days=2.5))
    assert engine.o_collected == [12.5]


def test_result_reports_mean_and_p90() -> None:
    # two patients 30 d apart, nothing shared: both 11 d
    spec = scenario(schedule=[0.0, 30.0])
    result = Engine(spec, 0).run()
    assert result.collection_to_administration == {
        "orders": 2.0,
        "mean": 11.0,
        "p90": 11.0,
        "recollections": 0.0,
    }


def test_a_scenario_without_a_collection_reports_none() -> None:
    spec = scenario(schedule=[0.0])
    product = spec.products[0]
    assert product.design is not None
    plain = ScenarioSpec(
        name="no design",
        horizon_days=30.0,
        products=(type(product)(name="cells", cycle=product.cycle),),
        sites=spec.sites,
        regions=spec.regions,
    )
    assert Engine(plain, 0).run().collection_to_administration == {}


def hand_failure_probability() -> float:
    """70 kg at 3 x 10^6/kg with at most 8 days and a CV of 0.25 (module docstring):
    Td* = 8 x 24 ln 2 / 3.4034 h; sigma = sqrt(ln(1 + 0.25^2)); P = 1 - Phi(ln(Td*/36)/sigma)."""
    fold = math.log(2.625e8 * (2e9 - 1e7) / (1e7 * (2e9 - 2.625e8)))
    critical_h = 8 * 24 * math.log(2) / fold
    sigma = math.sqrt(math.log(1 + 0.25**2))
    z = math.log(critical_h / 36) / sigma
    return 0.5 * (1 - math.erf(z / math.sqrt(2)))


def test_failure_means_a_new_collection_and_one_more_cycle() -> None:
    # every patient alone (40 d apart, 10 units): one cycle is the collection (1 d), the
    # collection lead (1 d), 8 days of expansion and QC (3 d, longer than the 2-d lead): 13 d.
    # A failed culture is found at the end of QC; a new collection starts then, so each
    # new collection adds exactly one cycle: 13 (k + 1) days for k new collections.
    patients = 1000
    spec = scenario(
        schedule=[40.0 * i for i in range(patients)],
        dose_per_kg=3.0e6,
        cv=0.25,
        max_days=8,
        qc=3.0,
        slots=10,
        horizon=40.0 * patients + 400.0,
    )
    rx = spec.products[0].design.prescriptions[0]  # type: ignore[union-attr]
    assert rx.machine_days == 8.0
    p = hand_failure_probability()
    assert math.isclose(p, 0.3686, abs_tol=5e-4)
    assert rx.failure_probability is not None
    assert math.isclose(rx.failure_probability, p, rel_tol=1e-9)
    engine = run(spec)
    cycle = 1.0 + COLLECTION_LEAD + 8.0 + 3.0
    assert len(engine.o_collected) == patients
    cycles = [v / cycle for v in engine.o_collected]
    assert all(math.isclose(c, round(c), abs_tol=1e-9) for c in cycles)
    extra = sum(round(c) - 1 for c in cycles)
    assert extra == engine.recollections == engine.waste["failed_batch"]
    assert extra > 0
    # runs = patients + new collections; a run fails with the growth model's probability
    runs = patients + extra
    share = extra / runs
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / runs), (share, p)


def test_costs_add_up_per_patient_with_and_without_a_new_collection() -> None:
    # one patient over 60 days: capital 100 + fixed 200 a day = 18,000; per run labour
    # 2 h x 50 = 100, materials 1,000, QC 500, the inbound leg 300; the outbound leg 400 once
    spec = scenario(
        schedule=[0.0],
        dose_per_kg=3.0e6,
        cv=0.25,
        max_days=8,
        inbound_days=1.0,
        materials_per_batch=1000.0,
        qc_per_batch=500.0,
        labour_hours_per_batch=2.0,
    )
    seen = set()
    for replication in range(60):
        result = Engine(spec, replication).run()
        k = int(result.collection_to_administration["recollections"])
        if k > 1 or k in seen:
            continue
        seen.add(k)
        runs = 1 + k
        assert result.costs == {
            "capital": 100.0 * 60,
            "fixed": 200.0 * 60,
            "labour": 100.0 * runs,
            "materials": 1000.0 * runs,
            "qc": 500.0 * runs,
            "transport": 300.0 * runs + 400.0,
        }
        assert result.cost_per_dose["total"] == 18_000.0 + 1_900.0 * runs + 400.0
        # collection 1 + max(leg 1, lead 1) + 8 + lead 2 = 12; a new collection starts when
        # the failed run ends (QC 0): + 1 + 1 + 8 = 10
        assert result.collection_to_administration["mean"] == 12.0 + 10.0 * k
        if seen == {0, 1}:
            break
    assert seen == {0, 1}


def test_compare_prints_the_three_cell_therapy_networks() -> None:
    paths = [str(DOCS / f"cell-therapy-{k}.yaml") for k in ("centralised", "regional", "bedside")]
    result = CliRunner().invoke(
        app,
        ["compare", *paths, "--replications", "2", "--executor", "serial"],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    assert "Collection to administration and cost per patient" in result.output
    table = result.output.split("Collection to administration and cost per patient")[1]
    for name in ("cell-therapy-centralised", "cell-therapy-regional", "cell-therapy-bedside"):
        assert re.search(rf"{name}\s*│\s*\d+\.\d\d \[", table), name
