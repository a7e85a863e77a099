"""The plan's Gantt page in a real browser (Debian Chromium through Playwright).

A planner logs in, opens Plan, and sees the Gantt drawn by the locally served plotly.js: one bar
per planned order on its site and machine, the late one in red; the order with no place and
the late one are listed with why. Nobody logged in is sent to the login page. No request
leaves the server (hospitals run offline). Screenshots go to the test's tmp_path. SQLite only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from tests import flow_helpers as fh

from nearfab.bootstrap import App

from .test_planning_interfaces import arrange

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
LATE_FILL = "rgb(201, 42, 42)"  # #c92a2a, the Gantt's late colour


def _login(page: Page, username: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(fh.TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))
    expect(page.locator("header .who")).to_contain_text("Log out")


def test_planner_sees_the_gantt_offline(
    page: Page, seeded: App, live_server: str, tmp_path: Path
) -> None:
    orders = arrange(seeded)
    with seeded.uow() as uow:
        seeded.scheduling.plan(
            uow, fh.actor(seeded, "planner"), reason="ward round", time_limit_s=2
        )
    requests: list[str] = []
    failures: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on(
        "response", lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto("/plan")
    expect(page).to_have_url(re.compile(r"/login\?next=/plan$"))

    _login(page, "planner")
    page.get_by_role("link", name="Plan", exact=True).click()
    expect(page).to_have_url(re.compile(r"/plan$"))
    page.wait_for_load_state("networkidle")
    expect(page.locator("main h1")).to_have_text("Network plan")

    gantt = page.locator("#gantt.js-plotly-plot")
    expect(gantt).to_be_visible()
    bars = gantt.locator(".barlayer .point path")
    expect(bars).to_have_count(2)  # the on-time and the late order; propranolol has no place
    fills = [bars.nth(i).evaluate("el => getComputedStyle(el).fill") for i in range(bars.count())]
    assert fills.count(LATE_FILL) == 1, fills
    for i in range(bars.count()):
        box = bars.nth(i).bounding_box()
        assert box is not None and box["width"] > 1 and box["height"] > 1
    # every machine of the network has its row, the idle ones too (the demo's five)
    ticks = sorted(gantt.locator(".ytick text").all_text_contents())
    assert ticks == [
        "GSTT-PH · GSTT micro-factory 1",
        "GSTT-PH · GSTT printer A",
        "GSTT-PH · GSTT printer B",
        "MAN-PH · MAN printer A",
        "MOB-1 · Mobile printer",
    ]
    expect(gantt.locator(".legendtext")).to_have_text(["on time", "late"])

    unplaced = page.locator(f'#explanations tr[data-order="{orders["unplaced"]}"]')
    expect(unplaced).to_contain_text("every qualified machine is out of service")
    expect(unplaced).to_contain_text("GSTT printer A: machine is maintenance")
    late = page.locator(f'#explanations tr[data-order="{orders["late"]}"]')
    expect(late).to_have_attribute("data-status", "late")
    expect(late).to_contain_text(re.compile(r"late \d+ min"))
    page.screenshot(path=str(tmp_path / "plan.png"), full_page=True)

    assert errors == []
    assert failures == []
    assert any(u.endswith("/static/vendor/plotly.min.js") for u in requests)
    assert [u for u in requests if not u.startswith(live_server + "/")] == []
