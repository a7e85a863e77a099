"""The dispense web page shows the verification status: "Check only" answers one status without
dispensing; a refused dispense names the status."""

from __future__ import annotations

import html
import re

from fastapi.testclient import TestClient
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.web.server import create_web_app

seeded = fh.seeded
flushed_verification_log = ch.flushed_verification_log


def _login(client: TestClient) -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    data = {"username": "pharmacist", "password": fh.TEST_PASSWORD}
    if token:
        data["csrf_token"] = token.group(1)
    client.post("/login", data=data)


def _csrf(client: TestClient) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/dispense").text)
    assert found
    return found.group(1)


def test_check_only_then_dispense_then_refusal_status(seeded: App) -> None:
    _, packs = ch.released_batch(seeded)
    unit = packs[0]
    client = TestClient(create_web_app(seeded))
    _login(client)
    form = {"scan": ch.scan(unit), "patient_ref": "PT-WRONG", "csrf_token": _csrf(client)}
    checked = client.post("/dispense", data=form | {"action": "verify"})
    # the answer in words first, the status code beside it (issue 13 item 4)
    assert '<b id="verdict">Do NOT hand over: wrong patient</b>' in checked.text
    assert '<span id="status" class="status">wrong_patient</span>' in checked.text
    form["patient_ref"] = ch.patient_ref(seeded, unit)
    ok = client.post("/dispense", data=form | {"action": "verify"})
    assert '<b id="verdict">Safe to hand over</b>' in ok.text
    assert '<span id="status" class="status">ok</span>' in ok.text
    # the pack to check by eye, as its label states it: the order's medication and dose, the
    # pack's count in the family's words, lot and expiry of the pack record
    assert f'<td id="pack-lot">{unit.batch_number}</td>' in ok.text
    assert f'<td id="pack-expiry">{unit.expiry.isoformat()}</td>' in ok.text
    assert f'<td id="pack-quantity">{unit.quantity} tablets</td>' in ok.text
    assert '<td id="pack-strength">' in ok.text and '<td id="pack-product">' in ok.text
    # the scan stays in the form, so "Check and dispense" needs no second scan
    scan_field = re.search(r'<input name="scan"[^>]*value="([^"]*)"', ok.text)
    assert scan_field and html.unescape(scan_field.group(1)) == form["scan"]
    assert ch.units(seeded, unit.batch_id)[0].status == "released"  # checking is not dispensing
    done = client.post("/dispense", data=form | {"action": "dispense"})
    assert done.status_code == 200 and 'id="result"' in done.text
    assert f'<td id="pack-lot">{unit.batch_number}</td>' in done.text
    # after the hand-over the form is empty again, ready for the next pack
    assert re.search(r'<input name="scan"[^>]*value=""', done.text)
    again = client.post("/dispense", data=form | {"action": "dispense"})
    assert again.status_code == 409
    assert '<span id="status" class="status">already_dispensed</span>' in again.text
    assert '<b id="verdict">Do NOT hand over: already handed over</b>' in again.text
