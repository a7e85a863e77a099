"""The simulator times batches with the platform's own product-family machine model."""

from __future__ import annotations

import statistics
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nearfab.bootstrap import product_families
from nearfab.common.quantity import Quantity
from nearfab.demo import hydrocortisone_master_file, propranolol_master_file
from nearfab.designs import FamilyRegistry
from nearfab.families.solid_dose import SolidDoseFamily
from nearfab.orders import DesignRequest
from nearfab.simulation import ScenarioInvalid, load_scenario, parse_scenario, simulate
from nearfab.simulation.logic.engine import simulate_traced
from nearfab.simulation.logic.machine_models import modelled_design
from nearfab.simulation.logic.spec import (
    Dist,
    Product,
    Region,
    ScenarioSpec,
    Site,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenarios"
HC_ENVELOPE: dict[str, Any] = hydrocortisone_master_file([])["design_envelope"]
PROP_ENVELOPE: dict[str, Any] = propranolol_master_file([])["design_envelope"]
TODAY = date(2026, 11, 26)
CHILD_BORN = date(2018, 5, 1)  # 8 years old: "child"
DAY_S = 86_400.0
FAMILIES = product_families()  # the platform's registry, as bootstrap builds it


def rx(dose_mg: float, units: int, group: str | None = "child", weight: float = 1.0) -> Any:
    """One prescription of a solid_dose mix, in the family's words."""
    says: dict[str, Any] = {"dose_mg": dose_mg, "units": units, "weight": weight}
    if group is not None:
        says["patient_group"] = group
    return says


def platform_days(envelope: dict[str, Any], dose_mg: float, units: int) -> float:
    """Machine time of one order as the platform computes it: the family designs the order
    from the prescription (as order intake does) and the scheduler plans `duration_s`."""
    family = SolidDoseFamily()
    request = DesignRequest(
        master_file=SimpleNamespace(design_envelope=envelope),  # type: ignore[arg-type]
        dose=Quantity(dose_mg, "mg"),
        units=units,
        birth_date=CHILD_BORN,
        on=TODAY,
    )
    design, group = family.design(request)
    assert group == "child"
    return family.duration_s(design) / DAY_S


def one_site(
    prescriptions: tuple[dict[str, Any], ...],
    *,
    envelope: dict[str, Any] = HC_ENVELOPE,
    cycle: Dist = Dist(),
    schedule: tuple[float, ...] = (),
    rate: float = 0.0,
    days: float = 200.0,
    family: str = "solid_dose",
    failure: float = 0.0,
    families: FamilyRegistry = FAMILIES,
) -> ScenarioSpec:
    product = Product(
        "printlet",
        family=family,
        cycle=cycle,
        design=modelled_design(families.get(family), envelope, prescriptions),
        batch_failure_probability=failure,
    )
    return ScenarioSpec(
        name="family",
        horizon_days=days,
        products=(product,),
        sites=(Site("pharmacy", slots=1),),
        regions=(Region("ward", "pharmacy", rate_per_day=rate, schedule=schedule),),
        seed=11,
    )


def test_each_batch_takes_the_machine_time_the_platform_computes_for_its_design() -> None:
    mix = (rx(0.5, 15), rx(2.0, 21), rx(5.0, 42, weight=2.0))
    result, work = simulate_traced(one_site(mix, rate=1.0), 0)
    assert result.delivered > 150
    expected = [platform_days(HC_ENVELOPE, r["dose_mg"], r["units"]) for r in mix]
    assert expected[2] == pytest.approx(42 * 60 / DAY_S)  # 60 s a tablet, the platform's figure
    seen = {k: 0 for k in range(len(mix))}
    for _, start, end, _, k in work:
        assert end - start == pytest.approx(expected[k], rel=1e-12)
        seen[k] += 1
    # the mix is drawn by weight: 1 : 1 : 2
    n = sum(seen.values())
    assert seen[2] / n == pytest.approx(0.5, abs=0.08)
    assert min(seen.values()) > 0


def test_a_longer_course_takes_longer_and_the_lead_time_follows_the_family_model() -> None:
    """Fixed arrivals far apart and no other delay: the lead time is the machine time."""
    arrivals = tuple(float(d) for d in range(1, 40))
    lead = {}
    for dose, units in ((2.0, 15), (2.0, 42), (5.0, 42), (8.0, 200)):
        r = simulate(one_site((rx(dose, units),), schedule=arrivals), 0)
        assert r.delivered == len(arrivals)
        machine = platform_days(HC_ENVELOPE, dose, units)
        assert all(x == pytest.approx(machine, abs=1e-6) for x in r.lead_times)  # 6 decimals
        assert r.lead_time_mean == pytest.approx(machine, rel=1e-9)
        lead[(dose, units)] = r.lead_time_mean
    assert lead[(2.0, 15)] < lead[(2.0, 42)] < lead[(8.0, 200)]
    # the platform's print time depends on the number of tablets, not on the dose in each
    assert lead[(5.0, 42)] == pytest.approx(lead[(2.0, 42)])
    assert lead[(2.0, 42)] - lead[(2.0, 15)] == pytest.approx(27 * 60 / DAY_S)


def test_a_cycle_given_in_the_scenario_is_added_to_the_family_time() -> None:
    _, work = simulate_traced(one_site((rx(2.0, 30),), cycle=Dist("fixed", 0.01), rate=0.5), 0)
    assert work
    family = platform_days(HC_ENVELOPE, 2.0, 30)
    assert {round(end - start, 12) for _, start, end, _, _ in work} == {round(family + 0.01, 12)}


def test_longer_courses_load_the_printer_as_queueing_theory_says() -> None:
    """M/D/1 with the family's service time: utilisation is lambda x D, and the mean time in
    system follows Pollaczek-Khinchine."""
    from nearfab.simulation.logic import queueing as q

    units = 200
    d = platform_days(PROP_ENVELOPE, 10.0, units)  # 200 tablets: 1/7.2 day
    lam = 4.0
    runs = [
        simulate(
            one_site((rx(10.0, units),), envelope=PROP_ENVELOPE, rate=lam, days=2000),
            r,
        )
        for r in range(3)
    ]
    assert statistics.mean(r.utilisation["pharmacy"] for r in runs) == pytest.approx(
        lam * d, rel=0.03
    )
    assert statistics.mean(r.lead_time_mean for r in runs) == pytest.approx(
        q.md1_sojourn(lam, d), rel=0.05
    )


class _FailingModel:
    """solid_dose's simulator model plus a failure model: long courses fail more often."""

    def __init__(self) -> None:
        self._inner = SolidDoseFamily().simulation

    def design(self, envelope: Any, prescription: Any) -> dict[str, Any]:
        return self._inner.design(envelope, prescription)

    def failure_probability(self, design: Any) -> float:
        return 0.3 if design["units"] > 20 else 0.0

    def prescription_of(self, order: Any) -> dict[str, Any] | None:
        return self._inner.prescription_of(order)


def test_a_family_failure_model_replaces_the_scenario_figure() -> None:
    family = SolidDoseFamily()
    family.simulation = _FailingModel()  # type: ignore[assignment]
    failing = FamilyRegistry()
    failing.register(family)
    short = simulate(one_site((rx(2.0, 15),), rate=1.0, failure=0.5, families=failing), 0)
    assert short.waste["failed_batch"] == 0  # the family says 0, the scenario's 0.5 is unused
    long = simulate(one_site((rx(2.0, 42),), rate=1.0, failure=0.0, families=failing), 0)
    batches = long.delivered + long.waste["failed_batch"]
    assert long.waste["failed_batch"] / batches == pytest.approx(0.3, abs=0.06)
    # the platform's own solid_dose has no failure model: the scenario's figure is used
    plain = simulate(one_site((rx(2.0, 42),), rate=1.0, failure=0.5), 0)
    assert plain.waste["failed_batch"] / (plain.delivered + plain.waste["failed_batch"]) > 0.4


def scenario(design: dict[str, Any], family: str = "solid_dose") -> dict[str, Any]:
    return {
        "name": "x",
        "horizon_days": 10,
        "products": [{"name": "p", "family": family, "design": design}],
        "sites": [{"name": "s"}],
        "regions": [{"name": "r", "site": "s", "rate_per_day": 1}],
    }


def test_a_prescription_the_family_refuses_is_named_with_its_path() -> None:
    ok = {"dose_mg": 2.0, "units": 21, "patient_group": "child"}
    parsed = parse_scenario(
        scenario({"envelope": HC_ENVELOPE, "prescriptions": [ok]}), families=FAMILIES
    )
    spec = parsed.to_spec(FAMILIES)
    assert spec.products[0].design is not None
    cases = [
        ({"dose_mg": 50.0, "units": 21, "patient_group": "child"}, "1.dose_mg", "0.5–10 mg"),
        ({"dose_mg": 2.0, "units": 500, "patient_group": "child"}, "1.units", "1–200 units"),
        ({"dose_mg": 2.0, "units": 21, "patient_group": "neonate"}, "1.patient_group", "neonate"),
        ({"dose_mg": 2.0, "units": 21}, "1.patient_group", "patient group unknown"),
        ({"dose_mg": -1.0, "units": 21, "patient_group": "child"}, "1.dose_mg", "0.5–10 mg"),
        ({"dose_mg": "two", "units": 21, "patient_group": "child"}, "1.dose_mg", "a number"),
        ({"units": 21, "patient_group": "child"}, "1.dose_mg", "needs dose_mg"),
        ({"dose_mg": 2.0, "units": 2.5, "patient_group": "child"}, "1.units", "an integer"),
        ({"dose_mg": 2.0, "units": 21, "patient_group": 3}, "1.patient_group", "a word"),
        ({"dose_mg": 2.0, "units": 21, "dose": 2.0}, "1.dose", "not 'dose'"),
        ({"dose_mg": 2.0, "weight": 0}, "1.weight", "greater than 0"),
    ]
    for bad, path, words in cases:
        with pytest.raises(ScenarioInvalid) as err:
            parse_scenario(
                scenario({"envelope": HC_ENVELOPE, "prescriptions": [ok, bad]}), families=FAMILIES
            )
        assert err.value.field == f"products.0.design.prescriptions.{path}"
        assert words in err.value.message
    broken = {**HC_ENVELOPE, "drug_loading": 2}
    with pytest.raises(ScenarioInvalid) as err:
        parse_scenario(scenario({"envelope": broken, "prescriptions": [ok]}), families=FAMILIES)
    assert err.value.field == "products.0.design.envelope.drug_loading"


def test_the_demo_scenarios_use_the_family_model() -> None:
    for name in ("centralised", "hub-and-spoke", "redistributed"):
        spec = load_scenario(DOCS / f"{name}.yaml", FAMILIES).to_spec(FAMILIES)
        for product in spec.products:
            assert product.design is not None and product.cycle.is_zero, (name, product.name)
            mix = product.design.prescriptions
            assert all(r.says["patient_group"] == "child" for r in mix)
            assert all(r.design["patient_group"] == "child" for r in mix)
