"""The live machine chart draws the master file's CPP range even before an SPC model exists.

The demo's printlet master file gives extrusion pressure a CPP range of 390–510 kPa
(src/nearfab/demo.py PROCESS_PARAMETERS). With no SPC model trained, a nozzle clog on
GSTT printer A pushes the pressure past 510 kPa: the chart carries a "CPP high limit 510
kPa" line and marks the readings above it, and the page says no SPC model is in force.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.production import Fault
from nearfab.web.monitoring import with_cpp_limits

seeded = fh.seeded
ON_SQLITE = pytest.mark.parametrize("seeded", ["sqlite"], indirect=True)

PRINTER = "GSTT printer A"
CPP_LOW, CPP_HIGH = 390.0, 510.0  # kPa, the demo master file's extrusion pressure range


def figures(page: str) -> dict[str, dict[str, Any]]:
    out = {}
    for el_id, data in re.findall(r'<div class="plot" id="([^"]+)" data-figure="([^"]*)"', page):
        out[el_id] = json.loads(html.unescape(data))
    return out


def trace(fig: dict[str, Any], name: str) -> dict[str, Any]:
    found = [t for t in fig["data"] if t.get("name", "").startswith(name)]
    assert found, f"no trace {name!r}: {[t.get('name') for t in fig['data']]}"
    first: dict[str, Any] = found[0]
    return first


def test_cpp_range_added_from_the_master_file_hand_example() -> None:
    chart = {
        "metric": "p",
        "unit": "kPa",
        "times": ["a", "b", "c", "d"],
        "values": [450.0, 600.0, 380.0, 500.0],
    }
    out = with_cpp_limits(chart, {"p": {"low": 390.0, "high": 510.0, "unit": "kPa"}})
    # 600 > 510 (index 1) and 380 < 390 (index 2); 450 and 500 are inside
    assert (out["cpp_low"], out["cpp_high"], out["cpp_unit"]) == (390.0, 510.0, "kPa")
    assert out["cpp_beyond"] == [1, 2]
    # a bucket whose max is over the limit counts even when its mean is inside
    bucketed = {**chart, "values": [450.0], "low": [400.0], "high": [515.0], "times": ["a"]}
    assert with_cpp_limits(bucketed, {"p": {"low": 390.0, "high": 510.0}})["cpp_beyond"] == [0]
    # a metric the master file does not name is left as it was
    assert "cpp_high" not in with_cpp_limits(chart, {"other": {"low": 1, "high": 2}})


@ON_SQLITE
def test_live_chart_draws_cpp_limits_without_an_spc_model(seeded: App) -> None:
    app = seeded
    machine_id = fh.machine_id(app, PRINTER)
    printer = fh.machine(app, machine_id)
    app.fleet.inject_fault(printer, Fault("nozzle_clog", severity=0.6, from_unit=5))
    fh.make_batch(app, ready=False)
    client = fh.web_login(app, "pharmacist")
    page = client.get(f"/monitoring/machines/{machine_id}?hours=24")
    assert page.status_code == 200, page.text
    assert 'id="no-spc"' in page.text  # no SPC model: no control limits...
    figs = figures(page.text)
    pressure = figs["chart-extrusion_pressure_kpa"]
    names = [t.get("name") for t in pressure["data"]]
    assert not any(n and n.startswith("upper control limit") for n in names)
    high = trace(pressure, "CPP high limit")  # ...but the master file's CPP range is drawn
    low = trace(pressure, "CPP low limit")
    assert high["name"] == "CPP high limit 510 kPa" and set(high["y"]) == {CPP_HIGH}
    assert low["name"] == "CPP low limit 390 kPa" and set(low["y"]) == {CPP_LOW}
    readings = trace(pressure, "reading")["y"]
    spike = max(readings)
    assert spike > CPP_HIGH, spike  # the clog's spike is above the limit...
    outside = trace(pressure, "outside the CPP range")
    # ...and every reading above 510 or below 390, counted here from the readings, is marked
    expected = [v for v in readings if v > CPP_HIGH or v < CPP_LOW]
    assert sorted(outside["y"]) == sorted(expected) and expected
    caption = html.unescape(
        page.text.split('id="chart-extrusion_pressure_kpa"')[1].split("</figure>")[0]
    )
    assert f"CPP range 390–510 kPa; {len(expected)} outside" in caption
    # a temperature chart has its own range (175–185 °C)
    temp = trace(figs["chart-nozzle_temperature_c"], "CPP high limit")
    assert temp["name"] == "CPP high limit 185 °C"
