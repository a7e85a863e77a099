"""A product family that lives only in this test drives the simulator through the registry,
with no change to the core: its own prescription words, its machine time and failure model."""

from __future__ import annotations

from typing import Any

import pytest

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.designs import FamilyRegistry
from nearfab.simulation import ScenarioInvalid, parse_scenario, simulate
from nearfab.simulation.kit import SimulationKit
from nearfab.simulation.logic.engine import simulate_traced


class BagModel:
    """Infusion bags mixed to volume: a prescription says `litres`; the mixer runs
    `minutes_per_litre` (from the envelope) per litre; bags over 5 L fail half the time."""

    def design(self, envelope: Any, prescription: Any) -> dict[str, Any]:
        litres = prescription.get("litres")
        if isinstance(litres, bool) or not isinstance(litres, int | float) or litres <= 0:
            raise ValidationFailed(f"litres must be positive, not {litres!r}", field="litres")
        if litres > envelope["max_litres"]:
            most = envelope["max_litres"]
            raise Refused(f"{litres} L is over the validated {most} L", field="litres")
        return {"litres": float(litres), "minutes_per_litre": float(envelope["minutes_per_litre"])}

    def failure_probability(self, design: Any) -> float | None:
        return 0.5 if design["litres"] > 5 else None

    def prescription_of(self, order: Any) -> dict[str, Any] | None:
        return None


class BagFamily:
    name = "infusion_bag"
    machine_types = ("mixer",)
    prescription = machines = release = labels = None
    simulation = BagModel()

    def check_envelope(self, envelope: Any) -> None: ...

    def design(self, request: Any) -> Any:
        raise NotImplementedError

    def material_needed_g(self, design: Any) -> float:
        return design["litres"] * 1000.0

    def duration_s(self, design: Any) -> float:
        return design["litres"] * design["minutes_per_litre"] * 60.0


FAMILIES = FamilyRegistry()
FAMILIES.register(BagFamily())  # type: ignore[arg-type]
ENVELOPE = {"max_litres": 10, "minutes_per_litre": 36}


def scenario(mix: list[dict[str, Any]], family: str | None = "infusion_bag", **product: Any) -> Any:
    return {
        "name": "bags",
        "horizon_days": 40,
        "products": [
            {
                "name": "bag",
                **({"family": family} if family is not None else {}),
                "design": {"envelope": ENVELOPE, "prescriptions": mix},
                **product,
            }
        ],
        "sites": [{"name": "pharmacy"}],
        "regions": [
            {"name": "ward", "site": "pharmacy", "schedule": [float(d) for d in range(1, 31)]}
        ],
    }


def test_the_test_family_is_a_simulation_kit() -> None:
    assert isinstance(BagFamily.simulation, SimulationKit)


def test_the_family_times_each_batch_and_the_core_reads_none_of_its_words() -> None:
    data = scenario([{"litres": 2}, {"litres": 4, "weight": 3}])
    spec = parse_scenario(data, families=FAMILIES).to_spec(FAMILIES)
    design = spec.products[0].design
    assert design is not None
    # 2 L x 36 min/L = 72 min = 0.05 day; 4 L: 144 min = 0.1 day; material 1,000 g a litre
    assert [r.machine_days for r in design.prescriptions] == pytest.approx([0.05, 0.1])
    assert [r.material_g for r in design.prescriptions] == [2000.0, 4000.0]
    assert [r.says for r in design.prescriptions] == [{"litres": 2}, {"litres": 4}]
    assert [r.weight for r in design.prescriptions] == [1.0, 3.0]
    result, work = simulate_traced(spec, 0)
    assert result.delivered == 30  # one a day, each done well inside the day
    stretches = {round(end - start, 9) for _, start, end, _, _ in work}
    assert stretches == {0.05, 0.1}
    # arrivals a day apart and nothing else to wait for: lead time = machine time
    assert {round(x, 6) for x in result.lead_times} == {0.05, 0.1}


def test_the_family_failure_model_is_used_and_none_leaves_the_scenario_figure() -> None:
    big = parse_scenario(scenario([{"litres": 8}]), families=FAMILIES).to_spec(FAMILIES)
    r = simulate(big, 0)
    batches = r.delivered + r.waste["failed_batch"]
    assert r.waste["failed_batch"] > 0 and r.delivered == 30
    assert r.waste["failed_batch"] / batches == pytest.approx(0.5, abs=0.2)
    small = scenario([{"litres": 2}], batch_failure_probability=0.0)
    r = simulate(parse_scenario(small, families=FAMILIES).to_spec(FAMILIES), 0)
    assert r.waste["failed_batch"] == 0


def test_what_the_family_refuses_is_named_with_its_path() -> None:
    for bad, words in (({"litres": 12}, "over the validated 10 L"), ({"litre": 2}, "litres")):
        with pytest.raises(ScenarioInvalid) as err:
            parse_scenario(scenario([{"litres": 1}, bad]), families=FAMILIES)
        assert err.value.field == "products.0.design.prescriptions.1.litres"
        assert words in err.value.message


def test_an_unknown_family_is_named_at_the_products_family_field() -> None:
    with pytest.raises(ScenarioInvalid) as err:
        parse_scenario(scenario([{"litres": 1}], family="cell_factory"), families=FAMILIES)
    assert err.value.field == "products.0.family"
    assert "'cell_factory'" in err.value.message and "infusion_bag" in err.value.message
    with pytest.raises(ScenarioInvalid) as err:
        parse_scenario(scenario([{"litres": 1}], family=None), families=FAMILIES)
    assert err.value.field == "products.0.family" and "names the product family" in str(err.value)
    # no registry given: a design cannot be made, and the error says where and why
    with pytest.raises(ScenarioInvalid) as err:
        parse_scenario(scenario([{"litres": 1}]))
    assert err.value.field == "products.0.family" and "no product families" in err.value.message
    data = parse_scenario(scenario([{"litres": 1}]), families=FAMILIES)
    with pytest.raises(ScenarioInvalid) as err:
        data.to_spec()
    assert err.value.field == "products.0.family"


def test_a_product_without_a_design_needs_no_family() -> None:
    data = scenario([{"litres": 1}], family="not_registered", cycle=0.05)
    del data["products"][0]["design"]
    spec = parse_scenario(data).to_spec()
    assert spec.products[0].design is None and spec.products[0].family == "not_registered"
    assert simulate(spec, 0).delivered == 30
