"""cell_therapy's design (family.design, logic/design.py) and its growth model (logic/growth.py):
the product made from the dose inside the master file's validated envelope, the expected days of
expansion from logistic growth, the bags, the medium, the machine time; refusals name the field.

Every expected value is worked by hand below (closed-form logistic growth:
N(t) = K / (1 + (K/N0 - 1) e^(-rt)), r = ln 2 / Td; time to N: ln[N (K - N0) / (N0 (K - N))] / r).
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import pytest
from tests.conftest import TEST_PASSWORD
from tests.orders.test_order_services import actor, bundle, request_of, submit

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.demo import HYDROCORTISONE
from nearfab.families.cell_therapy.family import CellTherapyFamily
from nearfab.families.cell_therapy.logic.design import Envelope, OutsideEnvelope, design_product
from nearfab.families.cell_therapy.logic.growth import (
    days_to_reach,
    growth_rate_per_day,
    logistic_cells,
    step,
)
from nearfab.masterfiles import MasterFile
from nearfab.orders import DesignRequest

ENVELOPE: dict[str, Any] = {
    "dose_per_kg": {"min": 1.0e6, "max": 5.0e6},
    "body_weight_kg": {"min": 10, "max": 150},
    "max_total_cells": 5.0e8,
    "seed_cells": 1.0e7,
    "culture_volume_ml": 200,
    "max_density_cells_per_ml": 1.0e7,  # K = 1e7 × 200 = 2e9 cells
    "doubling_time_h": 36,  # r = ln 2 × 24 / 36 = 0.4620981 per day
    "doubling_time_cv": 0.25,
    "process_yield": 0.8,
    "expansion_days": {"min": 5, "max": 12},
    "viability_min": 0.7,
    "cells_per_ml_max": 2.0e6,
    "bag_volume_ml": {"min": 10, "max": 100},
    "medium_ml_per_day": 100,
}
R = math.log(2) * 24 / 36
K = 2.0e9
FAMILY = CellTherapyFamily()


def design(envelope: dict[str, Any] | None = None, **kwargs: float) -> dict[str, Any]:
    return design_product(envelope=Envelope.from_dict(envelope or ENVELOPE), **kwargs).to_dict()


def request(cells: float, weight: Quantity | None, *, units: int = 1) -> DesignRequest:
    return DesignRequest(
        master_file=MasterFile(design_envelope=ENVELOPE),
        dose=Quantity(cells, "{cells}"),
        units=units,
        birth_date=date(1980, 2, 14),
        on=date(2026, 1, 5),
        weight=weight,
    )


# -- the growth model ------------------------------------------------------------------------


def test_the_growth_rate_of_a_doubling_time() -> None:
    # r = ln 2 / Td: 24 h → 0.6931472 per day; 36 h → 0.4620981; 48 h → 0.3465736
    assert growth_rate_per_day(24) == pytest.approx(0.6931472, rel=1e-7)
    assert growth_rate_per_day(36) == pytest.approx(0.4620981, rel=1e-7)
    assert growth_rate_per_day(48) == pytest.approx(0.3465736, rel=1e-7)


def test_logistic_growth_against_the_closed_form() -> None:
    # far below K the culture doubles every Td: 1e7 cells, K = 1e15, 3 days at 24 h → 8e7
    assert logistic_cells(1e7, 1e15, math.log(2), 3) == pytest.approx(8e7, rel=1e-6)
    # 1e7 seeded, K = 2e9, Td 36 h, 7 days: e^(-7r) = e^(-3.2346868) = 0.0393725;
    # K/N0 - 1 = 199; N = 2e9 / (1 + 199 × 0.0393725) = 2e9 / 8.8351340 = 2.26369 × 10^8
    assert logistic_cells(1e7, K, R, 7) == pytest.approx(2.26369e8, rel=1e-5)
    # the time to 1.75e8: ln[1.75e8 × 1.99e9 / (1e7 × 1.825e9)] / r = ln(19.0821918) / r
    # = 2.9487555 / 0.4620981 = 6.38123 days
    assert days_to_reach(1e7, K, R, 1.75e8) == pytest.approx(6.38123, rel=1e-5)
    # and the culture holds that count after that time (the two formulas agree)
    assert logistic_cells(1e7, K, R, days_to_reach(1e7, K, R, 1.75e8)) == pytest.approx(1.75e8)
    with pytest.raises(ValueError):
        days_to_reach(1e7, K, R, K)  # the vessel cannot hold K


def test_stepping_a_healthy_culture_is_the_closed_form() -> None:
    # 42 steps of 4 h with no extra death end where the closed form says after 7 days, and
    # the integral of N is (K/r) ln(1 + N0 (e^(rt) - 1) / K)
    n, area = 1e7, 0.0
    for _ in range(42):
        n, part = step(n, R, 0.0, K, 1 / 6)
        area += part
    assert n == pytest.approx(logistic_cells(1e7, K, R, 7), rel=1e-12)
    assert area == pytest.approx(K / R * math.log(1 + 1e7 * math.expm1(7 * R) / K), rel=1e-12)
    # with death d, dN/dt = (g - d) N - (g/K) N^2 is logistic with rate g - d and capacity
    # K (1 - d/g): g = 1, d = 0.5 from 1e6, K = 1e9 → K' = 5e8, rate 0.5, after 10 days
    # N = 5e8 / (1 + (500 - 1) e^-5) = 5e8 / 4.3622356 = 1.146201 × 10^8
    assert step(1e6, 1.0, 0.5, 1e9, 10)[0] == pytest.approx(1.146201e8, rel=1e-6)
    # no growth, death 0.2 a day for 5 days: N0 e^-1
    assert step(1e6, 0.0, 0.2, 1e9, 5)[0] == pytest.approx(1e6 * math.exp(-1), rel=1e-12)


# -- the design --------------------------------------------------------------------------------


def test_the_design_of_2e6_cells_per_kg_for_70_kg() -> None:
    d = design(target_cells=2.0e6 * 70, body_weight_kg=70)
    # 2 × 10^6 cells/kg × 70 kg = 1.4 × 10^8 viable cells; / yield 0.8 = 1.75 × 10^8 to grow
    assert d["dose_per_kg"] == pytest.approx(2.0e6)
    assert (d["target_cells"], d["harvest_cells"]) == (1.4e8, pytest.approx(1.75e8))
    # 6.38123 days of growth (test above) → harvested on day 7
    assert d["growth_days"] == pytest.approx(6.3812, abs=1e-4)
    assert d["expansion_days"] == 7
    # 1.4e8 / 2e6 per mL = 70 mL: one bag of 70 mL (at most 100)
    assert (d["bags"], d["bag_volume_ml"], d["infusion_volume_ml"]) == (1, 70.0, 70.0)
    assert d["cells_per_ml"] == pytest.approx(2.0e6)
    # medium: 200 mL + 100 mL a day × 7 days = 900 mL
    assert d["medium_ml"] == 900.0
    assert FAMILY.material_needed_g(d) == 900.0
    assert FAMILY.duration_s(d) == 7 * 86_400
    # what the twin needs from the envelope travels with the design
    assert (d["seed_cells"], d["culture_volume_ml"], d["max_density_cells_per_ml"]) == (
        1.0e7,
        200.0,
        1.0e7,
    )
    assert (d["expansion_days_min"], d["expansion_days_max"], d["viability_min"]) == (5, 12, 0.7)


def test_a_large_dose_needs_more_days_and_bags() -> None:
    d = design(target_cells=3.0e6 * 150, body_weight_kg=150)
    # 4.5e8 cells (below the 5e8 maximum); harvest 5.625e8;
    # t = ln[5.625e8 × 1.99e9 / (1e7 × 1.4375e9)] / r = ln(77.8695652) / r = 4.3550 / 0.4621
    # = 9.4245 days → 10 days
    assert d["growth_days"] == pytest.approx(9.4245, abs=1e-4)
    assert d["expansion_days"] == 10
    # 4.5e8 / 2e6 = 225 mL: 3 bags of 75 mL
    assert (d["bags"], d["bag_volume_ml"], d["infusion_volume_ml"]) == (3, 75.0, 225.0)
    assert d["medium_ml"] == 200 + 100 * 10


def test_a_small_dose_is_cultured_the_shortest_validated_time_in_the_smallest_bag() -> None:
    d = design(target_cells=1.0e6 * 10, body_weight_kg=10)
    # 1e7 cells; harvest 1.25e7: ln[1.25e7 × 1.99e9 / (1e7 × 1.9875e9)] / r
    # = ln(1.2515723) / r = 0.2244 / 0.4621 = 0.4856 days, but the culture runs at least 5
    assert d["growth_days"] == pytest.approx(0.4856, abs=1e-4)
    assert d["expansion_days"] == 5
    # 1e7 / 2e6 = 5 mL, below the 10 mL bag: one bag of 10 mL at 1e6 cells/mL
    assert (d["bags"], d["bag_volume_ml"], d["cells_per_ml"]) == (1, 10.0, 1.0e6)


@pytest.mark.parametrize(
    ("per_kg", "weight", "field", "words"),
    [
        (
            2.0e6,
            160.0,
            "body_weight_kg",
            "body weight 160 kg is outside the validated range 10–150",
        ),
        (2.0e6, 8.0, "body_weight_kg", "body weight 8 kg is outside"),
        (6.0e6, 70.0, "dose_per_kg", "dose 6 × 10^6 viable cells/kg is outside"),
        (0.5e6, 70.0, "dose_per_kg", "dose 5 × 10^5 viable cells/kg is outside"),
        # 4e6 × 150 = 6e8 > 5e8
        (4.0e6, 150.0, "target_cells", "6 × 10^8 viable cells (4 × 10^6/kg × 150 kg) is above"),
    ],
)
def test_outside_the_envelope_is_refused_naming_the_field(
    per_kg: float, weight: float, field: str, words: str
) -> None:
    with pytest.raises(OutsideEnvelope) as caught:
        design(target_cells=per_kg * weight, body_weight_kg=weight)
    assert caught.value.field == field
    assert caught.value.code == "outside_envelope"
    assert words in caught.value.message


def test_a_culture_longer_than_validated_is_refused() -> None:
    short = {**ENVELOPE, "expansion_days": {"min": 5, "max": 8}}
    # 4e6 × 70 = 2.8e8, harvest 3.5e8: ln[3.5e8 × 1.99e9 / (1e7 × 1.65e9)] / r
    # = ln(42.2121212) / r = 3.7427 / 0.4621 = 8.0994 days → 9 > 8
    with pytest.raises(OutsideEnvelope) as caught:
        design(short, target_cells=4.0e6 * 70, body_weight_kg=70)
    assert caught.value.field == "expansion_days"
    assert "takes 8.1 days at a 36 h doubling time" in caught.value.message
    # 3e6 × 70: harvest 2.625e8, ln(30.0647482) / r = 3.4034 / 0.4621 = 7.365 → 8 days: made
    assert design(short, target_cells=3.0e6 * 70, body_weight_kg=70)["expansion_days"] == 8


def test_a_harvest_the_vessel_cannot_hold_is_refused() -> None:
    small = {**ENVELOPE, "max_density_cells_per_ml": 1.0e6}  # K = 2e8
    # 3e6 × 70 = 2.1e8 → harvest 2.625e8 >= 2e8
    with pytest.raises(OutsideEnvelope) as caught:
        design(small, target_cells=3.0e6 * 70, body_weight_kg=70)
    assert caught.value.field == "target_cells"
    assert "capacity" in caught.value.message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seed_cells": None}, "design_envelope.seed_cells"),
        ({"dose_per_kg": {"min": 5e6, "max": 1e6}}, "design_envelope.dose_per_kg"),
        ({"process_yield": 1.2}, "design_envelope.process_yield"),
        ({"viability_min": 0}, "design_envelope.viability_min"),
        ({"expansion_days": {"min": 5.5, "max": 12}}, "design_envelope.expansion_days.min"),
        ({"doubling_time_cv": -0.1}, "design_envelope.doubling_time_cv"),
        ({"seed_cells": 2.0e9}, "design_envelope.seed_cells"),  # = K: nothing to grow
        ({"doubling_time_hours": 36}, "design_envelope.doubling_time_hours"),  # misspelt
    ],
)
def test_a_bad_envelope_is_refused_naming_its_key(change: dict[str, Any], field: str) -> None:
    envelope = {**ENVELOPE, **change}
    if change.get("seed_cells", 0) is None:
        del envelope["seed_cells"]
    with pytest.raises(ValidationFailed) as caught:
        FAMILY.check_envelope(envelope)
    assert caught.value.field == field
    FAMILY.check_envelope(ENVELOPE)  # the good one passes
    assert Envelope.from_dict(Envelope.from_dict(ENVELOPE).to_dict()) == Envelope.from_dict(
        ENVELOPE
    )


# -- the family's design from the order's request ----------------------------------------------


def test_the_family_designs_from_the_accepted_dose_and_the_weight() -> None:
    design_, group = FAMILY.design(request(1.4e8, Quantity(70.0, "kg")))
    assert group is None
    assert design_ == design(target_cells=1.4e8, body_weight_kg=70)
    assert (design_["body_weight_kg"], design_["dose_per_kg"]) == (70.0, 2.0e6)


def test_the_family_refuses_a_request_it_cannot_design() -> None:
    cases = [
        (request(1.4e8, None), "body_weight_kg"),
        (request(1.4e8, Quantity(154.0, "[lb_av]")), "body_weight_kg"),
        (request(1.4e8, Quantity(70.0, "kg"), units=2), "units"),
        (request(1.4e8, Quantity(160.0, "kg")), "body_weight_kg"),
    ]
    for req, field in cases:
        with pytest.raises(Refused) as caught:
            FAMILY.design(req)
        assert caught.value.field == field
    mg = DesignRequest(
        master_file=MasterFile(design_envelope=ENVELOPE),
        dose=Quantity(5.0, "mg"),
        units=1,
        birth_date=None,
        on=date(2026, 1, 5),
        weight=Quantity(70.0, "kg"),
    )
    with pytest.raises(Refused) as caught:
        FAMILY.design(mg)
    assert (caught.value.field, caught.value.code) == ("dose", "dose_unit")


# -- order intake, end to end (the family registered in this test's app) -----------------------


CELLS_CODE = {
    "system": "http://snomed.info/sct",
    "code": "999000222",
    "display": "Autologous T cells",
}


@pytest.fixture
def cell_master_file(seeded: Any) -> Any:
    """The family registered in the test's app, and an effective master file of it."""

    seeded.families.register(CellTherapyFamily())
    qp = actor(seeded, "qp")
    with seeded.uow() as uow:
        hc = seeded.master_files.effective_for_code(uow, HYDROCORTISONE)
        data = {**hc.content(), "code": "MF-CT-DESIGN", "product_family": "cell_therapy"}
    data.pop("version")
    data.update(
        accepted_codes=[CELLS_CODE],
        design_envelope=ENVELOPE,
        release_rule={"mode": "manual", "tests": ["viable_cell_dose", "viability"]},
        cqa_specs={},
    )
    with seeded.uow() as uow:
        mf = seeded.master_files.draft(uow, qp, data)
    with seeded.uow() as uow:
        seeded.master_files.approve(uow, qp, mf.id, password=TEST_PASSWORD)
    with seeded.uow() as uow:
        seeded.master_files.make_effective(uow, qp, mf.id)
    return mf


def cell_bundle(per_kg: float, weight_kg: float | None) -> dict[str, Any]:

    doc = bundle()
    mr = request_of(doc)
    mr["medicationCodeableConcept"] = {"coding": [CELLS_CODE]}
    mr.pop("dispenseRequest", None)
    instruction = mr["dosageInstruction"][0]
    instruction.pop("timing", None)
    instruction["doseAndRate"][0]["doseQuantity"] = {
        "value": per_kg,
        "unit": "{cells}/kg",
        "system": "http://unitsofmeasure.org",
        "code": "{cells}/kg",
    }
    if weight_kg is not None:
        doc["entry"].append(
            {
                "fullUrl": "urn:uuid:weight-ct",
                "resource": {
                    "resourceType": "Observation",
                    "id": "weight-ct",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                    "subject": mr["subject"],
                    "valueQuantity": {"value": weight_kg, "unit": "kg", "code": "kg"},
                },
            }
        )
    return doc


def test_order_intake_designs_the_product_for_the_patients_weight(
    seeded: Any, cell_master_file: Any
) -> None:

    [order] = submit(seeded, cell_bundle(2.0e6, 70.0))
    # 2e6 cells/kg × 70 kg = 1.4e8 viable cells, one infusion; the design of the test above
    assert (order.dose_value, order.dose_unit, order.units) == (1.4e8, "{cells}", 1)
    assert order.status == "designed"
    assert order.design == design(target_cells=1.4e8, body_weight_kg=70)
    assert (order.design["body_weight_kg"], order.design["expansion_days"]) == (70.0, 7)
    # outside the envelope (8e6 cells/kg): the order stops, saying why
    [stopped] = submit(seeded, cell_bundle(8.0e6, 70.0))
    assert stopped.status == "stopped"
    assert stopped.stop_reason is not None and "8 × 10^6 viable cells/kg" in stopped.stop_reason
