"""Export of the live network names each product's family and design, so the exported
scenario times batches with the family's machine model."""

from __future__ import annotations

from typing import Any

import pytest
from tests import flow_helpers as fh
from tests.simulation.test_family_models import (
    FAMILIES,
    HC_ENVELOPE,
    PROP_ENVELOPE,
    platform_days,
)

from nearfab.simulation import export_scenario
from nearfab.simulation.logic.engine import simulate_traced

seeded = fh.seeded


def test_the_live_network_exports_its_products_with_the_family_model(seeded: Any) -> None:
    courses = [(2.0, 7), (2.0, 7), (5.0, 14)]  # hydrocortisone, 3 a day: 21, 21 and 42 tablets
    for dose, days in courses:
        fh.submit(seeded, dose_mg=dose, days=days)
    fh.submit(seeded, dose_mg=10.0, days=5, medication="propranolol")  # 2 a day: 10 tablets
    with seeded.uow() as uow:
        exported = export_scenario(uow, seeded.families, horizon_days=60)
    by_name = {p.name: p for p in exported.products}
    hc = by_name["MF-HC-PRINTLET"]
    assert hc.family == "solid_dose" and hc.design is not None
    assert hc.design.envelope == HC_ENVELOPE
    assert [(rx.says(), rx.weight) for rx in hc.design.prescriptions] == [
        ({"dose_mg": 2.0, "units": 21, "patient_group": "child"}, 2.0),
        ({"dose_mg": 5.0, "units": 42, "patient_group": "child"}, 1.0),
    ]
    assert [
        (rx.dose_mg, rx.units, rx.patient_group, rx.weight) for rx in hc.design.prescriptions
    ] == [
        (2.0, 21, "child", 2.0),
        (5.0, 42, "child", 1.0),
    ]
    assert hc.cycle == 0.0  # the machine time is the family's
    prop = by_name["MF-PROP-PRINTLET"]
    assert prop.design is not None
    assert [rx.says()["units"] for rx in prop.design.prescriptions] == [10]
    spec = exported.to_spec(FAMILIES)
    _, work = simulate_traced(spec, 0)
    assert work
    hc_index = [p.name for p in spec.products].index("MF-HC-PRINTLET")
    setups = {s.setup.mean for s in spec.sites}
    assert setups == {0.0}
    for _, start, end, p, rx in work:
        product = spec.products[p]
        assert product.design is not None
        chosen = product.design.prescriptions[rx].says
        envelope = HC_ENVELOPE if p == hc_index else PROP_ENVELOPE
        assert end - start == pytest.approx(
            platform_days(envelope, chosen["dose_mg"], chosen["units"]), rel=1e-12
        )
