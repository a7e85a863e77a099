"""The live machine chart in a real browser (Debian Chromium through Playwright): with no SPC
model trained, a nozzle clog pushes extrusion pressure past the master file's CPP limit of
510 kPa (src/nearfab/demo.py PROCESS_PARAMETERS: 390–510 kPa); Plotly draws the 510 kPa line,
the y axis takes in both the line and the spike, and the spike is drawn above the line. A
screenshot (live-chart-cpp.png) is kept in the test's tmp_path. SQLite only."""

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
CPP_HIGH = 510.0

# the chart's y axis range and the pixel rows of the CPP high line and of the highest reading
_GEOMETRY = """(id) => {
  const gd = document.getElementById(id);
  const ya = gd._fullLayout.yaxis;
  const line = gd._fullData.find(t => (t.name || '').startsWith('CPP high limit'));
  const reading = gd._fullData.find(t => t.name === 'reading');
  const top = Math.max(...reading.y);
  return {range: ya.range, line: line.name, lineY: ya.d2p(line.y[0]), top: top,
          topY: ya.d2p(top),
          legend: [...gd.querySelectorAll('.legendtext')].map(e => e.textContent)};
}"""


def test_the_cpp_limit_is_drawn_without_an_spc_model(
    page: Page, seeded: App, live_server: str, tmp_path: Path
) -> None:
    machine_id = fh.machine_id(seeded, "GSTT printer A")
    seeded.fleet.inject_fault(
        fh.machine(seeded, machine_id), Fault("nozzle_clog", severity=0.6, from_unit=5)
    )
    fh.make_batch(seeded, ready=False)
    failures: list[str] = []
    page.on(
        "response", lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    page.goto("/login")
    page.get_by_label("Username").fill("qp")
    page.get_by_label("Password").fill(fh.TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))

    page.goto(f"/monitoring/machines/{machine_id}?hours=24")
    expect(page.locator("#no-spc")).to_contain_text("CPP ranges")
    page.wait_for_function(
        "() => document.querySelector('#chart-extrusion_pressure_kpa .main-svg') !== null"
    )
    seen = page.evaluate(_GEOMETRY, "chart-extrusion_pressure_kpa")
    assert seen["line"] == "CPP high limit 510 kPa"
    assert "CPP high limit 510 kPa" in seen["legend"]
    low, high = seen["range"]
    assert seen["top"] > CPP_HIGH, seen  # the clog's spike is above the limit...
    assert low < CPP_HIGH < high and high >= seen["top"]  # ...both are in view...
    assert seen["topY"] < seen["lineY"]  # ...and the spike is drawn above the line (pixels)
    page.locator("#chart-extrusion_pressure_kpa").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "live-chart-cpp.png"), full_page=True)
    assert not failures, failures
