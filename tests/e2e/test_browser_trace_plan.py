"""Trace and plan pages as people read them, in a real browser (Debian Chromium, Playwright;
issue 13 items 7 and 8).

Trace: a site pharmacist and the auditor trace a dispensed pack back and its material lot
forward, and read printed names where the records hold user and site ids, times in the site's
local time with its zone (the site is set to Paris: January is CET, UTC+1, by hand), a timeline
in words and an EPCIS table that fits a 1280 px window, with each long identifier's full value
one click away. A planner, who may not trace, is offered no Trace link and gets a styled page.

Plan: the planner sees a row for every machine of the network (idle ones too), labelled jobs,
the late order marked, a line at the current time; moves an order forward, unschedules one and
replans, each with a reason that lands in the audit trail. A site pharmacist sees their own
site's machines and may act on their site's orders; the auditor sees everything and is offered
nothing. Forged posts by the auditor (a role that may not) and by another site's pharmacist
are refused with styled pages, and nothing changes.

Screenshots are kept under the run's base temporary folder (screenshots-trace-plan*/).
SQLite only: the services' own tests cover PostgreSQL.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.identity import AuditEntry

try:
    from playwright.sync_api import Page, expect
except ImportError:  # a user clone without the dev extras; CI must have it
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(
        "Playwright for Python is not installed (pip install -e '.[dev]')", allow_module_level=True
    )

seeded = fh.seeded  # the live server serves this seeded copy
flushed_verification_log = ch.flushed_verification_log
pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("seeded", ["sqlite"], indirect=True),
]
LATE_FILL = "rgb(201, 42, 42)"  # #c92a2a, the Gantt's late colour
CET = timedelta(hours=1)  # Europe/Paris in January: UTC+1, abbreviated CET (no summer time)
# the demo's machines (demo.py MACHINES and the cell-therapy micro-factory), as the Gantt
# labels them: site code · machine name
EVERY_MACHINE = [
    "GSTT-PH · GSTT micro-factory 1",
    "GSTT-PH · GSTT printer A",
    "GSTT-PH · GSTT printer B",
    "MAN-PH · MAN printer A",
    "MOB-1 · Mobile printer",
]
FAR_AWAY = "home:far-away"


@pytest.fixture
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Screenshots kept after the run (a passing test's tmp_path is removed)."""
    return tmp_path_factory.mktemp("screenshots-trace-plan")


def _shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _login(page: Page, username: str) -> None:
    page.context.clear_cookies()
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(fh.TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))
    expect(page.locator("header .who")).to_contain_text("Log out")


def _cet(at: datetime) -> str:
    """A UTC time as a Paris clock reads it in January, by hand (+1 h, CET)."""
    return ((at if at.tzinfo else at.replace(tzinfo=UTC)) + CET).strftime("%Y-%m-%d %H:%M CET")


def _fits(page: Page, selector: str) -> None:
    """Neither the page nor `selector` is wider than the window (no horizontal scrolling)."""
    page_over = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert page_over <= 0, f"the page scrolls sideways by {page_over} px"
    box = page.locator(selector).bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 1280, box
    over = page.locator(selector).evaluate("el => el.scrollWidth - el.clientWidth")
    assert over <= 0, f"{selector} overflows by {over} px"


# --- trace ------------------------------------------------------------------------------------
def test_trace_shows_names_local_times_a_timeline_and_a_table_that_fits(
    page: Page, seeded: App, live_server: str, shots: Path
) -> None:
    seeded.settings.site_time_zones = {"GSTT-PH": "Europe/Paris"}
    batch_id, packs = ch.released_batch(seeded)
    ch.dispense(seeded, packs[0])
    pack = packs[0]
    batch = fh.batch(seeded, batch_id)
    page.set_viewport_size({"width": 1280, "height": 900})

    _login(page, "pharmacist")
    page.locator("header nav").get_by_role("link", name="Trace").click()
    expect(page).to_have_url(re.compile(r"/trace$"))
    page.get_by_label("Pack id, its scanned GS1 data, or a material lot number").fill(pack.id)
    page.get_by_role("button", name="Trace").click()
    result = page.locator("#trace-result")
    expect(result).to_be_visible()

    # printed names (demo.py USERS, SITES) where the records hold ids
    expect(page.locator("#operator")).to_have_text("Olu Operator")
    expect(page.locator("#release")).to_contain_text("by Quentin Parr (QP)")
    expect(page.locator("#dispense")).to_contain_text(
        "by Phil Harmon at St Thomas' Hospital Pharmacy"
    )
    text = result.inner_text()
    assert not re.search(r"\b(usr|site)_[0-9A-Z]{6,}", text), "an id shown where a name goes"

    # local time with its zone: started_at is UTC in the record, CET (+1 h) on the page
    started = _cet(batch.started_at)
    expect(page.locator("#trace-facts")).to_contain_text(f"started {started}")
    assert not re.search(r"\d{2}:\d{2}(:\d{2})? UTC", text), "a time left in UTC"

    # the timeline, in words: what, who, where, when; first the batch start
    steps = page.locator("#timeline li")
    expect(steps.first).to_contain_text(started)
    expect(steps.first).to_contain_text(f"Batch {batch.batch_number} started on GSTT printer A")
    expect(steps.first).to_contain_text("by Olu Operator")
    expect(steps.first).to_contain_text("at St Thomas' Hospital Pharmacy")
    expect(steps.last).to_contain_text("Handed over for patient")
    expect(steps.last).to_contain_text("by Phil Harmon")
    expect(page.locator("#timeline")).to_contain_text("QP decision: released (signed)")
    for shown in page.locator("#timeline time").all_text_contents():
        assert shown.endswith(" CET"), shown  # every step at St Thomas' clock, none in UTC
    for words in ("Made from its material lot", "Serial number assigned", "Dispensed"):
        expect(page.locator("#timeline")).to_contain_text(words)

    # the EPCIS table: events in the order of the pack's life, fits at 1280 px
    rows = page.locator("#trace-events tbody tr")
    expect(rows).to_have_count(4)  # made, commissioned, inspected, dispensed
    expect(rows.first).to_contain_text("Made from its material lot")
    expect(rows.last).to_contain_text("Dispensed")
    expect(rows.first.locator("td.where")).to_contain_text("St Thomas' Hospital Pharmacy")
    _fits(page, "#trace-events")
    _shot(page, shots, "trace-pack-pharmacist")
    # a long identifier shortened; its full value one click away (GS1 Digital Link of the pack)
    full = f"https://id.gs1.org/01/{pack.gtin}/21/{pack.serial}"
    ident = rows.first.locator("td.epcs details").first
    expect(ident.locator("summary")).to_have_text(f"GTIN {pack.gtin} · serial {pack.serial}")
    expect(ident.locator("code.full")).to_be_hidden()
    ident.locator("summary").click()
    expect(ident.locator("code.full")).to_have_text(full)
    _fits(page, "#trace-events")
    _shot(page, shots, "trace-pack-full-identifier")
    # the EPCIS query page's table fits as well
    page.goto(f"/epcis?epc={full}&run=1")
    expect(page.locator("#events tbody tr")).to_have_count(4)
    _fits(page, "#events")
    _shot(page, shots, "epcis-pack-pharmacist")

    # forward from the lot: sites by name, the dispensing time in that site's zone
    page.goto("/trace")
    page.get_by_label("Pack id, its scanned GS1 data, or a material lot number").fill(
        batch.material_lot_number
    )
    page.get_by_label("Forward from a material lot").check()
    page.get_by_role("button", name="Trace").click()
    row = page.locator(f'#trace-units tr[data-unit="{pack.id}"]')
    expect(row.locator("td.made-at")).to_have_text("St Thomas' Hospital Pharmacy")
    expect(row.locator("td.dispensed")).to_contain_text(re.compile(r"\d{2}:\d{2} CET at St Thomas"))
    _fits(page, "#trace-units")
    _shot(page, shots, "trace-lot-pharmacist")

    # the auditor reads the same names
    _login(page, "auditor")
    page.goto(f"/trace?q={pack.id}&kind=pack")
    expect(page.locator("#operator")).to_have_text("Olu Operator")
    expect(page.locator("#release")).to_contain_text("Quentin Parr (QP)")
    _shot(page, shots, "trace-pack-auditor")

    # the planner may not trace: no link, and a styled page (never JSON) at the address
    _login(page, "planner")
    expect(page.locator("header nav").get_by_role("link", name="Trace")).to_have_count(0)
    response = page.goto(f"/trace?q={pack.id}")
    assert response is not None and response.status == 403
    expect(page.locator("main h1")).to_have_text("Not allowed")
    assert not page.locator("body").inner_text().lstrip().startswith("{")
    _shot(page, shots, "trace-planner-refused")


# --- plan -------------------------------------------------------------------------------------
def _arrange(app: App) -> dict[str, str]:
    """Two hydrocortisone orders of St Thomas' made on its own printers (the Manchester and
    mobile printers are in maintenance): one on time, one late (five days' transport to a
    far-away home, three days' lead time); planned by the planner, then scheduled."""
    admin, planner = fh.actor(app, "admin"), fh.actor(app, "planner")
    on_time, late = fh.submit(app), fh.submit(app)
    for name in ("MAN printer A", "Mobile printer"):
        with app.uow() as uow:
            app.network.set_machine_status(
                uow, admin, fh.machine_id(app, name), "maintenance", reason="annual PM"
            )
    planning = app.scheduling.planning
    assert planning is not None
    with app.uow() as uow:
        for site in app.network.list_sites(uow):
            planning.set_transport(uow, planner, site.id, FAR_AWAY, 5 * 24 * 60)
        planning.set_priority(uow, planner, late, "urgent", deliver_to=FAR_AWAY)
        uow.commit()
    with app.uow() as uow:
        app.scheduling.plan(uow, planner, reason="ward round", time_limit_s=2)
    for order_id in (on_time, late):  # as the network runner does: each gets its job
        fh.schedule(app, order_id)
    return {"on_time": on_time, "late": late}


def _patient_ref(app: App, order_id: str) -> str:
    with app.uow() as uow:
        order = app.orders.get(uow, order_id)
        return app.orders.patient(uow, order.patient_id).ref


def _audit(app: App, entity_type: str, entity_id: str | None = None) -> list[AuditEntry]:
    with app.uow() as uow:
        stmt = select(AuditEntry).where(AuditEntry.entity_type == entity_type)
        if entity_id is not None:
            stmt = stmt.where(AuditEntry.entity_id == entity_id)
        rows = list(uow.session.scalars(stmt.order_by(AuditEntry.id)))
        for r in rows:
            uow.session.expunge(r)
        return rows


def _gantt(page: Page) -> Any:
    page.goto("/plan")
    page.wait_for_load_state("networkidle")
    gantt = page.locator("#gantt.js-plotly-plot")
    expect(gantt).to_be_visible()
    return gantt


def _ticks(gantt: Any) -> list[str]:
    return sorted(gantt.locator(".ytick text").all_text_contents())


def test_planner_reads_the_gantt_and_acts_with_reasons(
    page: Page, seeded: App, live_server: str, shots: Path
) -> None:
    seeded.settings.time_zone = "Europe/Paris"
    orders = _arrange(seeded)
    now = seeded.clock.now()
    page.set_viewport_size({"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    _login(page, "planner")
    page.locator("header nav").get_by_role("link", name="Plan", exact=True).click()
    gantt = _gantt(page)
    # a row for every machine, the three idle ones too
    assert _ticks(gantt) == EVERY_MACHINE
    bars = gantt.locator(".barlayer .point path")
    expect(bars).to_have_count(2)
    fills = [bars.nth(i).evaluate("el => getComputedStyle(el).fill") for i in range(2)]
    assert fills.count(LATE_FILL) == 1, fills
    # labelled jobs: medication and the patient's reference; the late one says so
    labels = gantt.locator(".barlayer .point text").all_text_contents()
    on_time_ref, late_ref = (
        _patient_ref(seeded, orders["on_time"]),
        _patient_ref(seeded, orders["late"]),
    )
    assert any("Hydrocortisone" in t and on_time_ref in t for t in labels), labels
    assert any(t.startswith("LATE ") and late_ref in t for t in labels), labels
    # a line at the current time, labelled in the network's zone (Paris, CET by hand)
    expect(gantt.locator(".shapelayer path")).to_have_count(1)
    expect(gantt.locator(".annotation-text")).to_have_text(
        "now " + (now + CET).strftime("%H:%M") + " CET"
    )
    expect(gantt.locator(".xtitle")).to_have_text("Europe/Paris (CET)")
    # the rows in words too: the two printers in maintenance have no job
    page.locator("#machines summary").click()
    idle = page.locator("#machines tbody tr", has_text="maintenance")
    expect(idle).to_have_count(2)
    expect(idle.first).to_contain_text("none")
    late_row = page.locator(f'#jobs tr.late[data-order="{orders["late"]}"]')
    expect(late_row).to_contain_text(re.compile(r"late \d+ d \d+ h"))
    _fits(page, "#jobs")
    _shot(page, shots, "plan-planner")

    # move the on-time order forward, with a reason
    row = page.locator(f'#jobs tr[data-order="{orders["on_time"]}"]')
    row.get_by_label(f"Reason to move {orders['on_time']} forward").fill("ward needs it today")
    row.get_by_role("button", name="Move forward").click()
    expect(page).to_have_url(re.compile(r"/plan"))
    expect(page.locator("#plan-summary")).to_contain_text(
        "Version 2 · urgent order · ward needs it today"
    )
    version = _audit(seeded, "plan_version")[-1]
    assert version.reason == "ward needs it today" and version.new["trigger"] == "urgent_order"
    priority = _audit(seeded, "order_planning", orders["on_time"])[-1]
    assert priority.new["priority"] == "urgent"
    expect(page.locator(f'#jobs tr[data-order="{orders["on_time"]}"]')).to_contain_text("urgent")

    # take the late order off its machine, with a reason: the order is designed again
    row = page.locator(f'#jobs tr[data-order="{orders["late"]}"]')
    row.get_by_label(f"Reason to unschedule {orders['late']}").fill("patient moved to Leeds")
    row.get_by_role("button", name="Unschedule").click()
    row = page.locator(f'#jobs tr[data-order="{orders["late"]}"]')
    expect(row.locator(".unschedule-form")).to_have_count(0)
    expect(row).to_contain_text("urgent · waiting for its job")
    assert fh.order_status(seeded, orders["late"]) == "designed"
    reasons = [e.reason for e in _audit(seeded, "order", orders["late"])]
    assert "patient moved to Leeds" in reasons
    _shot(page, shots, "plan-planner-unscheduled")

    # an empty reason is refused, naming it; nothing is planned
    page.locator("#replan-form input[name=reason]").evaluate("el => el.removeAttribute('required')")
    page.locator("#replan-form").get_by_role("button", name="Replan now").click()
    expect(page.locator("#error")).to_contain_text("reason")
    assert len(_audit(seeded, "plan_version")) == 2

    # replan with a reason: a new version, the order back on a machine
    page.goto("/plan")
    page.locator("#replan-form").get_by_label("Reason for replanning").fill("after Leeds call")
    page.locator("#replan-form").get_by_role("button", name="Replan now").click()
    expect(page.locator("#plan-summary")).to_contain_text("Version 3 · manual · after Leeds call")
    assert _audit(seeded, "plan_version")[-1].reason == "after Leeds call"
    # the unscheduled order has its place again (its job follows when the runner schedules)
    expect(page.locator(f'#jobs tr[data-order="{orders["late"]}"]')).to_have_count(1)
    expect(_gantt(page).locator(".barlayer .point path")).to_have_count(2)
    _shot(page, shots, "plan-planner-replanned")
    assert errors == []

    # the auditor reads the reasons in the audit trail page, by the planner's printed name
    _login(page, "auditor")
    page.goto("/audit?entity_type=plan_version")
    trail = page.locator("main")
    for reason in ("ward needs it today", "after Leeds call"):
        expect(trail).to_contain_text(reason)
    expect(trail).to_contain_text("Priya Planner")
    page.goto(f"/audit?entity_type=order&entity_id={orders['late']}")
    expect(page.locator("main")).to_contain_text("patient moved to Leeds")
    _shot(page, shots, "plan-audit-trail-auditor")


def test_site_pharmacist_and_auditor_see_their_part_and_forged_posts_are_refused(
    page: Page, seeded: App, live_server: str, shots: Path
) -> None:
    orders = _arrange(seeded)
    with seeded.uow() as uow:  # a pharmacist at Manchester, with a password of their own
        seeded.users.create_user(
            uow,
            fh.actor(seeded, "admin"),
            username="pharmacist-man",
            full_name="Pat Manchester",
            roles=["pharmacist"],
            password=fh.TEST_PASSWORD,
            home_site_id=seeded.network.get_site(uow, "MAN-PH").id,
            temporary=False,
        )
    page.set_viewport_size({"width": 1280, "height": 900})

    # St Thomas' pharmacist: their site's machines only, their orders with actions
    _login(page, "pharmacist")
    gantt = _gantt(page)
    assert _ticks(gantt) == [m for m in EVERY_MACHINE if m.startswith("GSTT-PH")]
    expect(gantt.locator(".barlayer .point path")).to_have_count(2)
    expect(gantt.locator(".shapelayer path")).to_have_count(1)
    expect(page.locator(".unschedule-form")).to_have_count(2)
    expect(page.locator(".urgent-form")).to_have_count(1)  # the late one is already urgent
    _shot(page, shots, "plan-pharmacist-gstt")

    # the auditor: the whole network, no action offered
    _login(page, "auditor")
    gantt = _gantt(page)
    assert _ticks(gantt) == EVERY_MACHINE
    for form in ("#replan-form", ".unschedule-form", ".urgent-form"):
        expect(page.locator(form)).to_have_count(0)
    _shot(page, shots, "plan-auditor")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value") or ""
    html = {"Accept": "text/html"}
    for url in (
        "/plan/replan",
        f"/plan/orders/{orders['on_time']}/unschedule",
        f"/plan/orders/{orders['on_time']}/urgent",
    ):
        answer = page.request.post(
            url, form={"reason": "forged", "csrf_token": token}, headers=html
        )
        assert answer.status == 403, (url, answer.status)
        assert "<h1>Not allowed</h1>" in answer.text() and not answer.text().startswith("{")

    # another site's pharmacist: may act on plans, not on St Thomas' orders
    _login(page, "pharmacist-man")
    gantt = _gantt(page)
    assert _ticks(gantt) == ["MAN-PH · MAN printer A"]
    expect(gantt.locator(".barlayer .point path")).to_have_count(0)
    expect(page.locator(".unschedule-form")).to_have_count(0)
    token = page.locator("input[name=csrf_token]").first.get_attribute("value") or ""
    for url in (
        f"/plan/orders/{orders['on_time']}/unschedule",
        f"/plan/orders/{orders['on_time']}/urgent",
    ):
        answer = page.request.post(
            url, form={"reason": "forged", "csrf_token": token}, headers=html
        )
        # another site's order is answered as one that does not exist
        assert answer.status == 404, (url, answer.status)
        assert "no such record" in answer.text() and "<h1>" in answer.text()
    page.goto(f"/plan/orders/{orders['on_time']}/unschedule")  # a GET is no way in either
    _shot(page, shots, "plan-pharmacist-man")

    # and without the form's token nobody acts, not even the planner
    _login(page, "planner")
    answer = page.request.post(
        f"/plan/orders/{orders['on_time']}/unschedule", form={"reason": "x"}, headers=html
    )
    assert answer.status == 403 and "reload the page" in answer.text()

    # nothing changed: both still scheduled, one plan version, no urgent mark added
    assert fh.order_status(seeded, orders["on_time"]) == "scheduled"
    assert fh.order_status(seeded, orders["late"]) == "scheduled"
    assert len(_audit(seeded, "plan_version")) == 1
    assert [e.new["priority"] for e in _audit(seeded, "order_planning", orders["on_time"])] == []
