"""Orders in the browser (issue 13): the list with search, status filter and pages for every role
that reads orders, scoped to the person's sites; the prescription form, the FHIR upload and the
pasted FHIR giving the order the API gives; refusals naming the field; the menu offering only
what a role may open; refusals as styled pages; "Sign…" only for those who sign.

Expected values are worked out by hand in each test: the demo's tablet prescription is 2 mg,
3 doses a day for 7 days, so 3 × 7 = 21 tablets; which site sees which order follows the
matrix in docs/security.md (site staff their own site, control-site staff and the auditor all).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.demo import HYDROCORTISONE
from nearfab.orders import Order
from nearfab.web.orders import form_field, medicines, prescription_bundle, search_orders
from nearfab.web.server import create_web_app

seeded = fh.seeded

HTML = {"accept": "text/html,application/xhtml+xml"}
NHS = "9434765919"  # a valid NHS number (mod 11 check digit 9), NHS Digital's test range
# the demo's tablet master file (solid_dose) and its hand-worked prescription
TABLET = {
    "medicine": "MF-HC-PRINTLET",
    "nhs_number": NHS,
    "patient_name": "Ada Example",
    "birth_date": "2018-03-04",
    "dose_value": "2",
    "dose_unit": "mg",
    "frequency": "3",
    "duration_days": "7",
    "prescriber": "Dr Clare Nice",
}
# site staff (home site), control-site staff and the home-less network administrator
GSTT_STAFF = ("pharmacist", "clinician", "operator")
MAN_STAFF = ("operator-man",)
NETWORK = ("qp", "planner", "auditor", "admin")


def _tablet_code(app: App) -> str:
    with app.uow() as uow:
        meds = medicines(app, uow, fh.actor(app, "clinician"))
    assert HYDROCORTISONE in [m["code"] for m in meds]  # offered at the clinician's site
    return HYDROCORTISONE


def _submit_as(app: App, username: str) -> str:
    with app.uow() as uow:
        (order,) = app.orders.submit(uow, fh.actor(app, username), fh.bundle(app))
        return order.id


def _row(order_id: str) -> str:
    """An order's link in the list (the search box echoes what was typed)."""
    return f'href="/orders/{order_id}"'


def _listed(client: TestClient, **params: str) -> str:
    r = client.get("/orders", params=params)
    assert r.status_code == 200, r.text
    return str(r.text)


# --- the list: every role, own site / other site / control site --------------------------------


def test_every_role_sees_its_own_sites_orders_and_no_other(seeded: App) -> None:
    gstt = fh.submit(seeded)  # the GSTT clinician's
    fh.create_user(seeded, "clinician-man", ["clinician"], "MAN-PH")
    man = _submit_as(seeded, "clinician-man")
    seen = {gstt: "GSTT-PH", man: "MAN-PH"}
    for username in (*GSTT_STAFF, *MAN_STAFF, *NETWORK):
        client = fh.web_login(seeded, username)
        page = _listed(client)
        own = {
            "GSTT-PH": username in GSTT_STAFF,
            "MAN-PH": username in MAN_STAFF,
        }
        for order_id, site in seen.items():
            expected = own[site] or username in NETWORK
            assert (_row(order_id) in page) is expected, f"{username}: {order_id} of {site}"
        # another site's order opened by its id is answered as an unknown one (404), a page
        for order_id, site in seen.items():
            if not own[site] and username not in NETWORK:
                r = client.get(f"/orders/{order_id}", headers=HTML)
                assert r.status_code == 404 and "<html" in r.text
                assert _row(order_id) not in _listed(client, q=order_id)
        # the dashboard's tiles count what the list shows ("No orders" under a count: issue 13)
        tiles = re.findall(
            r'class="count" href="/orders\?status=[a-z_]+"><b>(\d+)</b>', client.get("/").text
        )
        shown = re.search(r'id="order-count">(\d+) order', page)
        assert shown and sum(map(int, tiles)) == int(shown.group(1)), username


def test_search_by_order_patient_batch_and_serial_and_filter_by_status(seeded: App) -> None:
    batch_id, packs = ch.released_batch(seeded)
    batch = fh.batch(seeded, batch_id)
    other = fh.submit(seeded)  # a second GSTT order: a search must not show it
    patient = ch.patient_ref(seeded, packs[0])
    status = fh.order_status(seeded, batch.order_id)
    pharmacist = fh.web_login(seeded, "pharmacist")
    for q in (
        batch.order_id,
        patient,
        batch.batch_number,
        packs[0].serial,
        f"  {packs[-1].serial} ",
    ):
        page = _listed(pharmacist, q=q)
        assert _row(batch.order_id) in page, q
        assert _row(other) not in page, q
    assert "No order matches." in _listed(pharmacist, q="NO-SUCH-THING")
    # a patient reference typed in lower case is the same reference
    assert _row(batch.order_id) in _listed(pharmacist, q=patient.lower())
    # status filter: the released order under its status, not under "cancelled"
    assert _row(batch.order_id) in _listed(pharmacist, status=status)
    assert _row(other) not in _listed(pharmacist, status=status)
    assert _row(batch.order_id) not in _listed(pharmacist, status="cancelled")
    # an unknown status is ignored (every order), never a server error
    assert _row(batch.order_id) in _listed(pharmacist, status="<script>")
    # another site's operator finds nothing by this batch's number or pack serial
    man = fh.web_login(seeded, "operator-man")
    for q in (batch.batch_number, packs[0].serial, patient, batch.order_id):
        assert _row(batch.order_id) not in _listed(man, q=q)
    # the control site's QP finds it
    assert _row(batch.order_id) in _listed(fh.web_login(seeded, "qp"), q=batch.batch_number)


def test_pages_hold_the_newest_first_and_every_order_once(seeded: App) -> None:
    made = [fh.submit(seeded) for _ in range(3)]
    clinician = fh.actor(seeded, "clinician")
    with seeded.uow() as uow:
        first, total = search_orders(uow, clinician, page_no=1, size=2)
        second, again = search_orders(uow, clinician, page_no=2, size=2)
        everything, _ = search_orders(uow, clinician, size=100)
    mine = [o.id for o in everything if o.id in made]
    assert total == again == len(everything) and total >= 3
    assert len(first) == 2 and [o.id for o in first + second] == [o.id for o in everything[:4]]
    assert sorted(mine) == sorted(made)
    # page numbers from the address are checked: nonsense is page 1, never a server error
    client = fh.web_login(seeded, "clinician")
    for number in ("0", "-1", "abc", "99999999999"):
        assert client.get("/orders", params={"page": number}).status_code == 200


# --- the prescription form, the upload and the paste: the API's order ---------------------------


def _api_order(client: TestClient, username: str, bundle: dict[str, Any]) -> dict[str, Any]:
    token = client.post(
        "/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD}
    ).json()["access_token"]
    r = client.post("/api/v1/orders", json=bundle, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    (order,) = r.json()["orders"]
    return dict(order)


def _order(app: App, order_id: str) -> Order:
    with app.uow() as uow:
        order = app.orders.get(uow, order_id)
        uow.session.expunge(order)
        return order


def _kept(order: Order | dict[str, Any]) -> tuple[Any, ...]:
    get = order.get if isinstance(order, dict) else lambda k: getattr(order, k)
    return tuple(
        get(k) for k in ("status", "site_id", "medication", "dose_value", "dose_unit", "units")
    )


def test_the_form_the_upload_and_the_paste_give_the_apis_order(seeded: App) -> None:
    fields = TABLET | {"medicine": _tablet_code(seeded)}
    client = fh.web_login(seeded, "clinician")
    form = client.get("/orders/new")
    assert form.status_code == 200 and 'id="prescription-form"' in form.text
    answer = client.post(
        "/orders/new",
        data=fields | {"mode": "form", "csrf_token": fh.csrf(form.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    from_form = _order(seeded, answer.headers["location"].rsplit("/", 1)[1])
    # by hand: 2 mg, 3 a day for 7 days = 21 tablets, ordered for the clinician's site
    assert (from_form.dose_value, from_form.dose_unit, from_form.units) == (2.0, "mg", 21)
    assert from_form.site_id == fh.site_id(seeded, "GSTT-PH")
    assert "ydrocortisone" in from_form.medication

    # the same FHIR the form built, through the API, an uploaded file and pasted JSON
    with seeded.uow() as uow:
        (medicine,) = [
            m
            for m in medicines(seeded, uow, fh.actor(seeded, "clinician"))
            if m["code"] == fields["medicine"]
        ]
    bundle = prescription_bundle(fields, medicine, today=seeded.clock.now().date().isoformat())
    api = _api_order(TestClient(create_web_app(seeded)), "clinician", bundle)
    assert _kept(api) == _kept(from_form)

    token = fh.csrf(client.get("/orders/new").text)
    uploaded = client.post(
        "/orders/new",
        data={"mode": "upload", "csrf_token": token},
        files={"fhir_file": ("rx.json", json.dumps(bundle).encode(), "application/fhir+json")},
        follow_redirects=False,
    )
    assert uploaded.status_code == 303, uploaded.text
    pasted = client.post(
        "/orders/new",
        data={"mode": "paste", "csrf_token": token, "fhir_json": json.dumps(bundle)},
        follow_redirects=False,
    )
    assert pasted.status_code == 303, pasted.text
    for made in (uploaded, pasted):
        order = _order(seeded, made.headers["location"].rsplit("/", 1)[1])
        assert _kept(order) == _kept(from_form)
    # the new order is on the list, with its flash
    assert from_form.id in client.get("/orders").text


def test_the_form_asks_each_family_for_its_dose(seeded: App) -> None:
    """The cell product's form: a dose per kg with the body weight, one infusion (no course).
    By hand: 2 × 10⁶ cells/kg × 70 kg = 1.4 × 10⁸ cells, one unit."""
    client = fh.web_login(seeded, "clinician")
    form = client.get("/orders/new").text
    assert 'value="10*6{cells}/kg" data-medicine="MF-CART-CMF"' in form
    assert re.search(r'value="MF-CART-CMF"[^>]*data-weight="1" data-course="0"', form)
    assert re.search(r'value="MF-HC-PRINTLET"[^>]*data-weight="0" data-course="1"', form)
    fields = TABLET | {
        "medicine": "MF-CART-CMF",
        "birth_date": "1985-01-01",
        "dose_value": "2",
        "dose_unit": "10*6{cells}/kg",
        "body_weight": "70",
        "frequency": "",
        "duration_days": "",
    }
    r = client.post(
        "/orders/new",
        data=fields | {"mode": "form", "csrf_token": fh.csrf(form)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    order = _order(seeded, r.headers["location"].rsplit("/", 1)[1])
    assert order.dose_value == pytest.approx(1.4e8) and order.units == 1
    # without the weight the family cannot work the dose out: refused at the weight field
    status, named, _text = _refused(client, **(fields | {"mode": "form", "body_weight": ""}))
    assert status == 422 and named == "body_weight"


def _refused(client: TestClient, **data: str) -> tuple[int, str | None, str]:
    token = fh.csrf(client.get("/orders/new").text)
    r = client.post("/orders/new", data={"csrf_token": token} | data)
    found = re.search(r'id="error-field" data-field="([a-z_]+)"', r.text)
    return r.status_code, found.group(1) if found else None, r.text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dose_unit": "mL"}, "dose_unit"),  # not a mass: the family's refusal (doseQuantity.unit)
        ({"dose_value": "0"}, "dose_value"),
        ({"dose_value": "two"}, "dose_value"),
        ({"nhs_number": ""}, "nhs_number"),
        ({"nhs_number": "9434765918"}, "nhs_number"),  # wrong check digit
        ({"medicine": "NO-SUCH-MEDICINE"}, "medicine"),
        ({"frequency": ""}, "frequency"),
        ({"duration_days": "-3"}, "duration_days"),
        ({"prescriber": " "}, "prescriber"),
    ],
)
def test_a_refused_form_names_the_field_and_stores_nothing(
    seeded: App, change: dict[str, str], field: str
) -> None:
    client = fh.web_login(seeded, "clinician")
    before = fh.count(seeded, Order)
    status, named, text = _refused(
        client, **(TABLET | {"medicine": _tablet_code(seeded), "mode": "form"} | change)
    )
    assert status == 422 and named == field, text[:2000]
    assert 'aria-invalid="true"' in text and "<html" in text
    assert fh.count(seeded, Order) == before


def test_the_paste_refusal_is_the_apis_refusal(seeded: App) -> None:
    """The same document refused by the API and by the page: the same field and message."""
    with seeded.uow() as uow:
        (medicine,) = [
            m
            for m in medicines(seeded, uow, fh.actor(seeded, "clinician"))
            if m["code"] == _tablet_code(seeded)
        ]
    bad = prescription_bundle(
        TABLET | {"dose_unit": "mL"}, medicine, today=seeded.clock.now().date().isoformat()
    )
    api = TestClient(create_web_app(seeded))
    token = api.post(
        "/api/v1/auth/token", json={"username": "clinician", "password": fh.TEST_PASSWORD}
    ).json()["access_token"]
    r = api.post("/api/v1/orders", json=bad, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["field"].endswith("doseQuantity.unit")
    status, named, text = _refused(
        fh.web_login(seeded, "clinician"), mode="paste", fhir_json=json.dumps(bad)
    )
    assert status == 422 and named == "fhir_json"  # the pasted text is the field at fault
    assert error["field"] in text and error["message"].replace("'", "&#39;") in text
    # not JSON and not FHIR: refused naming the pasted field's content, as a page
    status, _named, text = _refused(fh.web_login(seeded, "clinician"), mode="paste", fhir_json="{")
    assert status == 422 and "<html" in text


def test_an_upload_or_paste_larger_than_the_apis_limit_is_refused(seeded: App) -> None:
    """The API takes at most 256 KiB of prescription (Settings.prescription_max_body_bytes,
    262144 bytes); the page takes no more by upload or paste, naming the field."""
    client = fh.web_login(seeded, "clinician")
    before = fh.count(seeded, Order)
    big = '{"resourceType": "Bundle", "type": "collection", "pad": "' + "x" * 262_144 + '"}'
    token = fh.csrf(client.get("/orders/new").text)
    r = client.post(
        "/orders/new",
        data={"mode": "upload", "csrf_token": token},
        files={"fhir_file": ("big.json", big.encode(), "application/json")},
    )
    assert r.status_code == 422 and 'data-field="fhir_file"' in r.text
    status, named, _text = _refused(client, mode="paste", fhir_json=big)
    assert status == 422 and named == "fhir_json"
    assert fh.count(seeded, Order) == before


def test_form_paths_map_to_form_fields() -> None:
    """The FHIR paths intake refusals name (orders/fhir.py, the families' kits) -> fields."""
    root = "Bundle.entry[1].resource"
    assert (
        form_field(f"{root}.dosageInstruction[0].doseAndRate[0].doseQuantity.unit") == "dose_unit"
    )
    assert form_field(f"{root}.dosageInstruction[0].doseAndRate[0].doseQuantity") == "dose_value"
    assert form_field(f"{root}.medicationCodeableConcept") == "medicine"
    assert form_field(f"{root}.dispenseRequest") == "duration_days"
    assert form_field("Bundle.entry[0].resource.identifier[0].value") == "nhs_number"
    assert form_field("Bundle.entry[0].resource.birthDate") == "birth_date"
    assert form_field("Bundle.entry[2].resource.valueQuantity") == "body_weight"
    assert form_field(f"{root}.identifier[0].value") == "prescription_id"
    assert form_field(f"{root}.subject.reference") == "nhs_number"
    assert form_field(f"{root}.requester") == "prescriber"
    assert form_field(f"{root}.dosageInstruction[0].timing.repeat") == "frequency"
    # an uploaded or pasted document: the file or the text is the field
    assert form_field(f"{root}.medicationCodeableConcept", "paste") == "fhir_json"
    assert form_field(f"{root}.medicationCodeableConcept", "upload") == "fhir_file"
    assert form_field("site", "paste") == "site" and form_field("site_id") == "site"
    assert form_field(None) is None and form_field("$") is None


def test_who_may_prescribe_and_for_which_site(seeded: App) -> None:
    code = _tablet_code(seeded)
    # roles without order.submit: no link, the form refused as a page (403)
    for username in ("operator", "qp", "planner", "auditor"):
        client = fh.web_login(seeded, username)
        assert 'id="new-prescription"' not in client.get("/orders").text
        r = client.get("/orders/new", headers=HTML)
        assert r.status_code == 403 and "<html" in r.text and "Not allowed" in r.text
        posted = client.post(
            "/orders/new", data=TABLET | {"medicine": code, "csrf_token": "x"}, headers=HTML
        )
        assert posted.status_code == 403 and "<html" in posted.text
    # a GSTT pharmacist naming MAN-PH (a field the page does not offer them): refused, nothing
    before = fh.count(seeded, Order)
    pharmacist = fh.web_login(seeded, "pharmacist")
    assert 'name="site"' not in pharmacist.get("/orders/new").text
    status, named, _text = _refused(
        pharmacist, **(TABLET | {"medicine": code, "mode": "form", "site": "MAN-PH"})
    )
    assert status == 403 and named == "site"
    assert fh.count(seeded, Order) == before
    # the network administrator names the ordering site
    admin = fh.web_login(seeded, "admin")
    form = admin.get("/orders/new").text
    assert 'name="site"' in form and "MAN-PH" in form and ">CTRL<" not in form
    r = admin.post(
        "/orders/new",
        data=TABLET
        | {"medicine": code, "mode": "form", "site": "MAN-PH", "csrf_token": fh.csrf(form)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    made = _order(seeded, r.headers["location"].rsplit("/", 1)[1])
    assert made.site_id == fh.site_id(seeded, "MAN-PH")
    # a form without its CSRF token: refused, as a page for a browser, as JSON for a script
    r = pharmacist.post("/orders/new", data=TABLET | {"medicine": code}, headers=HTML)
    assert r.status_code == 403 and "reload the page" in r.text and "<html" in r.text


# --- the menu, refusal pages and the release queue's buttons -----------------------------------

DEMO_ROLES = (
    "admin",
    "qp",
    "planner",
    "auditor",
    "pharmacist",
    "clinician",
    "operator",
    "operator-man",
)


def _menu(page: str) -> list[str]:
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', page, re.S)
    assert nav, "no main menu"
    return re.findall(r'href="([^"]+)"', nav.group(1))


def test_every_demo_role_opens_every_menu_entry_without_a_refusal(seeded: App) -> None:
    """A crawl: log in as each demo role, follow every link of the main menu; each answers a
    page (200), none refuses (403) or shows raw JSON."""
    ch.released_batch(seeded)
    # one web app for every role's session (each its own cookies): a new app per login built
    # (deep-copied) its own OpenAPI schema for its /api/docs page
    web = create_web_app(seeded)
    for username in DEMO_ROLES:
        client = fh.web_login(web, username)
        home = client.get("/", headers=HTML)
        assert home.status_code == 200
        nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', home.text, re.S)
        assert nav, username
        links = re.findall(r'href="([^"]+)"', nav.group(1))
        assert "/orders" in links, username
        for href in links:
            r = client.get(href, headers=HTML)
            assert r.status_code == 200, f"{username} {href}: {r.status_code}"
            assert r.text.lstrip().lower().startswith("<!doctype html"), f"{username} {href}"
            assert r.headers["content-type"].startswith("text/html"), f"{username} {href}"
    # what a role may not open is not offered
    menus = {
        u: _menu(fh.web_login(web, u).get("/").text) for u in ("clinician", "operator", "auditor")
    }
    assert "/release" not in menus["clinician"] and "/dispense" not in menus["clinician"]
    assert "/users" not in menus["operator"] and "/release" not in menus["operator"]
    assert "/audit" in menus["auditor"] and "/dispense" not in menus["auditor"]


def test_release_queue_offers_sign_only_to_who_signs(seeded: App) -> None:
    batch_id = fh.make_batch(seeded)
    number = fh.batch(seeded, batch_id).batch_number
    for username, offered in (
        ("qp", True),
        ("pharmacist", False),
        ("auditor", False),
        ("admin", False),
    ):
        page = fh.web_login(seeded, username).get("/release").text
        assert number in page, username
        assert ("Sign…" in page) is offered, username
        assert (f'action="/release/{batch_id}"' in page) is offered, username


def test_a_refusal_is_a_page_for_a_browser_and_json_for_a_script(seeded: App) -> None:
    client = fh.web_login(seeded, "operator")
    page = client.get("/orders/no-such-order", headers=HTML)
    assert page.status_code == 404 and "<html" in page.text and "no such record" in page.text
    # a route's own domain refusal (CSRF) as a page, and as JSON for a client asking for it
    r = client.post("/logout", headers=HTML)
    assert r.status_code == 403 and "<html" in r.text and '{"error"' not in r.text
    r = client.post("/logout", headers={"accept": "application/json"})
    assert r.status_code == 403 and r.json()["error"]["field"] == "csrf_token"
    # an unknown page
    r = client.get("/no-such-page", headers=HTML)
    assert r.status_code == 404 and "<html" in r.text
    # the API keeps its JSON even for a browser
    r = client.get("/api/v1/orders/no-such-order", headers=HTML)
    assert r.headers["content-type"].startswith("application/json")
