"""The families' own prescription fields on the web form (orders.form.ExtraField): the
flowmeter's fit (maximum flow, size option) and the islet product's donor DIN (ISBT 128) are
asked for when their master file is chosen, sent as the MedicationRequest identifiers the API's
FHIR carries, so the form and the API make the same order; a value the family refuses is
refused at its field, naming it, and nothing is submitted."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from tests import flow_helpers as fh
from tests.families import form_world
from tests.families.bioprint import world as bp
from tests.families.device import network as net

from nearfab.orders import Order
from nearfab.web.server import create_web_app

world = fh.world_fixture(form_world.build)

NHS = "9434765919"  # NHS Digital's example number (modulus 11 check digit 9)


def _form(browser: TestClient, **fields: str) -> Any:
    page = browser.get("/orders/new").text
    return browser.post(
        "/orders/new",
        data={
            "csrf_token": fh.csrf(page),
            "mode": "form",
            "nhs_number": NHS,
            "birth_date": "1950-03-01",
            "prescriber": "Dr Example",
            **fields,
        },
        follow_redirects=False,
    )


def _orders(app: Any) -> int:
    return fh.count(app, Order)


def _design(app: Any, order_id: str) -> dict[str, Any]:
    with app.uow() as uow:
        order = app.orders.get(uow, order_id)
        return {"status": order.status, "design": order.design, "dose": order.dose}


def test_the_form_asks_each_family_for_its_own_fields(world: fh.Built) -> None:
    page = fh.web_login(world.app, "clinician").get("/orders/new").text
    # one input per field, shown for the medicines whose family asks for it
    assert re.search(rf'class="needs-extra" data-medicines="{bp.CODE}"[^>]*>Donor DIN', page)
    assert re.search(rf'class="needs-extra" data-medicines="{net.PRODUCT}"[^>]*>Maximum flow', page)
    # the size options are the master file's envelope's (S and M), offered for the flowmeter
    sizes = page[page.index('id="extra-size"') :].split("</select>")[0]
    assert re.findall(rf'<option value="(\w+)" data-medicine="{net.PRODUCT}"', sizes) == ["S", "M"]


def test_a_flowmeter_from_the_form_is_the_api_s_order(world: fh.Built) -> None:
    app = world.app
    clinician = fh.web_login(app, "clinician")
    common = {"medicine": net.PRODUCT, "dose_value": "1", "dose_unit": "1", "size": "M"}
    before = _orders(app)
    # outside the envelope (10-50 mL/s): refused at the field, in the design's own words
    r = _form(clinician, **common, qmax_ml_s="80")
    assert r.status_code == 422, r.text[:500]
    assert 'data-field="qmax_ml_s"' in r.text
    assert "maximum flow 80 mL/s is outside the validated envelope (10-50 mL/s)" in r.text
    r = _form(clinician, **common, qmax_ml_s="fast")
    assert 'data-field="qmax_ml_s"' in r.text and "is not a number of mL/s" in r.text
    r = _form(clinician, **{**common, "size": "XL"}, qmax_ml_s="30")
    assert 'data-field="size"' in r.text and "is not one of S, M" in r.text
    r = _form(clinician, **common)  # no maximum flow at all
    assert 'data-field="qmax_ml_s"' in r.text and "required" in r.text
    assert _orders(app) == before  # nothing submitted
    r = _form(clinician, **common, qmax_ml_s="30", prescription_id="rx-form-30")
    assert r.status_code == 303, r.text[:2000]
    from_form = _design(app, r.headers["location"].rsplit("/", 1)[1])
    assert from_form["status"] == "designed"
    # the same prescription as FHIR through the API, for another patient: the same design
    client = TestClient(create_web_app(app))
    token = client.post(
        "/api/v1/auth/token", json={"username": "clinician", "password": fh.TEST_PASSWORD}
    ).json()["access_token"]
    r = client.post(
        "/api/v1/orders",
        json=net.bundle(30, "M", rx="rx-api-30"),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201, r.text
    from_api = _design(app, r.json()["orders"][0]["id"])
    assert from_form == from_api


def test_an_islet_prescription_from_the_form_is_the_api_s_order(world: fh.Built) -> None:
    app = world.app
    clinician = fh.web_login(app, "clinician")
    common = {
        "medicine": bp.CODE,
        "dose_value": "6000",
        "dose_unit": "{IEQ}/kg",
        "body_weight": "70",
    }
    before = _orders(app)
    # ST-001 Appendix A: G1234 17 654321's keyboard entry check character is A, not B
    r = _form(clinician, **common, donor_din="G1234 17 654321 [B]")
    assert r.status_code == 422, r.text[:500]
    assert 'data-field="donor_din"' in r.text and "check character" in r.text
    r = _form(clinician, **common)
    assert 'data-field="donor_din"' in r.text and "required" in r.text
    assert _orders(app) == before
    r = _form(clinician, **common, donor_din=bp.DIN_TYPED)
    assert r.status_code == 303, r.text[:2000]
    from_form = _design(app, r.headers["location"].rsplit("/", 1)[1])
    assert from_form["status"] == "designed"
    assert from_form["design"]["din"] == bp.DIN  # the DIN as scanned: =G12341765432100
    with app.uow() as uow:
        [order] = app.orders.submit(uow, fh.actor(app, "clinician"), bp.bundle(app, 7, din=bp.DIN))
        from_api = {"status": order.status, "design": order.design, "dose": order.dose}
    assert from_form == from_api
