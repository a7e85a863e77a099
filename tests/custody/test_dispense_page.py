"""The dispense web page shows the verification status: "Check only" answers one status without
dispensing; a refused dispense names the status."""

from __future__ import annotations

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
    assert '<b id="status">wrong_patient</b>' in checked.text
    form["patient_ref"] = ch.patient_ref(seeded, unit)
    ok = client.post("/dispense", data=form | {"action": "verify"})
    assert '<b id="status">ok</b>' in ok.text
    assert ch.units(seeded, unit.batch_id)[0].status == "released"  # checking is not dispensing
    done = client.post("/dispense", data=form | {"action": "dispense"})
    assert done.status_code == 200 and 'id="result"' in done.text
    again = client.post("/dispense", data=form | {"action": "dispense"})
    assert again.status_code == 409
    assert '<span id="status" class="status">already_dispensed</span>' in again.text
