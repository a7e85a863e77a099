"""bioprint is registered by bootstrap: every part passes bootstrap's checks against the
Protocol of the domain that calls it, and a master file of it is checked by the family when it is
drafted (envelope, release rule)."""

from __future__ import annotations

from typing import Any

import pytest
from tests import flow_helpers as fh
from tests.families.bioprint import world

from nearfab.bootstrap import App, check_family_parts, product_families
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.families.bioprint import BioprintFamily
from nearfab.scheduling.kit import (
    collection_identifier,
    declares_collection_identifier,
    pre_collection_records,
)
from nearfab.simulation.kit import SimulationKit


def test_every_part_passes_and_bootstrap_registers_it() -> None:
    check_family_parts(BioprintFamily())
    assert isinstance(product_families().get("bioprint"), BioprintFamily)
    assert isinstance(BioprintFamily().simulation, SimulationKit)


def test_the_collection_is_the_donors_isolation() -> None:
    family = BioprintFamily()
    design = {"din": world.DIN}
    assert pre_collection_records(family, design) == ("consent",)
    assert declares_collection_identifier(family)
    assert collection_identifier(family, design, world.DIN_TYPED) == world.DIN
    with pytest.raises(Refused) as caught:
        collection_identifier(family, design, world.OTHER_DIN)
    assert (caught.value.code, caught.value.field) == ("identity_mismatch", "identifier")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"design_envelope": {**world.ENVELOPE, "shelf_life_h": 4}}, "shelf_life_h"),
        ({"release_rule": {"mode": "rtrt", "tests": ["unit_mass"]}}, "release_rule.tests"),
        (
            {"release_rule": {**world.RELEASE_RULE, "in_process": ["potency"]}},
            "release_rule.in_process",
        ),
    ],
)
def test_the_family_checks_the_draft(seeded: App, changes: dict[str, Any], field: str) -> None:
    site = fh.site_id(seeded, world.SITE)
    with pytest.raises(ValidationFailed) as caught, seeded.uow() as uow:
        seeded.master_files.draft(uow, fh.actor(seeded, "qp"), world.master_file([site], **changes))
    assert field in (caught.value.field or "")


def test_the_simulation_designs_as_intake_does() -> None:
    sim = BioprintFamily().simulation
    design = sim.design(world.ENVELOPE, {"dose_per_kg": 6000, "body_weight_kg": 70})
    assert design["constructs"] == 42 and design["target_ieq"] == 420_000
    assert sim.failure_probability(design) is None
    with pytest.raises(ValidationFailed) as caught:
        sim.design(world.ENVELOPE, {"dose_per_kg": 6000})
    assert caught.value.field == "body_weight_kg"
