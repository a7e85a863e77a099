"""Material stock at the sites: reorder lead time and shelf life, with answers worked by hand."""

from __future__ import annotations

import pytest

from nearfab.simulation import parse_scenario, simulate
from nearfab.simulation.errors import ScenarioInvalid
from nearfab.simulation.logic.spec import (
    Dist,
    Material,
    Product,
    Region,
    ScenarioSpec,
    Site,
)


def spec(material: Material, arrivals: tuple[float, ...], horizon: float = 40) -> ScenarioSpec:
    product = Product("p", target_lead_time_days=1e9, cycle=Dist("fixed", 0.1), material="ink")
    return ScenarioSpec(
        name="stock",
        horizon_days=horizon,
        products=(product,),
        sites=(Site("site", slots=10),),  # slots never the bottleneck here
        regions=(Region("region", "site", rate_per_day=0.0, schedule=arrivals),),
        materials=(material,),
        seed=1,
    )


def test_an_empty_site_waits_for_the_reorder_lead_time() -> None:
    """No stock, reorder point 0, lead time 5 d: the first batch waits 5 d; the lot of 10 then
    serves the next nine batches without waiting."""
    ink = Material(
        "ink", lead_time=Dist("fixed", 5.0), order_quantity=10, reorder_point=0, initial=0
    )
    result = simulate(spec(ink, tuple(float(d) for d in range(10))), 0)
    # order k arrives on day k; all ten are made from the one lot that lands on day 5
    expected = [5.0 - k + 0.1 if k < 5 else 0.1 for k in range(10)]
    assert result.lead_time_mean == pytest.approx(sum(expected) / 10)
    assert result.waste["expired_material"] == 0


def test_lots_past_their_shelf_life_are_wasted_and_reordered() -> None:
    """10 units that keep 3 days, one batch a day: days 0-2 use three, the other seven expire at
    day 3 and are wasted; the reorder (lead 1 d) serves day 3's batch one day late."""
    ink = Material(
        "ink",
        lead_time=Dist("fixed", 1.0),
        order_quantity=10,
        reorder_point=0,
        initial=10,
        shelf_life_days=3.0,
    )
    result = simulate(spec(ink, (0.0, 1.0, 2.0, 3.0)), 0)
    assert result.waste["expired_material"] == 7
    assert result.lead_time_mean == pytest.approx((0.1 * 3 + 1.1) / 4)


def test_a_product_naming_an_unknown_material_is_refused() -> None:
    base = {
        "name": "x",
        "horizon_days": 10,
        "products": [{"name": "p", "material": "ink"}],
        "sites": [{"name": "s"}],
        "regions": [{"name": "r", "site": "s", "rate_per_day": 1}],
    }
    with pytest.raises(ScenarioInvalid, match="unknown material 'ink'"):
        parse_scenario(base)
    ok = parse_scenario({**base, "materials": [{"name": "ink", "lead_time": 2}]}).to_spec()
    assert ok.materials[0].lead_time.mean == 2.0 and ok.products[0].material == "ink"
