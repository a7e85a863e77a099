"""A material lot's attributes are checked by the family of the products it is for (the family of
the master files that name its material, else the family the receipt names, else the only
registered one), through the REST API and the service, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nearfab.bootstrap import App
from nearfab.common.errors import ValidationFailed
from nearfab.designs import FamilyRegistry
from nearfab.families.solid_dose import SolidDoseFamily
from nearfab.families.solid_dose.release import SolidDoseRelease
from nearfab.materials import MaterialLot
from nearfab.quality.kit import FamilyLotRules
from nearfab.web.server import create_web_app

from .. import flow_helpers as fh
from ..conftest import TEST_PASSWORD

seeded = fh.seeded


def _headers(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _lot(app: App, number: str, material: str = "HC-FIL-2.5", **extra: Any) -> dict[str, Any]:
    return {
        "lot_number": number,
        "material_code": material,
        "description": "test lot",
        "site_id": fh.site_id(app, "GSTT-PH"),
        "supplier": "Filament Pharma Ltd",
        "expiry": (app.clock.now().date() + timedelta(days=365)).isoformat(),
        "quantity_g": 100.0,
        **extra,
    }


class CellsRelease(SolidDoseRelease):
    """A second family's lot schema: a count attribute only (no drug loading)."""

    def lot_attributes(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        count = attributes.get("count")
        if not isinstance(count, int) or count <= 0:
            raise ValidationFailed(
                "count must be a positive whole number", field="attributes.count"
            )
        return {"count": count}


class OtherFamily(SolidDoseFamily):
    """solid_dose's parts (a whole family passes registration) with another lot schema."""

    name = "other_family"

    def __init__(self) -> None:
        super().__init__()
        self.release = CellsRelease()


def test_the_api_stores_the_family_checked_attributes_and_names_a_bad_one(seeded: App) -> None:
    client = TestClient(create_web_app(seeded))
    pharmacist = _headers(client, "pharmacist")

    r = client.post(
        "/api/v1/material-lots",
        json=_lot(seeded, "T-1", attributes={"drug_loading": 0.05}),
        headers=pharmacist,
    )
    assert r.status_code == 201, r.text
    assert r.json()["attributes"] == {"drug_loading": 0.05}

    for attributes, field in [
        ({"drug_loading": 5}, "attributes.drug_loading"),  # a percentage, not a fraction
        ({"drug_loading": "0.1"}, "attributes.drug_loading"),
        ({}, "attributes.drug_loading"),
        ({"drug_loading": 0.1, "colour": "red"}, "attributes.colour"),
    ]:
        r = client.post(
            "/api/v1/material-lots",
            json=_lot(seeded, "T-2", attributes=attributes),
            headers=pharmacist,
        )
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == field, (attributes, r.text)
    # the old shape is refused, naming what is missing
    r = client.post(
        "/api/v1/material-lots", json=_lot(seeded, "T-3", drug_loading=0.1), headers=pharmacist
    )
    assert r.status_code == 422 and "attributes" in r.text, r.text
    # the demo's six filament lots, its two cell-therapy lots and T-1
    assert fh.count(seeded, MaterialLot) == 6 + 2 + 1


def test_the_family_is_the_master_files_else_the_one_named(seeded: App) -> None:
    seeded.families.register(OtherFamily())  # type: ignore[arg-type]
    client = TestClient(create_web_app(seeded))
    pharmacist = _headers(client, "pharmacist")

    def post(number: str, material: str, **extra: Any) -> Any:
        return client.post(
            "/api/v1/material-lots",
            json=_lot(seeded, number, material, **extra),
            headers=pharmacist,
        )

    # a material the demo's solid_dose master files name: solid_dose's schema, even with two
    # families registered
    assert post("T-1", "PROP-FIL-10", attributes={"drug_loading": 0.1}).status_code == 201
    r = post("T-2", "PROP-FIL-10", attributes={"count": 3}, product_family="other_family")
    assert r.status_code == 422 and r.json()["error"]["field"] == "product_family", r.text

    # a material no master file names: the receipt must say which family it is for
    r = post("T-3", "NEW-MAT", attributes={"count": 3})
    assert r.status_code == 422 and r.json()["error"]["field"] == "product_family", r.text
    r = post("T-4", "NEW-MAT", attributes={"count": 3}, product_family="no_such_family")
    assert r.status_code == 422 and r.json()["error"]["field"] == "product_family", r.text
    r = post("T-5", "NEW-MAT", attributes={"count": 0}, product_family="other_family")
    assert r.status_code == 422 and r.json()["error"]["field"] == "attributes.count", r.text
    r = post("T-6", "NEW-MAT", attributes={"count": 3}, product_family="other_family")
    assert r.status_code == 201, r.text
    assert r.json()["attributes"] == {"count": 3}


@pytest.mark.parametrize("family", [None, "solid_dose"])
def test_with_one_family_a_new_material_is_that_family(
    seeded: App, family: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a network that makes one family only (the platform registers more than one)
    one = FamilyRegistry()
    one.register(SolidDoseFamily())
    monkeypatch.setattr(seeded.materials, "_lot_rules", FamilyLotRules(one))
    client = TestClient(create_web_app(seeded))
    extra = {"product_family": family} if family else {}
    r = client.post(
        "/api/v1/material-lots",
        json=_lot(seeded, "T-1", "NEW-MAT", attributes={"drug_loading": 0.2}, **extra),
        headers=_headers(client, "pharmacist"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["attributes"] == {"drug_loading": 0.2}
