"""Signing batch-record steps on the batch page, in a real browser (Debian Chromium through
Playwright): the operator is refused a step out of master-file order (21 CFR 11.10(f)), signs
the steps in order, a pharmacist verifies the critical entry as a second person (Annex 11 §6),
and the QP marks the audit trail reviewed (Annex 11 §9), after which nothing blocks release.
Each signature shows the printed name, the date and time with its zone, and the meaning
(21 CFR 11.50). SQLite only: the services are tested on both databases."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from tests import flow_helpers as fh

from nearfab.bootstrap import App

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


def _batch_at_gstt(app: App) -> str:
    for _ in range(6):
        batch_id = fh.make_batch(app, ready=False)
        if fh.batch(app, batch_id).site_id == fh.site_id(app, "GSTT-PH"):
            return batch_id
    pytest.fail("the planner never chose St Thomas' for a batch")


def _login(page: Page, username: str) -> None:
    page.context.clear_cookies()
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(fh.TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def _sign_step(page: Page, code: str, username: str, **entry: str) -> None:
    row = page.locator(f'#master-steps tr[data-step="{code}"]')
    row.get_by_text("Sign this step…").click()
    for name, value in entry.items():
        row.locator(f'input[name="entry.{name}"]').fill(value)
    row.get_by_label("User ID").fill(username)
    row.get_by_label("Password").fill(fh.TEST_PASSWORD)
    row.get_by_role("button", name="Sign step").click()


def test_signing_steps_on_the_batch_page(page: Page, seeded: App, tmp_path: Path) -> None:
    batch_id = _batch_at_gstt(seeded)

    _login(page, "operator")
    page.goto(f"/batches/{batch_id}")
    steps = page.locator("#master-steps")
    expect(steps.locator("tbody tr")).to_have_count(4)
    expect(steps.locator('tr[data-step="run_finished"]')).to_contain_text("recorded")

    # out of order: refused, on the page, and nothing signed
    _sign_step(page, "visual_inspection", "operator", units_rejected="0")
    expect(page.locator("#error")).to_contain_text("out_of_sequence")
    expect(page.locator("#error")).to_contain_text("line_clearance")
    expect(steps.locator('tr[data-step="visual_inspection"]')).to_contain_text("pending")

    _sign_step(page, "line_clearance", "operator")
    expect(page.locator("#message")).to_contain_text("line_clearance: signed")
    line = steps.locator('tr[data-step="line_clearance"]')
    expect(line).to_contain_text("Olu Operator")
    expect(line).to_contain_text("UTC")
    expect(line).to_contain_text("“performed by”")

    _sign_step(
        page,
        "filament_loaded",
        "operator",
        filament_lot="HC-FIL-2.5-GSTT-PH-001",
        mass_loaded_g="12.5",
    )
    filament = steps.locator('tr[data-step="filament_loaded"]')
    expect(filament).to_contain_text("awaiting verification")
    expect(filament).to_contain_text("12.5 g")
    expect(filament.get_by_text("Verify this entry…")).to_have_count(0)  # not the performer
    page.screenshot(path=str(tmp_path / "operator-signed.png"), full_page=True)

    # the pharmacist verifies the critical entry as a second person, then inspects
    _login(page, "pharmacist")
    page.goto(f"/batches/{batch_id}")
    filament.get_by_text("Verify this entry…").click()
    filament.get_by_label("User ID").fill("pharmacist")
    filament.get_by_label("Password").fill(fh.TEST_PASSWORD)
    filament.get_by_role("button", name="Verify entry").click()
    expect(page.locator("#message")).to_contain_text("entry verified")
    expect(filament).to_contain_text("Phil Harmon")
    expect(filament).to_contain_text("“verified by”")
    _sign_step(page, "visual_inspection", "pharmacist", units_rejected="1")
    expect(steps.locator('tr[data-step="visual_inspection"]')).to_contain_text("performed")

    # the QP reads the trail and marks it reviewed; then nothing blocks release
    _login(page, "qp")
    page.goto(f"/batches/{batch_id}")
    expect(page.locator("#release-blockers")).to_contain_text("audit trail not reviewed")
    expect(page.locator("#audit-trail")).to_be_attached()
    form = page.locator("#review-form")
    form.get_by_label("User ID").fill("qp")
    form.get_by_label("Password").fill(fh.TEST_PASSWORD)
    form.get_by_role("button", name="Mark audit trail reviewed").click()
    expect(page.locator("#message")).to_contain_text("Audit trail: marked reviewed")
    expect(page.locator("#review-status")).to_contain_text("Quentin Parr (QP)")
    expect(page.locator("#review-status")).to_contain_text("current")
    expect(page.locator("#release-blockers")).to_contain_text("you may certify it")
    page.screenshot(path=str(tmp_path / "qp-reviewed.png"), full_page=True)
    with seeded.uow() as uow:
        batch = seeded.production.get(uow, batch_id)
        assert seeded.quality.records.release_blockers(uow, fh.actor(seeded, "qp"), batch) == []
        assert [s.status for s in seeded.production.step_states(uow, batch)] == [
            "performed",
            "verified",
            "recorded",
            "performed",
        ]
