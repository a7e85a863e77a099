"""The follow-up of a custody alert in a real browser (Debian Chromium through Playwright).

GSTT-PH's pharmacist opens the custody alerts, finds the alert the replication code raised
for a pack dispensed then recalled, and records each step with the alert's own form:
acknowledge, patient contacted (with a note), an attempt to close without naming the outcome
(refused, the field named, the note kept), then closed as recovered. The open filter no
longer lists it; the closed filter shows it with its history. SQLite only: the service, API
and page tests (tests/custody/test_alert_follow_up.py) cover PostgreSQL.
"""

from __future__ import annotations

import os
import re

import pytest
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch
from tests.custody.test_alerts_page import Alerted, alerted, seeded

from nearfab.bootstrap import App
from nearfab.custody import CustodyAlert

try:
    from playwright.sync_api import Page, expect
except ImportError:  # a user clone without the dev extras; CI must have it
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(
        "Playwright for Python is not installed (pip install -e '.[dev]')", allow_module_level=True
    )

flushed_verification_log = ch.flushed_verification_log
__all__ = [
    "alerted",
    "seeded",
]  # the fixtures, imported for pytest (the live server serves `seeded`)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("seeded", ["sqlite"], indirect=True),
]


def _login(page: Page, username: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(fh.TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def _record(page: Page, alert_id: str, step: str, note: str = "", outcome: str = "") -> None:
    form = page.locator(f'form[action="/custody/alerts/{alert_id}"]')
    form.get_by_label("Next step").select_option(label=step)
    if outcome:
        form.get_by_label("Outcome (when closing)").select_option(label=outcome)
    if note:
        form.locator('textarea[name="note"]').fill(note)
    form.get_by_role("button", name="Record").click()


def test_a_pharmacist_follows_an_alert_up_in_the_browser(
    page: Page, seeded: App, alerted: Alerted
) -> None:
    a = alerted.alert_id
    _login(page, "pharmacist")
    page.goto("/custody/alerts")
    row = page.locator(f'tr[data-alert="{a}"]')
    expect(row.locator(".alert-status")).to_contain_text("Open: nobody has taken it on yet")
    expect(row.locator(".patient")).to_have_text(alerted.patient_ref)

    _record(page, a, "Acknowledge")
    expect(page.locator("#alert-message")).to_have_text(f"Alert {a}: Acknowledged.")
    expect(row.locator(".alert-status")).to_contain_text("Acknowledged")

    _record(page, a, "Patient contacted", note="phoned the patient's mother")
    expect(row.locator(".alert-step")).to_have_count(2)

    # closing without the outcome: refused, the field named, the note still there
    _record(page, a, "Close", note="pack brought back by the mother")
    expect(page.locator("#error")).to_contain_text("closing an alert needs its outcome")
    expect(page.locator("#error-field")).to_have_text("(field: outcome)")
    form = page.locator(f'form[action="/custody/alerts/{a}"]')
    expect(form.locator('textarea[name="note"]')).to_have_value("pack brought back by the mother")

    _record(
        page, a, "Close", note="pack brought back by the mother", outcome="the pack was recovered"
    )
    expect(page.locator("#alert-message")).to_have_text(f"Alert {a}: Closed.")
    page.goto("/custody/alerts?status=open")
    expect(page.locator(f'tr[data-alert="{a}"]')).to_have_count(0)
    page.locator("#alert-filter").get_by_label("Show").select_option("closed")
    page.locator("#alert-filter").get_by_role("button", name="Show").click()
    closed = page.locator(f'tr[data-alert="{a}"]')
    expect(closed.locator(".alert-status")).to_contain_text("Closed: the pack was recovered")
    expect(closed.locator(".alert-step")).to_have_count(3)
    expect(closed.locator(".note").last).to_have_text("pack brought back by the mother")
    with seeded.uow() as uow:
        alert = uow.session.get(CustodyAlert, a)
        assert alert is not None and alert.status == "closed"
