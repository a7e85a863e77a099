"""The cell_therapy family can be registered: every part passes bootstrap's part checks, and a
master file of the family is drafted (its envelope and release rule checked by the family),
approved by a QP and made effective; a material lot of the family is received with its attributes
checked. bootstrap.product_families() does not register it yet: with two families, a lot of a
material no master file names must name its family, and tests/materials receive such lots
without one (docs/cell-therapy.md)."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest

from nearfab.bootstrap import App, check_family_parts, product_families
from nearfab.common.errors import ValidationFailed
from nearfab.custody.kit import LabelKit
from nearfab.families.cell_therapy.family import CellTherapyFamily
from nearfab.families.cell_therapy.machines import DEFAULT_PROCESS_PARAMETERS
from nearfab.identity import Actor, actor_of, system_actor
from nearfab.orders.kit import PrescriptionKit

BOOT = system_actor("test-admin")
PASSWORD = "a-long-secret-42"
SNOMED = "http://snomed.info/sct"

ENVELOPE: dict[str, Any] = {
    "dose_per_kg": {"min": 2.0e5, "max": 5.0e6},
    "body_weight_kg": {"min": 10.0, "max": 150.0},
    "max_total_cells": 2.5e8,
    "seed_cells": 5.0e7,
    "culture_volume_ml": 1000.0,
    "max_density_cells_per_ml": 5.0e6,
    "doubling_time_h": 36.0,
    "doubling_time_cv": 0.2,
    "process_yield": 0.6,
    "expansion_days": {"min": 7, "max": 12},
    "viability_min": 0.7,
    "cells_per_ml_max": 1.0e7,
    "bag_volume_ml": {"min": 10.0, "max": 100.0},
    "medium_ml_per_day": 500.0,
}
RELEASE_RULE: dict[str, Any] = {
    "mode": "rtrt",
    "tests": [
        *("viable_cell_dose", "viability", "identity_purity"),
        *("endotoxin", "mycoplasma", "sterility"),
    ],
    "in_process": ["viability"],
}


def master_file(site_id: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "code": "MF-CT-01",
        "title": "Autologous T cells, expanded in a closed micro-factory",
        "product_family": "cell_therapy",
        "accepted_codes": [{"system": SNOMED, "code": "1000001", "display": "Autologous T cells"}],
        "design_envelope": copy.deepcopy(ENVELOPE),
        "process_parameters": copy.deepcopy(DEFAULT_PROCESS_PARAMETERS),
        "cqa_specs": {
            "dose": {"min_pct": 80, "max_pct": 120},
            "markers": {"CD3+": {"min": 0.8}},
            "endotoxin": {"max_eu_per_kg": 5.0},
        },
        "release_rule": copy.deepcopy(RELEASE_RULE),
        "material_code": "CT-MEDIUM-1",
        "shelf_life_days": 365,
        "storage": "Store at or below -150 °C in the vapour phase of liquid nitrogen",
        "gtin": "09506000134352",
        "units_per_pack": 4,
        "allowed_site_ids": [site_id],
    }
    data.update(changes)
    return data


@pytest.fixture
def qp(app: App) -> tuple[str, Actor]:
    """A control site and its QP, in an app whose registry has the family."""
    if "cell_therapy" not in app.families.names():
        app.families.register(CellTherapyFamily())
    with app.uow() as uow:
        site = app.network.create_site(uow, BOOT, code="CTRL", name="Control", kind="control")
    with app.uow() as uow:
        user = app.users.create_user(
            uow,
            BOOT,
            username="qp",
            full_name="Qp Person",
            roles=["qp"],
            password=PASSWORD,
            home_site_id=site.id,
        )
        return site.id, actor_of(user, uow.session)


def test_every_part_passes_bootstraps_checks() -> None:
    family = CellTherapyFamily()
    check_family_parts(family)  # TypeError naming the part otherwise
    assert isinstance(family.labels, LabelKit)
    assert isinstance(family.prescription, PrescriptionKit)


def test_bootstraps_registry_takes_the_family() -> None:
    """The registry bootstrap builds checks each part as it registers a family."""
    families = product_families()
    if "cell_therapy" not in families.names():  # bootstrap does not register it yet (docs)
        families.register(CellTherapyFamily())
    # every family bootstrap registers (bioprint, device, ... beside these two)
    assert {"cell_therapy", "solid_dose"} <= set(families.names())
    assert isinstance(families.get("cell_therapy"), CellTherapyFamily)


def test_a_cell_therapy_master_file_is_approved_and_made_effective(
    app: App, qp: tuple[str, Actor]
) -> None:
    site_id, person = qp
    with app.uow() as uow:
        mf_id = app.master_files.draft(uow, person, master_file(site_id)).id
    with app.uow() as uow:
        approved = app.master_files.approve(uow, person, mf_id, password=PASSWORD)
        assert approved.status == "approved"
        assert approved.product_family == "cell_therapy"
    with app.uow() as uow:
        effective = app.master_files.make_effective(uow, person, mf_id)
        assert effective.status == "effective"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        # the family's envelope: a key it does not know, a missing one
        ({"design_envelope": {**ENVELOPE, "dose_mg": {"min": 1, "max": 2}}}, "dose_mg"),
        ({"design_envelope": {k: v for k, v in ENVELOPE.items() if k != "seed_cells"}}, "seed"),
        # the family's release tests and its rule settings
        ({"release_rule": {"mode": "rtrt", "tests": ["unit_mass"]}}, "release_rule.tests"),
        (
            {"release_rule": {**RELEASE_RULE, "in_process": ["sterility"]}},
            "release_rule.in_process",
        ),
    ],
)
def test_the_family_checks_the_draft(
    app: App, qp: tuple[str, Actor], changes: dict[str, Any], field: str
) -> None:
    site_id, person = qp
    with pytest.raises(ValidationFailed) as exc, app.uow() as uow:
        app.master_files.draft(uow, person, master_file(site_id, **changes))
    assert field in (exc.value.field or "")


def test_a_material_lot_of_the_family_is_received_with_its_attributes(
    app: App, qp: tuple[str, Actor]
) -> None:
    site_id, person = qp
    with app.uow() as uow:
        mf_id = app.master_files.draft(uow, person, master_file(site_id)).id
    with app.uow() as uow:
        app.master_files.approve(uow, person, mf_id, password=PASSWORD)
    with app.uow() as uow:
        app.master_files.make_effective(uow, person, mf_id)
    with app.uow() as uow:
        user = app.users.create_user(
            uow,
            BOOT,
            username="pharmacist",
            full_name="Pharmacist Person",
            roles=["pharmacist"],
            password=PASSWORD,
            home_site_id=site_id,
        )
        receiver = actor_of(user, uow.session)
    attributes = {"kind": "medium", "grade": "gmp", "sterility_certificate": "CoA-77"}
    receive: dict[str, Any] = {
        "lot_number": "MED-0001",
        "material_code": "CT-MEDIUM-1",
        "description": "Serum-free T cell medium",
        "site_id": site_id,
        "supplier": "Example Media Ltd",
        "expiry": date(2030, 1, 31),
        "quantity_g": 10_000.0,
        "assay_pct": 100.0,
    }
    with app.uow() as uow:
        lot = app.materials.receive_lot(uow, receiver, attributes=attributes, **receive)
        assert lot.attributes == attributes
    with pytest.raises(ValidationFailed) as exc, app.uow() as uow:
        app.materials.receive_lot(
            uow,
            receiver,
            attributes={**attributes, "grade": "research"},
            **{**receive, "lot_number": "MED-0002"},
        )
    assert exc.value.field == "attributes.grade"
