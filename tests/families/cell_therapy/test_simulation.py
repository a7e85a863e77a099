"""cell_therapy's simulation part (simulation.kit.SimulationKit): the network simulator's model
of an expansion run, from the family's own prescription words (dose per kg, body weight), timed
by the family's `duration_s` (the expected days of expansion) and failing with the growth
model's probability. Expected values are hand calculations written beside each case."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.families.cell_therapy.test_design import ENVELOPE  # the hand-calculated design

from nearfab.common.clock import ManualClock
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.designs import FamilyRegistry
from nearfab.families.cell_therapy.family import CellTherapyFamily
from nearfab.families.cell_therapy.logic.growth import growth_failure_probability
from nearfab.families.cell_therapy.machines import CellTherapyMachines, SimulatedCellMicroFactory
from nearfab.orders import Order
from nearfab.production import TicketSigner
from nearfab.simulation import ScenarioInvalid, parse_scenario, simulate
from nearfab.simulation.kit import SimulationKit
from nearfab.simulation.logic.machine_models import modelled_prescription

FAMILY = CellTherapyFamily()
MODEL = FAMILY.simulation
SHORT = {**ENVELOPE, "expansion_days": {"min": 5, "max": 8}}
FAMILIES = FamilyRegistry()
FAMILIES.register(FAMILY)  # in this test only: bootstrap registers the family


def test_the_part_is_a_simulation_kit() -> None:
    assert isinstance(MODEL, SimulationKit)


def test_a_prescription_becomes_the_platform_s_design_machine_time_and_medium() -> None:
    says = {"dose_per_kg": 2.0e6, "body_weight_kg": 70}
    rx = modelled_prescription(FAMILY, ENVELOPE, says)
    # 2e6 × 70 = 1.4e8 cells, 1.75e8 to grow: 6.38 days of growth → 7 days on the machine;
    # medium 200 + 100 × 7 = 900 mL = 900 g
    assert rx.machine_days == 7.0
    assert rx.material_g == 900.0
    assert rx.design["target_cells"] == 1.4e8
    # the design is the one order intake makes for the same dose and weight
    request_design = FAMILY.design(_request(1.4e8, 70.0))[0]
    assert rx.design == request_design
    # failure: ln-fold = ln[1.75e8 × 1.99e9 / (1e7 × 1.825e9)] = 2.9487555; the run fails
    # when Td > 12 × 24 × ln 2 / 2.9487555 = 67.69852 h; sigma = sqrt(ln(1 + 0.25^2))
    # = 0.2462207; z = ln(67.69852 / 36) / 0.2462207 = 2.5649568; P = 1 - Phi(z) = 0.0051594
    assert rx.failure_probability == pytest.approx(0.0051594, abs=1e-7)


def _request(cells: float, kg: float) -> Any:
    from datetime import date

    from nearfab.masterfiles import MasterFile
    from nearfab.orders import DesignRequest

    return DesignRequest(
        master_file=MasterFile(design_envelope=ENVELOPE),
        dose=Quantity(cells, "{cells}"),
        units=1,
        birth_date=None,
        on=date(2026, 1, 5),
        weight=Quantity(kg, "kg"),
    )


def test_the_growth_failure_probability_by_hand() -> None:
    # 3e6 × 70 with at most 8 days: harvest 2.625e8, ln-fold = ln(30.0647482) = 3.4033533;
    # Td* = 8 × 24 × ln 2 / 3.4033533 = 39.10386 h; z = ln(39.10386 / 36) / 0.2462207
    # = 0.3358869; P = 1 - Phi(0.3358869) = 0.3684781
    design = MODEL.design(SHORT, {"dose_per_kg": 3.0e6, "body_weight_kg": 70})
    assert MODEL.failure_probability(design) == pytest.approx(0.3684781, abs=1e-6)
    # no donor variation: a run either always or never makes it
    assert (
        growth_failure_probability(
            n0=1e7, capacity=2e9, cells=2.625e8, doubling_time_h=36, cv=0, max_days=8
        )
        == 0.0
    )
    assert (
        growth_failure_probability(
            n0=1e7, capacity=2e9, cells=2.625e8, doubling_time_h=40, cv=0, max_days=8
        )
        == 1.0
    )


def test_the_twin_fails_as_often_as_the_model_says() -> None:
    # the twin draws each run's doubling time from the same log-normal: 400 runs of the design
    # above should fall short of the harvest target about 36.8 % of the time (binomial
    # standard error sqrt(0.368 × 0.632 / 400) = 0.024; allowed 3.5 of them)
    design = MODEL.design(SHORT, {"dose_per_kg": 3.0e6, "body_weight_kg": 70})
    signer = TicketSigner(Ed25519PrivateKey.from_private_bytes(bytes.fromhex("44" * 32)))
    start = datetime(2026, 1, 5, tzinfo=UTC)
    factory = SimulatedCellMicroFactory(
        "mf-01",
        firmware="f",
        control_public_key_pem=signer.public_key_pem,
        clock=ManualClock(start),
        seed=2026,
        seconds_per_day=10,
        sample_every_s=10,  # one sample a day: the run is the same, only coarser telemetry
    )
    kit = CellTherapyMachines()
    runs, short = 400, 0
    for i in range(runs):
        payload = {
            "ticket_id": f"T-{i}",
            "machine_id": "mf-01",
            "expires_at": (start + timedelta(days=400)).isoformat(),
            "design": design,
        }
        result = factory.execute(signer.sign(payload))
        doc = kit.check_measurements(kit.measurement_document(result))
        missed = any("below the harvest target" in event for event in result.events)
        # a run that missed it ran the longest validated culture, 8 days
        assert not missed or doc["culture_days"] == 8
        short += missed
    assert short / runs == pytest.approx(0.3685, abs=3.5 * math.sqrt(0.368 * 0.632 / runs))


@pytest.mark.parametrize(
    ("says", "field", "error"),
    [
        ({"dose_per_kg": 2e6, "body_weight_kg": 70, "units": 2}, "units", ValidationFailed),
        ({"body_weight_kg": 70}, "dose_per_kg", ValidationFailed),
        ({"dose_per_kg": 2e6}, "body_weight_kg", ValidationFailed),
        ({"dose_per_kg": "2e6", "body_weight_kg": 70}, "dose_per_kg", ValidationFailed),
        ({"dose_per_kg": 9e6, "body_weight_kg": 70}, "dose_per_kg", Refused),
        ({"dose_per_kg": 2e6, "body_weight_kg": 200}, "body_weight_kg", Refused),
    ],
)
def test_what_the_model_refuses_is_named(
    says: dict[str, Any], field: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        MODEL.design(ENVELOPE, says)
    assert getattr(caught.value, "field", None) == field
    with pytest.raises(ValidationFailed) as bad:
        MODEL.design({**ENVELOPE, "seed_cells": -1}, {"dose_per_kg": 2e6, "body_weight_kg": 70})
    assert bad.value.field == "design_envelope.seed_cells"


def test_a_live_order_in_the_family_s_words() -> None:
    design = FAMILY.design(_request(1.4e8, 70.0))[0]
    order = Order(dose_value=1.4e8, dose_unit="{cells}", units=1, design=design)
    assert MODEL.prescription_of(order) == {"dose_per_kg": 2.0e6, "body_weight_kg": 70.0}
    assert MODEL.prescription_of(Order(dose_value=5.0, dose_unit="mg", units=1, design={})) is None
    stopped = Order(dose_value=1.4e8, dose_unit="{cells}", units=1, design=None)
    assert MODEL.prescription_of(stopped) is None


def scenario(mix: list[dict[str, Any]], envelope: dict[str, Any] = ENVELOPE) -> dict[str, Any]:
    return {
        "name": "micro-factory",
        "horizon_days": 400,
        "products": [
            {
                "name": "autologous T cells",
                "family": "cell_therapy",
                "design": {"envelope": envelope, "prescriptions": mix},
            }
        ],
        "sites": [{"name": "bedside unit", "slots": 1}],
        "regions": [
            {
                "name": "ward",
                "site": "bedside unit",
                "schedule": [float(d) for d in range(1, 361, 12)],
            }
        ],
    }


def test_the_simulator_runs_a_micro_factory_from_the_family_s_model() -> None:
    mix = [
        {"dose_per_kg": 2.0e6, "body_weight_kg": 70},
        {"dose_per_kg": 3.0e6, "body_weight_kg": 150, "weight": 1e-9},  # all but never drawn
    ]
    spec = parse_scenario(scenario(mix), families=FAMILIES).to_spec(FAMILIES)
    design = spec.products[0].design
    assert design is not None
    # 7 days for 70 kg at 2e6/kg; 10 days for 150 kg at 3e6/kg (4.5e8 cells: 9.42 days)
    assert [rx.machine_days for rx in design.prescriptions] == [7.0, 10.0]
    result = simulate(spec, 0)
    # an order every 12 days, one slot, 7 days a batch: no queue; a batch fails with
    # P = 0.0052, so nearly every lead time is the family's collection lead (24 h to the run's
    # start) + the machine's 7 days + its administration lead (48 h after the run's end):
    # 1 + 7 + 2 = 10 days (a failed one means a new collection and a new run)
    assert result.delivered == 30
    assert sorted({round(x, 6) for x in result.lead_times})[0] == 10.0


def test_a_prescription_the_family_refuses_is_named_with_its_path() -> None:
    mix = [
        {"dose_per_kg": 2.0e6, "body_weight_kg": 70},
        {"dose_per_kg": 9.0e6, "body_weight_kg": 70},
    ]
    with pytest.raises(ScenarioInvalid) as caught:
        parse_scenario(scenario(mix), families=FAMILIES)
    assert caught.value.field == "products.0.design.prescriptions.1.dose_per_kg"
    assert "9 × 10^6 viable cells/kg is outside the validated range" in caught.value.message
