"""Dispense by the patient's NHS number in a real browser (Debian Chromium through Playwright),
issue 20: a pharmacist scans another patient's pack and types the NHS number of the patient in
front of them: refused, naming the NHS number and no one's name; the right pack with the same
NHS number is handed over and the page shows the patient's name and birth date to confirm by
eye. Then a check only by wristband (GS1 GSRN, AI 8018). SQLite only: the service tests cover
PostgreSQL. Screenshots in the test's folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch
from tests.patient_helpers import ALICE, BOB, submit_for

from nearfab.bootstrap import App
from nearfab.custody import make_identifier

try:
    from playwright.sync_api import Page, expect
except ImportError:  # a user clone without the dev extras; CI must have it
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(
        "Playwright for Python is not installed (pip install -e '.[dev]')", allow_module_level=True
    )

seeded = fh.seeded  # the live server serves this seeded copy
pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("seeded", ["sqlite"], indirect=True),
]


def _released_pack(app: App, order_id: str) -> str:
    """The order's batch made and released; its first pack's GS1 element string, as typed."""
    batch_id = fh.start(app, fh.ticketed_job(app, order_id=order_id))
    fh.finish(app, batch_id)
    fh.prepare_release(app, batch_id)
    fh.release(app, batch_id)
    unit = ch.units(app, batch_id)[0]
    return make_identifier(unit.gtin, unit.serial, unit.batch_number, unit.expiry).element_string()


def _login(page: Page, username: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(fh.TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def test_dispense_by_nhs_number_and_refuse_another_patients_pack(
    page: Page, seeded: App, tmp_path: Path
) -> None:
    alice_order = submit_for(seeded, ALICE)
    alice_pack = _released_pack(seeded, alice_order)
    bob_pack = _released_pack(seeded, submit_for(seeded, BOB))
    _login(page, "pharmacist")
    page.goto("/dispense")

    # Bob's pack, Alice's NHS number (as printed: 943 476 5919): refused
    page.get_by_label("Scan").fill(bob_pack)
    page.get_by_label("NHS number").fill("943 476 5919")
    page.get_by_role("button", name="Check and dispense").click()
    error = page.get_by_role("alert")
    expect(error).to_contain_text("Do NOT hand over: wrong patient")
    expect(error).to_contain_text("wrong_patient")
    expect(error).to_contain_text("the NHS number does not match")
    expect(error).not_to_contain_text(BOB.name)
    expect(error).not_to_contain_text(ALICE.name)
    expect(page.locator("#patient-match")).to_have_count(0)
    page.screenshot(path=str(tmp_path / "dispense-wrong-patient.png"), full_page=True)

    # a mistyped NHS number (last digit 8: the modulus-11 check digit is 9): refused as such
    page.get_by_label("Scan").fill(alice_pack)
    page.get_by_label("NHS number").fill("943 476 5918")
    page.get_by_role("button", name="Check and dispense").click()
    expect(page.get_by_role("alert")).to_contain_text("not a valid NHS number")

    # a check only by wristband, then Alice's pack with her NHS number: handed over
    page.get_by_label("Scan").fill(alice_pack)
    page.get_by_label("NHS number").fill(f"(8018){ALICE.gsrn}")
    page.get_by_role("button", name="Check only").click()
    expect(page.locator("#verification")).to_contain_text("ok")
    expect(page.locator("#verdict")).to_have_text("Safe to hand over")
    expect(page.locator("#pack-lot")).not_to_be_empty()
    expect(page.locator("#pack-expiry")).not_to_be_empty()
    expect(page.locator("#patient-match")).to_contain_text("wristband")

    # the scan is kept after "Check only": dispensing needs no second scan
    expect(page.get_by_label("Scan")).to_have_value(alice_pack)
    page.get_by_label("NHS number").fill("9434765919")
    page.get_by_role("button", name="Check and dispense").click()
    expect(page.get_by_role("status")).to_contain_text("Dispensed pack")
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.locator("#patient-match")).to_contain_text("nhs number")
    expect(page.locator("#patient-name")).to_have_text(ALICE.name)
    expect(page.locator("#patient-birth-date")).to_have_text(ALICE.birth_date.isoformat())
    page.screenshot(path=str(tmp_path / "dispense-by-nhs-number.png"), full_page=True)
    page.goto(f"/orders/{alice_order}")
    expect(page.locator("#order-status")).to_have_text("dispensed")
