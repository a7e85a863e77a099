"""The monitoring pages in a real browser (Debian Chromium through Playwright).

A nozzle clog on a monitored printer raises alarms; a QP opens Monitoring, follows the run to
its control charts (Plotly, drawn from the locally served plotly.js), clicks a sample on the
T² chart and gets that sample's contribution plot from the page's own JSON endpoint; the alarm
page draws its contribution chart. No request leaves the server (hospitals run offline).
Each page is screenshotted into the test's tmp_path for a person to look at. SQLite only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.production import Fault

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
HYDRO = "MF-HC-PRINTLET"


def _faulty_run(app: App) -> tuple[str, str, list[str]]:
    """3 released batches train SPC and MSPC models; then a clogged nozzle makes a batch."""
    admin, qp = fh.actor(app, "admin"), fh.actor(app, "qp")
    for _ in range(3):
        fh.release(app, fh.make_batch(app))
    for kind in ("spc", "mspc"):
        with app.uow() as uow:
            model = app.monitoring.train(
                uow, admin, kind=kind, master_file_code=HYDRO, machine_type="tablet_printer"
            )
        with app.uow() as uow:
            app.monitoring.approve(
                uow, qp, model.id, password=fh.TEST_PASSWORD, meaning="QP approval"
            )
    printer = fh.machine(app, fh.machine_id(app, "GSTT printer A"))
    app.fleet.inject_fault(printer, Fault("nozzle_clog", severity=0.2, from_unit=5))
    batch_id = fh.make_batch(app)
    with app.uow() as uow:
        alarms = app.monitoring.alarms(uow, batch_id=batch_id)
        mspc = next(a.id for a in alarms if a.source == "mspc")
        ids = [a.id for a in alarms]
    return fh.batch(app, batch_id).job_id, mspc, ids


def _login(page: Page, username: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(fh.TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def _shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


# the pixel position of sample `i` on a Plotly chart, from Plotly's own axes
_POINT_AT = """([id, i]) => {
  const gd = document.getElementById(id);
  const trace = gd._fullData[0];
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const box = gd.getBoundingClientRect();
  return {x: box.left + xa._offset + xa.d2p(trace.x[i]),
          y: box.top + ya._offset + ya.d2p(trace.y[i])};
}"""


def test_run_charts_draw_and_a_t2_click_shows_the_contributions(
    page: Page, seeded: App, live_server: str, tmp_path: Path
) -> None:
    run, mspc_alarm, alarm_ids = _faulty_run(seeded)
    requests: list[str] = []
    failures: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on(
        "response", lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )

    _login(page, "qp")
    page.get_by_role("link", name="Monitoring").click()
    expect(page).to_have_url(re.compile(r"/monitoring$"))
    expect(page.locator("#open-alarm-table tr[data-alarm]")).to_have_count(len(alarm_ids))
    _shot(page, tmp_path, "monitoring")

    page.locator(f'#runs tr[data-run="{run}"] a').first.click()
    expect(page).to_have_url(re.compile(f"/monitoring/runs/{run}$"))
    metrics = page.locator('.plot[id^="chart-"]').count()
    assert metrics == 4
    page.wait_for_function(
        "n => document.querySelectorAll('.js-plotly-plot').length >= n", arg=metrics + 2
    )
    assert page.locator(".js-plotly-plot").count() >= metrics + 2
    # flagged readings are drawn: the pressure chart has a red marker trace
    red = page.locator("#chart-extrusion_pressure_kpa .scatterlayer .trace").last
    expect(red.locator("path.point").first).to_be_attached()
    expect(page.locator("#contributions-chart")).to_be_hidden()
    _shot(page, tmp_path, "run-charts")

    # a real mouse click on an alarm sample of the T² chart (hover, then click: Plotly's way)
    index = page.evaluate(
        """() => {
          const gd = document.getElementById('t2-chart');
          const colours = gd._fullData[0].marker.color;
          const red = colours.map((c, i) => [c, i]).filter(([c]) => c === '#b3261e');
          return red[Math.floor(red.length / 2)][1];
        }"""
    )
    page.locator("#t2-chart").scroll_into_view_if_needed()
    point = page.evaluate(_POINT_AT, ["t2-chart", index])
    page.mouse.move(point["x"], point["y"])
    page.mouse.click(point["x"], point["y"])
    status = page.locator("#contributions-status")
    expect(status).to_contain_text(re.compile(r"Sample \d+ at .* T² "))
    chart = page.locator("#contributions-chart")
    expect(chart).to_be_visible()
    expect(chart.locator(".js-plotly-plot, .main-svg").first).to_be_attached()
    expect(chart.locator(".barlayer .point")).to_have_count(2 * 4)
    clicked = int(page.locator("#contributions").get_attribute("data-index") or -1)
    assert abs(clicked - index) <= 2  # the sample under the mouse (or its neighbour)
    assert any(f"/contributions.json?index={clicked}" in u for u in requests)
    _shot(page, tmp_path, "run-contributions")

    # the same without a mouse: the sample form (keyboard users)
    page.get_by_label(re.compile("Sample number")).fill("3")
    page.get_by_role("button", name="Show contributions").click()
    expect(status).to_contain_text("Sample 3 at")
    expect(page).to_have_url(re.compile(f"/monitoring/runs/{run}$"))  # no page reload

    page.goto(f"/alarms/{mspc_alarm}")
    expect(page.locator("main h1")).to_contain_text("Alarm")
    expect(page.locator("#alarm-contributions.js-plotly-plot")).to_be_visible()
    expect(page.get_by_label("Disposition")).to_be_visible()
    _shot(page, tmp_path, "alarm")

    assert [u for u in requests if not u.startswith(live_server + "/")] == []
    assert any(u.endswith("/static/vendor/plotly.min.js") for u in requests)
    assert any(u.endswith("/static/monitoring.js") for u in requests)
    assert failures == []
