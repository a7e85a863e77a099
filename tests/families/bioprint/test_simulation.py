"""bioprint's simulation part in the network simulator: a scenario's prescriptions in the
family's words ({dose_per_kg, body_weight_kg}) are designed as intake designs them, timed by
the family's `duration_s` and led by its collection (the donor's isolation to the print, the
print's end to the transplant). Expected values by hand from world.ENVELOPE."""

from __future__ import annotations

from typing import Any

import pytest
from tests.families.bioprint.world import ENVELOPE

from nearfab.designs import FamilyRegistry
from nearfab.families.bioprint import BioprintFamily
from nearfab.orders import Order
from nearfab.simulation import ScenarioInvalid, parse_scenario, simulate
from nearfab.simulation.logic.machine_models import modelled_prescription

FAMILY = BioprintFamily()
FAMILIES = FamilyRegistry()
FAMILIES.register(FAMILY)


def scenario(mix: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "islet unit",
        "horizon_days": 120,
        "products": [
            {
                "name": "islet micro-tissues",
                "family": "bioprint",
                "design": {"envelope": ENVELOPE, "prescriptions": mix},
            }
        ],
        "sites": [{"name": "transplant centre", "slots": 1}],
        "regions": [
            {
                "name": "region",
                "site": "transplant centre",
                "schedule": [float(d) for d in range(1, 101, 5)],
            }
        ],
    }


def test_a_prescription_is_modelled_as_intake_designs_it() -> None:
    rx = modelled_prescription(FAMILY, ENVELOPE, {"dose_per_kg": 6000, "body_weight_kg": 70})
    # 42 constructs × 90 s = 3,780 s = 0.04375 days; 0.742201 g of islet tissue
    assert rx.machine_days == pytest.approx(3780 / 86400)
    assert rx.material_g == pytest.approx(0.742201, abs=1e-6)
    assert rx.failure_probability is None


def test_the_simulator_leads_each_transplant_by_the_isolation_and_the_release() -> None:
    spec = parse_scenario(
        scenario([{"dose_per_kg": 6000, "body_weight_kg": 70}]), families=FAMILIES
    )
    result = simulate(spec.to_spec(FAMILIES), 0)
    assert result.delivered == 20
    # isolation to print 24 h + print 3,780 s + release and transport 5 h
    # = 1 + 0.04375 + 0.2083333 = 1.2520833 days, with no queue (one order every 5 days)
    assert min(result.lead_times) == pytest.approx(1 + 3780 / 86400 + 5 / 24, abs=1e-6)


def test_a_prescription_below_the_envelope_is_named_with_its_path() -> None:
    with pytest.raises(ScenarioInvalid) as caught:
        parse_scenario(scenario([{"dose_per_kg": 4000, "body_weight_kg": 70}]), families=FAMILIES)
    assert caught.value.field == "products.0.design.prescriptions.0.dose_per_kg"


def test_a_live_order_in_the_familys_words() -> None:
    design = FAMILY.simulation.design(ENVELOPE, {"dose_per_kg": 6000, "body_weight_kg": 70})
    order = Order(dose_value=420_000, dose_unit="{IEQ}", units=1, design=design)
    assert FAMILY.simulation.prescription_of(order) == {
        "dose_per_kg": 6000.0,
        "body_weight_kg": 70.0,
    }
    assert FAMILY.simulation.prescription_of(Order(dose_value=1, dose_unit="mg", design={})) is None
