"""The demo's day in the browser only (issue 13 "Done when"), for the hydrocortisone product, in
a real browser (Debian Chromium through Playwright), on SQLite and PostgreSQL:

1. the clinician enters a prescription in the web form (2 mg, 3 a day for 7 days: 21 units);
2. the simulated machine makes the batch (the network runner, as the other browser tests: the
   machine is simulated, nobody clicks it); another site's operator does not see it on his
   worklist, and a signature he forges from there is refused on a styled page;
3. the operator signs the batch's steps from the worklist, in the master file's order: line
   clearance and the filament loaded "before the machine starts"; the filament's entry is not
   offered to him to verify; the visual inspection "after the run" waits for its verification;
4. the pharmacist verifies the critical entry from her worklist as a second person; the
   operator then signs the inspection;
5. the QP finds the audit trail to review on the worklist, reviews it on the batch page, finds
   the batch ready to certify and releases it from /release;
6. the pharmacist dispenses a pack at /dispense.

No API or CLI call in between: each person acts through the pages. Screenshots per role in the
test's folder (and in NEARFAB_SCREENSHOTS when set), named in docs/user-guide.md."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.demo import HYDROCORTISONE

try:
    from playwright.sync_api import Page, expect
except ImportError:  # a user clone without the dev extras; CI must have it
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(
        "Playwright for Python is not installed (pip install -e '.[dev]')", allow_module_level=True
    )

from tests.e2e.browser_forms import assert_refusal_page, forge

seeded = fh.seeded  # the live server serves this seeded copy (SQLite and PostgreSQL)
pytestmark = [pytest.mark.browser]


def _login(page: Page, username: str) -> None:
    page.context.clear_cookies()
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(fh.TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def _shot(page: Page, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("NEARFAB_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def _worklist(page: Page) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Worklist").click()
    expect(page).to_have_url(re.compile(r"/worklist$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Worklist")


def _sign(page: Page, batch_id: str, code: str, username: str, **entry: str) -> None:
    row = page.locator(f'#steps-due tr[data-batch="{batch_id}"][data-step="{code}"]')
    row.get_by_text("Sign this step…").click()
    for name, value in entry.items():
        row.locator(f'input[name="entry.{name}"]').fill(value)
    row.get_by_label("User ID").fill(username)
    row.get_by_label("Password").fill(fh.TEST_PASSWORD)
    row.get_by_role("button", name="Sign step").click()
    expect(page.get_by_role("status")).to_contain_text(f"Step {code}: signed")


def test_prescription_to_dispense_through_the_worklist(
    page: Page, seeded: App, tmp_path: Path
) -> None:
    # 1. the clinician prescribes in the form
    _login(page, "clinician")
    menu = page.get_by_role("navigation", name="Main")
    expect(menu.get_by_role("link", name="Worklist")).to_have_count(0)  # signs nothing
    menu.get_by_role("link", name="Orders").click()
    page.get_by_role("link", name="New prescription…").click()
    page.get_by_label("Medicine").select_option(HYDROCORTISONE)
    page.get_by_label("NHS number").fill("943 476 5919")
    page.get_by_label("Name").fill("Ada Example")
    page.get_by_label("Date of birth").fill("2018-03-04")
    page.get_by_label("Dose", exact=True).fill("2")
    page.get_by_label("Doses a day").fill("3")
    page.get_by_label("Duration (days)").fill("7")
    _shot(page, tmp_path, "clinician-prescription")
    page.get_by_role("button", name="Send prescription").click()
    expect(page).to_have_url(re.compile(r"/orders/ord_"))
    order_id = page.url.rsplit("/", 1)[1]

    # 2. the network plans it and opens its batch; the machine waits for the steps before it
    summary = seeded.runner.run_until_idle()
    assert summary.batches_completed == [], summary.to_dict()
    with seeded.uow() as uow:
        (batch,) = seeded.production.batches(uow, order_id=order_id)
        batch_id, number, site = batch.id, batch.batch_number, batch.site_id
        assert batch.handed_over_at is None  # not handed to the machine
    assert "line_clearance" in summary.blocked.get(batch_id, ""), summary.blocked
    assert site == fh.site_id(seeded, "GSTT-PH"), "made elsewhere than the ordering site"

    # another site's operator: not on his worklist; a signature forged from it (his session,
    # his page's CSRF token) is refused on a styled page, as for an unknown batch
    _login(page, "operator-man")
    _worklist(page)
    expect(page.locator(f'[data-batch="{batch_id}"]')).to_have_count(0)
    answer = forge(
        page,
        f"/batches/{batch_id}/steps/line_clearance/sign",
        {"return_to": "worklist", "username": "operator-man", "password": fh.TEST_PASSWORD},
    )
    assert_refusal_page(page, answer, 404, "Worklist")
    expect(page.locator("#error")).to_contain_text("belongs to a site you do not see")
    _shot(page, tmp_path, "other-site-operator-refused")
    with seeded.uow() as uow:
        assert seeded.production.signoffs(uow, batch_id) == []

    # 3. the operator signs from the worklist, in the master file's order
    _login(page, "operator")
    _worklist(page)
    due = page.locator(f'#steps-due tr[data-batch="{batch_id}"]')
    expect(due).to_have_count(1)
    expect(due).to_have_attribute("data-step", "line_clearance")
    expect(due).to_contain_text("before the machine starts")
    expect(due).to_contain_text(number)
    _shot(page, tmp_path, "operator-worklist")
    _sign(page, batch_id, "line_clearance", "operator")
    expect(due).to_have_attribute("data-step", "filament_loaded")
    expect(due).to_contain_text("before the machine starts")
    _sign(
        page,
        batch_id,
        "filament_loaded",
        "operator",
        filament_lot=batch.material_lot_number,
        mass_loaded_g="12.5",
    )
    expect(due).to_have_count(0)  # the inspection waits for the second person
    waiting = page.locator(f'#waiting li[data-batch="{batch_id}"]')
    expect(waiting).to_contain_text("second person")
    expect(page.locator(f'#to-verify tr[data-batch="{batch_id}"]')).to_have_count(0)
    _shot(page, tmp_path, "operator-waiting-for-verification")

    # 4. the pharmacist verifies the critical entry as a second person
    _login(page, "pharmacist")
    _worklist(page)
    entry = page.locator(f'#to-verify tr[data-batch="{batch_id}"][data-step="filament_loaded"]')
    expect(entry).to_contain_text("Olu Operator")
    expect(entry).to_contain_text("12.5 g")
    _shot(page, tmp_path, "pharmacist-worklist")
    entry.get_by_text("Verify this entry…").click()
    entry.get_by_label("User ID").fill("pharmacist")
    entry.get_by_label("Password").fill(fh.TEST_PASSWORD)
    entry.get_by_role("button", name="Verify entry").click()
    expect(page.get_by_role("status")).to_contain_text("entry verified")
    expect(page.locator(f'#to-verify tr[data-batch="{batch_id}"]')).to_have_count(0)

    # the steps before the start signed and verified: the simulated machine makes the batch
    summary = seeded.runner.run_until_idle()
    assert summary.batches_completed == [batch_id], summary.to_dict()

    _login(page, "operator")
    _worklist(page)
    expect(due).to_have_attribute("data-step", "visual_inspection")
    expect(due).to_contain_text("after the run")
    _sign(page, batch_id, "visual_inspection", "operator", units_rejected="0")
    expect(due).to_have_count(0)
    _shot(page, tmp_path, "operator-done")

    # 5. the QP: the audit trail to review, then ready to certify, released from /release
    _login(page, "qp")
    _worklist(page)
    review = page.locator(f'#to-review li[data-batch="{batch_id}"]')
    expect(review).to_contain_text("audit trail")
    expect(page.locator(f'#to-certify li[data-batch="{batch_id}"]')).to_have_count(0)
    _shot(page, tmp_path, "qp-worklist-review")
    review.get_by_role("link", name="Read and review the audit trail").click()
    form = page.locator("#review-form")
    form.get_by_label("User ID").fill("qp")
    form.get_by_label("Password").fill(fh.TEST_PASSWORD)
    form.get_by_role("button", name="Mark audit trail reviewed").click()
    expect(page.locator("#review-status")).to_contain_text("current")
    _worklist(page)
    expect(page.locator(f'#to-certify li[data-batch="{batch_id}"]')).to_be_visible()
    expect(page.locator(f'#to-review li[data-batch="{batch_id}"]')).to_have_count(0)
    _shot(page, tmp_path, "qp-worklist-certify")
    page.get_by_role("link", name="Certify in the release queue").click()
    expect(page).to_have_url(re.compile(r"/release$"))
    row = page.locator(f'#queue tr[data-batch="{batch_id}"]')
    row.get_by_role("button", name="Sign…").click()
    dialog = page.locator(f"#sign-{batch_id}")
    dialog.get_by_label("Decision").select_option("release")
    dialog.get_by_label("Meaning").fill("QP release: batch record reviewed")
    dialog.get_by_label("User ID").fill("qp")
    dialog.get_by_label("Password").fill(fh.TEST_PASSWORD)
    _shot(page, tmp_path, "qp-release-sign")
    dialog.get_by_role("button", name="Sign", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("released")

    # 6. the pharmacist dispenses a pack to the patient
    _login(page, "pharmacist")
    page.goto(f"/orders/{order_id}")
    expect(page.locator("#order-status")).to_have_text("released")
    scan = page.locator("code.scan").first.inner_text().strip()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dispense").click()
    page.get_by_label("Scan the pack's DataMatrix").fill(scan)
    page.get_by_label("Patient:").fill("943 476 5919")
    page.get_by_label("Date of birth").fill("2018-03-04")
    page.get_by_role("button", name="Check and dispense").click()
    expect(page.get_by_role("status")).to_contain_text("Dispensed pack")
    expect(page.get_by_role("alert")).to_have_count(0)
    _shot(page, tmp_path, "pharmacist-dispensed")
    with seeded.uow() as uow:
        made = seeded.production.get(uow, batch_id)
        assert [s.status for s in seeded.production.step_states(uow, made)] == [
            "performed",
            "verified",
            "recorded",
            "performed",
        ]
