"""Engine behaviour: reproducibility, waste, disruptions, costs, scenario errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from nearfab.bootstrap import product_families
from nearfab.simulation import ScenarioInvalid, load_scenario, parse_scenario, simulate
from nearfab.simulation.logic.spec import (
    Disruption,
    Dist,
    Leg,
    Product,
    Region,
    ScenarioSpec,
    Site,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenarios"
FAMILIES = product_families()


def small(**kw: object) -> ScenarioSpec:
    base: dict[str, object] = dict(
        name="small",
        horizon_days=400.0,
        warmup_days=20.0,
        products=(Product("p", target_lead_time_days=3.0, cycle=Dist("exponential", 0.5)),),
        sites=(Site("s", slots=1),),
        regions=(Region("r", "s", rate_per_day=1.0),),
        seed=7,
    )
    base.update(kw)
    return ScenarioSpec(**base)  # type: ignore[arg-type]


def test_same_seed_same_result_and_another_seed_differs() -> None:
    spec = load_scenario(DOCS / "redistributed.yaml", FAMILIES).to_spec(FAMILIES)
    a, b = simulate(spec, 3), simulate(spec, 3)
    assert a == b
    assert simulate(spec, 4).lead_times != a.lead_times


def test_failed_batches_are_wasted_and_remade() -> None:
    spec = small(products=(Product("p", cycle=Dist("fixed", 0.1), batch_failure_probability=0.2),))
    r = simulate(spec, 0)
    batches = r.delivered + r.waste["failed_batch"]
    # every failure is remade: failures / batches ~ 0.2 (binomial, n ~ 380)
    assert r.waste["failed_batch"] / batches == pytest.approx(0.2, abs=0.06)
    assert r.open_orders <= 2


def test_a_dose_older_than_its_shelf_life_on_arrival_is_wasted() -> None:
    spec = small(
        products=(Product("p", cycle=Dist("fixed", 0.1), shelf_life_days=1.0),),
        legs=(Leg("slow", time=Dist("fixed", 2.0)),),
        regions=(Region("r", "s", rate_per_day=0.05, outbound="slow"),),
        horizon_days=100.0,
    )
    r = simulate(spec, 0)
    assert r.delivered == 0 and r.waste["expired"] > 0


def test_outage_delays_patients_and_a_backup_site_absorbs_it() -> None:
    outage = (Disruption("site_outage", "s", start=100, duration=10, name="outage"),)
    alone = simulate(small(disruptions=outage), 0)
    d = alone.disruptions[0]
    assert d.late_orders > 5 and d.backlog_at_end >= 5
    assert d.time_to_recover_days is not None and d.time_to_recover_days > 0
    backed = simulate(
        small(disruptions=outage, sites=(Site("s", slots=1, backup="b"), Site("b", slots=1))), 0
    )
    assert backed.disruptions[0].late_orders < d.late_orders
    assert backed.utilisation["b"] > 0


def test_recall_remakes_recent_doses_for_their_patients() -> None:
    spec = small(
        disruptions=(Disruption("recall", "s", start=200, lookback_days=10, name="recall"),)
    )
    r = simulate(spec, 0)
    d = r.disruptions[0]
    assert d.affected_orders == r.waste["recalled"] > 0
    assert d.time_to_recover_days is not None


def test_costs_per_dose_add_up() -> None:
    spec = small(
        products=(
            Product(
                "p",
                cycle=Dist("fixed", 0.1),
                materials_per_batch=10.0,
                qc_per_batch=5.0,
                labour_hours_per_batch=2.0,
            ),
        ),
        sites=(Site("s", capital_per_day=3.0, fixed_per_day=7.0, labour_rate_per_hour=20.0),),
        legs=(Leg("c", time=Dist("fixed", 0.5), cost_per_shipment=4.0),),
        regions=(Region("r", "s", rate_per_day=1.0, outbound="c"),),
        warmup_days=0.0,
        horizon_days=50.0,
    )
    r = simulate(spec, 0)
    c = r.cost_per_dose
    assert c["capital"] * r.delivered == pytest.approx(3.0 * 50)
    assert c["fixed"] * r.delivered == pytest.approx(7.0 * 50)
    # per batch 10 materials + 40 labour (2 h x 20) + 5 QC; 4 per shipment; no failures, so
    # batches = shipments = delivered + those still on the way at the horizon
    batches = r.costs["materials"] / 10.0
    assert batches == int(batches) and r.delivered <= batches <= r.delivered + r.open_orders
    assert r.costs["labour"] == pytest.approx(40.0 * batches)
    assert r.costs["transport"] / 4.0 == pytest.approx(batches, abs=1)
    assert c["total"] == pytest.approx(sum(v for k, v in c.items() if k != "total"))


def test_a_wrong_field_is_named_with_its_path() -> None:
    data = {
        "name": "x",
        "horizon_days": 10,
        "products": [{"name": "p"}],
        "sites": [{"name": "s", "slots": 0}],
        "regions": [{"name": "r", "site": "s"}],
    }
    with pytest.raises(ScenarioInvalid) as err:
        parse_scenario(data)
    assert err.value.field == "sites.0.slots"
    assert "greater than or equal to 1" in err.value.message
    data["sites"] = [{"name": "s", "slotz": 2}]
    with pytest.raises(ScenarioInvalid) as err:
        parse_scenario(data)
    assert err.value.field == "sites.0.slotz" and "Extra inputs" in err.value.message
    data["sites"] = [{"name": "s"}]
    data["regions"] = [{"name": "r", "site": "nowhere"}]
    with pytest.raises(ScenarioInvalid, match="unknown site 'nowhere'"):
        parse_scenario(data)
    data["regions"] = [{"name": "r", "site": "s"}]
    data["products"] = [{"name": "p", "cycle": {"kind": "lognormal", "mean": 1}}]
    with pytest.raises(ScenarioInvalid) as err:
        parse_scenario(data)
    assert err.value.field == "products.0.cycle" and "positive sd" in err.value.message


def test_every_example_scenario_loads() -> None:
    for path in DOCS.glob("*.yaml"):
        assert load_scenario(path, FAMILIES).to_spec(FAMILIES).sites
