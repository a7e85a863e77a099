"""The EPCIS and custody-ledger pages in a real browser (Debian Chromium through Playwright).

A QP captures one of GS1's own EPCIS 2.0 example documents by uploading it (a broken copy is
refused field by field first, and nothing is stored), sees the second capture counted as
duplicates, and queries the events back by EPC, bizStep, disposition, time range and location,
following the link to an event's JSON. On the ledger page every site's chain is reported
intact with its head and the control site's anchor; after one ledger row is edited with SQL,
the page names that site, the entry and the reason. SQLite only: the service tests cover
PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.custody import LedgerEntry

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
EXAMPLE = "standards/epcis/JSON/Example_9.6.1-ObjectEvent.jsonld"
SHIPPED = "urn:epc:id:sgtin:0614141.107346.2017"  # in the shipping event only
BOTH = "urn:epc:id:sgtin:0614141.107346.2018"  # shipped, then received


def _login(page: Page, username: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(fh.TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def _query(page: Page, **fields: str) -> Any:
    """Fill the query form (empty fields cleared) and submit; the events table's rows."""
    page.goto("/epcis")
    form = page.locator("#epcis-query")
    for name in ("epc", "bizStep", "disposition", "location", "GE_eventTime", "LT_eventTime"):
        form.locator(f'input[name="{name}"]').fill(fields.get(name, ""))
    form.get_by_role("button", name="Find events").click()
    expect(page.locator("#epcis-results")).to_be_visible()
    return page.locator("#events tbody tr")


def test_capture_and_query_a_gs1_example_document(
    page: Page, seeded: App, shared_data: Path, tmp_path: Path
) -> None:
    example = shared_data / EXAMPLE
    doc = json.loads(example.read_text(encoding="utf-8"))
    n = len(doc["epcisBody"]["eventList"])
    assert n == 2
    _login(page, "qp")
    page.goto("/")
    page.locator("header nav").get_by_role("link", name="EPCIS").click()
    expect(page).to_have_url(re.compile(r"/epcis$"))

    # a broken copy: every schema error by field, nothing stored
    broken = dict(doc, schemaVersion=2)
    broken["epcisBody"] = {"eventList": [dict(doc["epcisBody"]["eventList"][0], action="LOOK")]}
    page.locator('#epcis-capture textarea[name="document"]').fill(json.dumps(broken))
    page.get_by_role("button", name="Capture").click()
    errors = page.locator("#schema-errors")
    expect(errors).to_be_visible()
    expect(errors).to_contain_text("nothing was stored")
    expect(errors.locator("td code")).to_contain_text(["$.schemaVersion"])
    expect(errors).to_contain_text("$.epcisBody.eventList[0].action")
    expect(page.locator("#error")).to_contain_text("not valid")
    page.screenshot(path=str(tmp_path / "epcis-refused.png"), full_page=True)
    expect(_query(page, epc=BOTH)).to_have_count(0)

    # the real document, uploaded: every event stored, then recognised as duplicates
    page.goto("/epcis")
    page.locator('#epcis-capture input[name="file"]').set_input_files(str(example))
    page.get_by_role("button", name="Capture").click()
    expect(page.locator("#stored-count")).to_have_text(str(n))
    expect(page.locator("#duplicate-count")).to_have_text("0")
    page.screenshot(path=str(tmp_path / "epcis-captured.png"), full_page=True)
    page.locator('#epcis-capture input[name="file"]').set_input_files(str(example))
    page.get_by_role("button", name="Capture").click()
    expect(page.locator("#stored-count")).to_have_text("0")
    expect(page.locator("#duplicate-count")).to_have_text(str(n))

    # query it back, one filter at a time
    rows = _query(page, epc=BOTH)
    expect(rows).to_have_count(2)
    expect(page.locator("#event-count")).to_have_text("2 found")
    rows = _query(page, epc=SHIPPED)
    expect(rows).to_have_count(1)
    expect(rows.locator("td.biz-step")).to_have_text("shipping")
    rows = _query(page, bizStep="receiving")
    expect(rows).to_have_count(1)
    expect(rows.locator("td.disposition")).to_have_text("in_progress")
    rows = _query(page, disposition="urn:epcglobal:cbv:disp:in_transit")  # any spelling
    expect(rows).to_have_count(1)
    expect(rows.locator("td.biz-step")).to_have_text("shipping")
    # shipping at 2005-04-04 02:33:31 UTC, receiving at 2005-04-05 02:33:31 UTC
    rows = _query(page, GE_eventTime="2005-04-04T12:00")
    expect(rows).to_have_count(1)
    expect(rows.locator("td.biz-step")).to_have_text("receiving")
    rows = _query(page, GE_eventTime="2005-04-04T00:00", LT_eventTime="2005-04-04T12:00")
    expect(rows).to_have_count(1)
    expect(rows.locator("td.biz-step")).to_have_text("shipping")
    rows = _query(page, location="urn:epc:id:sgln:0012345.11111.0")
    expect(rows).to_have_count(1)
    expect(rows.locator("td.biz-step")).to_have_text("receiving")
    rows = _query(page, epc=BOTH, bizStep="shipping", location="urn:epc:id:sgln:0012345.11111.0")
    expect(rows).to_have_count(0)
    expect(page.locator("#epcis-results")).to_contain_text("No event matches")
    page.goto("/epcis?GE_eventTime=yesterday&run=1")
    expect(page.locator("#error")).to_contain_text("GE_eventTime")

    # the JSON link gives the event as captured
    rows = _query(page, epc=SHIPPED)
    href = rows.get_by_role("link", name="JSON").get_attribute("href")
    assert href is not None
    answer = page.request.get(href)
    assert answer.ok, answer.text()
    event = answer.json()
    assert event["bizStep"] == "shipping"
    assert event["epcList"] == doc["epcisBody"]["eventList"][0]["epcList"]
    page.screenshot(path=str(tmp_path / "epcis-query.png"), full_page=True)


def test_the_ledger_page_reports_each_chain_and_names_a_tampered_entry(
    page: Page, seeded: App, tmp_path: Path
) -> None:
    fh.release(seeded, fh.make_batch(seeded))
    chain = seeded.custody_chain
    with seeded.uow() as uow:
        assert chain.ledger.anchor(uow, fh.actor(seeded, "qp"))
    making = fh.batch(seeded, fh.make_batch(seeded)).site_id  # one more, after the anchor
    with seeded.uow() as uow:
        rows = list(
            uow.session.scalars(
                select(LedgerEntry).where(LedgerEntry.site_id == making).order_by(LedgerEntry.seq)
            )
        )
        uow.session.expunge_all()
    assert len(rows) >= 3
    _login(page, "qp")
    page.locator("header nav").get_by_role("link", name="Ledger").click()
    expect(page).to_have_url(re.compile(r"/ledger$"))
    status = page.locator("#ledger-status")
    expect(status).to_contain_text("Ledger intact")
    site_row = page.locator(f'#chains tr[data-site="{making}"]')
    expect(site_row.locator("td.entries")).to_have_text(str(len(rows)))
    expect(site_row.locator("code.head")).to_have_text(rows[-1].entry_hash)
    expect(site_row.locator("td.anchor")).to_contain_text("matches")
    expect(site_row.locator("td.status")).to_contain_text("intact")
    expect(page.locator("#chains tr.chain")).to_have_count(2)  # the making and control sites
    page.screenshot(path=str(tmp_path / "ledger-ok.png"), full_page=True)

    victim = rows[1]
    data = json.loads(victim.payload)
    data["body"]["tampered"] = True
    with seeded.engine.begin() as conn:
        conn.execute(
            update(LedgerEntry)
            .where(LedgerEntry.id == victim.id)
            .values(payload=json.dumps(data, sort_keys=True, separators=(",", ":")))
        )
    page.reload()
    expect(status).to_contain_text("Ledger broken")
    expect(status).to_contain_text(f"seq {victim.seq} (entry #{victim.id})")
    expect(status).to_contain_text("content changed after it was recorded")
    expect(site_row).to_have_class(re.compile(r"\bbad\b"))
    expect(site_row.locator(".first-bad")).to_have_text(
        f"first bad: seq {victim.seq} (entry #{victim.id}): content changed after it was recorded"
    )
    # every signature checked: the same first bad entry
    page.locator("#ledger-form").get_by_label(re.compile("every entry's signature")).check()
    page.locator("#ledger-form").get_by_role("button", name="Check again").click()
    expect(page).to_have_url(re.compile(r"all_signatures=1"))
    expect(site_row.locator(".first-bad")).to_contain_text(f"seq {victim.seq}")
    page.screenshot(path=str(tmp_path / "ledger-broken.png"), full_page=True)

    # pharmacists dispense; they do not audit the ledger
    context = page.context
    context.clear_cookies()
    _login(page, "pharmacist")
    answer = page.goto("/ledger")
    assert answer is not None and answer.status == 403
    expect(page.locator("#error")).to_be_visible()
