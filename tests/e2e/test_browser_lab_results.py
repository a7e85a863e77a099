"""Entering a cell batch's laboratory results on the batch page, in a real browser (Debian
Chromium through Playwright): QA types the results, signs, and the release proposal's identity
and purity, endotoxin and mycoplasma lines turn from "no result" to passed; a bad value is
refused on the page naming its field, and nothing is kept. SQLite only: the services are
tested on both databases (tests/quality/test_lab_results.py).

By hand: 0.5 EU/mL × 70 mL ÷ 70 kg = 0.5 EU/kg ≤ 5 EU/kg (Ph. Eur. 5.1.10); CD3+ 0.92 ≥ 0.80."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from tests import flow_helpers as fh
from tests.quality import lab_helpers as lab

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


def _login(page: Page, username: str) -> None:
    page.context.clear_cookies()
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(fh.TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def _fill(page: Page, **results: str) -> None:
    form = page.locator("#lab-results-form")
    if not form.is_visible():
        page.get_by_text("Enter laboratory results (signed by the analyst)").click()
    for key, value in results.items():
        form.locator(f'input[name="result.{key}"]').fill(value)
    form.get_by_label("Method or reference").fill(lab.METHOD)
    form.get_by_label("User ID").fill("pharmacist")
    form.get_by_label("Password").fill(fh.TEST_PASSWORD)
    form.get_by_role("button", name="Sign and enter the results").click()


def test_lab_results_entered_on_the_batch_page(page: Page, seeded: App, tmp_path: Path) -> None:
    lab.with_lab_tests(seeded)
    batch_id = lab.cell_batch(seeded)
    _login(page, "pharmacist")
    page.goto(f"/batches/{batch_id}")
    checks = page.locator("ul.checks")
    expect(checks).to_contain_text("endotoxin: no result")
    expect(checks).to_contain_text("mycoplasma: no result")

    # a viability above 1: refused on the page with the field, nothing entered
    _fill(page, viability="1.5", mycoplasma="negative")
    expect(page.locator("#error")).to_contain_text("lab_results.viability")
    expect(page.locator("table.lab-results")).to_have_count(0)

    _fill(
        page,
        viability="",
        markers='{"CD3+": 0.92}',
        endotoxin_eu_per_ml="0.5",
        mycoplasma="negative",
    )
    expect(page.locator("#message")).to_contain_text("Laboratory results: entered (signed)")
    table = page.locator("table.lab-results")
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(table.locator('tr[data-key="endotoxin_eu_per_ml"]')).to_contain_text("Phil Harmon")
    expect(table.locator('tr[data-key="endotoxin_eu_per_ml"]')).to_contain_text("valid")
    expect(checks.locator("li.check.pass")).to_contain_text(
        ["CD3+ 92.0% ≥ 80.0%", "= 0.500 EU/kg ≤ 5 EU/kg", "mycoplasma: negative"]
    )
    page.screenshot(path=str(tmp_path / "lab-results-entered.png"), full_page=True)
