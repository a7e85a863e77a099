"""The cell-therapy flow in a real browser (Debian Chromium through Playwright), on SQLite and
PostgreSQL: every step the web UI offers is done in the browser, none through the API or CLI.

The web UI has no prescription form: the clinician's FHIR MedicationRequest (2e6 viable
cells/kg for 70 kg, the demo's cell product at GSTT-PH) is submitted through the API in the
test's setup, and the 7-day culture is the micro-factory twin's job (the test runs it on the
collection's day); the batch record's manual steps and its audit-trail review are signed by the
setup too (fh.prepare_release: their pages have their own browser test,
test_browser_batch_steps.py). Then, in the browser:

- the clinician sees the order's collection appointment: 24 h to seeding + 7 culture days ×
  24 h + 48 h to infusion = 240 h from collection to administration (docs/cell-therapy.md),
  signs the patient's eligibility and consent and records the collection (the patient, and
  the DIN typed with its check character);
- the QP releases the batch in the release queue with sterility pending;
- the pharmacist follows the bag's chain of identity: three hand-overs (collection →
  micro_factory → cryostore → infusion), the bag and its DIN scanned on both sides and the
  patient identified at the bedside (the last one), a cryostore reading of
  -180 °C (below the -150 °C limit: no excursion), the bag thawed (its in-use period: 180 min,
  the family's default), then dispensed to the patient;
- the QP enters the failing sterility follow-up on the batch page;
- the clinician sees the notice on the Notices page and acknowledges it.

And the exceptional route: a culture that grew at 40 % of its rate is out of specification;
the clinician asks for its exceptional release (e-signed), the QP certifies it (e-signed);
its eligibility, consent and collection are recorded by the setup (`_made`, as the API flow).
Each page is screenshotted into the test's tmp_path.
"""

from __future__ import annotations

import os
import random
import re
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests import flow_helpers as fh
from tests.e2e.test_cell_therapy_flow import _made
from tests.families.cell_therapy.collect import DIN_A

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.demo import CELL_MACHINE, cell_therapy_bundle
from nearfab.production.machines import Fault
from nearfab.web.server import create_web_app

try:
    from playwright.sync_api import Page, expect
except ImportError:  # a user clone without the dev extras; CI must have it
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(
        "Playwright for Python is not installed (pip install -e '.[dev]')", allow_module_level=True
    )

DIN_TYPED = "G123417654321A"  # DIN_A typed: the DIN and its keyboard entry check character
seeded = fh.seeded  # the live server serves this seeded copy (SQLite and PostgreSQL)
pytestmark = [pytest.mark.browser]


def _prescribed(app: App, seed: int) -> str:
    """The clinician's prescription, through the API (the web UI has no prescription form)."""
    client = TestClient(create_web_app(app))
    token = client.post(
        "/api/v1/auth/token", json={"username": "clinician", "password": fh.TEST_PASSWORD}
    ).json()["access_token"]
    bundle = cell_therapy_bundle(
        random.Random(seed), today=app.clock.now().date(), dose_per_kg=2.0e6, weight_kg=70.0
    )
    r = client.post("/api/v1/orders", json=bundle, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    (order,) = r.json()["orders"]
    return str(order["id"])


def _run(app: App, job_id: str) -> str:
    """The micro-factory twin runs the ticketed job (a run of days) to its batch."""
    fh.issue_ticket(app, job_id)
    machine = fh.machine(app, fh.machine_id(app, CELL_MACHINE))
    app.fleet.clear_faults(machine)
    batch_id = fh.start(app, job_id)
    fh.finish(app, batch_id)
    return batch_id


def _login(page: Page, username: str) -> None:
    page.context.clear_cookies()
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(fh.TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def _shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _nav(page: Page) -> Any:
    return page.locator("header nav")


def test_a_cell_product_from_release_to_infusion_and_its_late_sterility_failure(
    page: Page, seeded: App, clock: ManualClock, tmp_path: Path
) -> None:
    order_id = _prescribed(seeded, 21)
    job_id = fh.schedule(seeded, order_id)
    with seeded.uow() as uow:  # the booked day of the collection
        booked = seeded.scheduling.collections.open_for(uow, order_id)
        assert booked is not None
        clock.advance(max((booked.collection_at - clock.now()).total_seconds(), 0.0))

    # the clinician: the order's collection appointment; Notices in the menu, no chain pages
    _login(page, "clinician")
    expect(_nav(page).get_by_role("link", name="Notices")).to_be_visible()
    expect(_nav(page).get_by_role("link", name="Hand-over")).to_have_count(0)
    page.goto(f"/orders/{order_id}")
    patient_ref = page.locator("#patient-ref").inner_text().strip()
    collection = page.locator("#order-collection")
    expect(collection).to_contain_text("(240 h from collection)")
    expect(page.locator("#chain-links")).to_have_count(0)  # trace.read is not the clinician's
    _shot(page, tmp_path, "1-order-collection")
    collection.get_by_role("link", name="Collection appointments").click()
    expect(page.locator("#collection-hours")).to_have_text("240 h")
    expect(page.locator("#collection-status")).to_have_text("booked")
    # eligibility and consent, each e-signed, then the collection: the patient identified and
    # the DIN typed off the collection bag's label
    for kind, document in (
        ("eligibility", "apheresis eligibility assessment EA-2026-117"),
        ("consent", "CAR-T consent form v3.1 (2026-09)"),
    ):
        form = page.locator("#pre-collection-form")
        form.get_by_label("Record").select_option(kind)
        form.get_by_label("Document").fill(document)
        form.get_by_label("What you confirm").fill(f"{kind} confirmed with the patient")
        form.get_by_label("User ID").fill("clinician")
        form.get_by_label("Password").fill(fh.TEST_PASSWORD)
        form.get_by_role("button", name="Sign the record").click()
        expect(page.locator("#collection-flash")).to_have_text(
            f"{kind.capitalize()}: recorded (signed)"
        )
    expect(page.locator("#pre-collection-form")).to_have_count(0)
    _shot(page, tmp_path, "2-consent-signed")
    form = page.locator("#collected-form")
    form.get_by_label("Patient").fill(patient_ref)
    form.get_by_label("Chain identifier").fill(DIN_TYPED)
    form.get_by_role("button", name="Record the collection").click()
    expect(page.locator("#collection-flash")).to_contain_text("Collection recorded at")
    expect(page.locator("#collected")).to_contain_text(DIN_A)  # bound as the data structure
    _shot(page, tmp_path, "3-collected")

    # the micro-factory runs the ticket: 7 culture days, one bag
    batch_id = _run(seeded, job_id)
    fh.prepare_release(seeded, batch_id)
    number = fh.batch(seeded, batch_id).batch_number

    # the QP releases it in the queue, sterility pending
    _login(page, "qp")
    _nav(page).get_by_role("link", name="Release queue").click()
    row = page.locator(f'#queue tr[data-batch="{batch_id}"]')
    expect(row).to_contain_text(number)
    row.get_by_role("button", name="Sign…").click()
    dialog = page.locator(f"#sign-{batch_id}")
    expect(dialog).to_contain_text("Results pending at release: sterility")
    dialog.get_by_label("Decision").select_option("release")
    dialog.get_by_label("Meaning").fill("QP release")
    dialog.get_by_label("User ID").fill("qp")
    dialog.get_by_label("Password").fill(fh.TEST_PASSWORD)
    _shot(page, tmp_path, "4-release-dialog")
    dialog.get_by_role("button", name="Sign", exact=True).click()
    expect(page.locator("#message")).to_contain_text(f"Batch {number} released")
    _shot(page, tmp_path, "5-released")

    # the pharmacist: the bag's chain of identity, from the order page
    _login(page, "pharmacist")
    expect(_nav(page).get_by_role("link", name="Notices")).to_be_visible()
    expect(_nav(page).get_by_role("link", name="Hand-over")).to_be_visible()
    page.goto(f"/orders/{order_id}")
    scan = page.locator("code.scan").first.inner_text().strip()
    patient_ref = page.locator("#patient-ref").inner_text().strip()
    page.locator("#chain-links").get_by_role("link", name="pack 1").click()
    expect(page.locator("h1")).to_contain_text("Chain of identity")
    expect(page.locator("#hand-overs")).to_contain_text("No hand-over yet")
    _shot(page, tmp_path, "6-chain-empty")
    for src, dst in (
        ("collection", "micro_factory"),
        ("micro_factory", "cryostore"),
        ("cryostore", "infusion"),
    ):
        form = page.locator("#hand-over-form")
        # the form offers the next step of the family's chain
        expect(form.get_by_label("From step")).to_have_value(src)
        expect(form.get_by_label("To step")).to_have_value(dst)
        form.get_by_label("Scan by the giving side").fill(scan)
        form.get_by_label("Scan by the receiving side").fill(scan)
        # the collection's DIN as each side reads it off the bag (as scanned, and as typed
        # with its keyboard check character A: ISBT 128 ST-001 Appendix A)
        form.get_by_label("Chain identifier read by the giving side").fill(DIN_A)
        form.get_by_label("Chain identifier read by the receiving side").fill(DIN_TYPED)
        bedside = form.get_by_label("Patient, at the bedside")
        if dst == "infusion":  # the last step: the patient is identified at the bedside
            bedside.fill(patient_ref)
        else:
            expect(bedside).to_have_count(0)
        form.get_by_role("button", name="Record the hand-over").click()
        checked = "; patient checked" if dst == "infusion" else ""
        expect(page.locator("#chain-flash")).to_have_text(
            f"Hand-over {src} → {dst}: accepted{checked}"
        )
    expect(page.locator('#hand-overs tr[data-outcome="accepted"]')).to_have_count(3)
    expect(page.locator("#hand-over-form")).to_have_count(0)  # the chain's last step reached
    _shot(page, tmp_path, "7-hand-overs")

    storage = page.locator("#storage-form")
    storage.get_by_label("Reading").fill("-180")
    storage.get_by_role("button", name="Record the reading").click()
    expect(page.locator("#chain-flash")).to_have_text(
        "Storage reading -180 Cel: within the storage rule"
    )
    expect(page.locator('#storage-log tr[data-excursion="no"]')).to_have_count(1)

    prepare = page.locator("#prepare-form")
    prepare.get_by_role("textbox").fill(scan)
    prepare.get_by_role("button", name="Prepared for use").click()
    expect(page.locator("#chain-flash")).to_contain_text("Prepared for use; use by")
    # prepared now (the manual clock stands still), to be used within 180 min
    now = seeded.clock.now().astimezone(UTC)
    in_use = page.locator("#in-use")
    expect(in_use).to_contain_text(f"Prepared at {now:%Y-%m-%d %H:%M}")
    expect(in_use).to_contain_text(f"use by {now + timedelta(minutes=180):%Y-%m-%d %H:%M}")
    _shot(page, tmp_path, "8-chain-prepared")

    page.get_by_role("link", name="Dispense (administration hand-over)").click()
    page.get_by_label("Scan the pack").fill(scan)
    page.get_by_label("Patient: NHS number").fill(patient_ref)
    page.get_by_role("button", name="Check and dispense").click()
    expect(page.locator("#result")).to_contain_text("the order is complete")
    _shot(page, tmp_path, "9-dispensed")
    page.goto(f"/orders/{order_id}")
    expect(page.locator("#order-status")).to_have_text("dispensed")

    # days later the QP enters the failing sterility result on the batch page
    clock.advance(4 * 24 * 3600)
    _login(page, "qp")
    page.goto(f"/batches/{batch_id}")
    followup = page.locator('[data-followup="sterility"] form.followup-form')
    followup.get_by_label("Result").select_option("fail")
    followup.get_by_label("Detail").fill("Ph. Eur. 2.6.27: growth in the aerobic bottle on day 4")
    followup.get_by_label("User ID").fill("qp")
    followup.get_by_label("Password").fill(fh.TEST_PASSWORD)
    followup.get_by_role("button", name="Enter the result").click()
    expect(page.locator('[data-followup="sterility"]').first).to_contain_text("failed")
    _shot(page, tmp_path, "10-sterility-failed")

    # the clinician reads the notice and acknowledges it
    _login(page, "clinician")
    _nav(page).get_by_role("link", name="Notices").click()
    notice = page.locator(f'#notices tr[data-order="{order_id}"]')
    expect(notice).to_have_count(1)
    expect(notice).to_contain_text(number)
    expect(notice.locator("td.message")).to_contain_text("terility")
    expect(notice).to_have_class("unread")
    _shot(page, tmp_path, "11-notice")
    notice.get_by_role("button", name="Acknowledge").click()
    expect(page.locator("#notice-flash")).to_contain_text("acknowledged")
    expect(notice).to_have_class("acknowledged")
    _shot(page, tmp_path, "12-notice-acknowledged")


def test_an_out_of_specification_batch_is_released_exceptionally_in_the_browser(
    page: Page, seeded: App, tmp_path: Path
) -> None:
    order_id = _prescribed(seeded, 22)
    # the culture grows at 40 % of its rate: harvested short of its dose at 12 days
    batch_id = _made(seeded, order_id, Fault("slow_growth", 0.6))
    fh.prepare_release(seeded, batch_id)
    number = fh.batch(seeded, batch_id).batch_number

    # the treating physician asks, e-signed, from the order page's link
    _login(page, "clinician")
    page.goto(f"/orders/{order_id}")
    page.get_by_role("link", name=f"Exceptional release of batch {number}").click()
    expect(page.locator("h1")).to_contain_text(f"Exceptional release: batch {number}")
    expect(page.locator("ul.checks li.fail")).not_to_have_count(0)
    expect(page.locator("#exceptional-certify-form")).to_have_count(0)
    form = page.locator("#exceptional-request-form")
    form.get_by_label("Exceptional circumstances").fill(
        "no other treatment option; the patient cannot wait for a new run"
    )
    form.get_by_label("User ID").fill("clinician")
    form.get_by_label("Password").fill(fh.TEST_PASSWORD)
    _shot(page, tmp_path, "1-exceptional-request")
    form.get_by_role("button", name="Sign the request").click()
    expect(page.locator("#order-flash")).to_have_text("Exceptional release: requested (signed)")
    assert fh.batch(seeded, batch_id).status == "completed"  # the request alone releases nothing
    _shot(page, tmp_path, "2-requested")

    # the QP certifies it on the same page
    _login(page, "qp")
    page.goto(f"/orders/{order_id}")
    page.get_by_role("link", name=f"Exceptional release of batch {number}").click()
    expect(page.locator("#qp-waiting")).to_be_visible()
    form = page.locator("#exceptional-certify-form")
    form.get_by_label("Reason").fill("the physician's request reviewed; no alternative")
    form.get_by_label("User ID").fill("qp")
    form.get_by_label("Password").fill(fh.TEST_PASSWORD)
    _shot(page, tmp_path, "3-certify")
    form.get_by_role("button", name="Sign the exceptional release").click()
    expect(page.locator("#exceptional-flash")).to_contain_text(
        "Exceptional release: batch released"
    )
    expect(page.locator("#qp-certified")).to_be_visible()
    expect(page.locator("#review-status")).to_have_text("released")
    _shot(page, tmp_path, "4-certified")
    assert fh.batch(seeded, batch_id).status == "released"
