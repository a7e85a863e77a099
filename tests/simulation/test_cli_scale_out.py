"""`nearfab simulate scale-out FORECAST.yaml`: the planner from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from nearfab.cli.main import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_the_example_forecast_gets_a_plan_that_meets_every_year(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["simulate", "scale-out", str(REPO / "docs/forecasts/scale-out.yaml"), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    years = out["years"]
    assert [y["year"] for y in years] == [0, 1, 2, 3, 4]
    assert all(y["slots"] >= y["slots_needed"] for y in years)
    assert all(y["service_level"] >= 0.95 for y in years)
    slots = [y["slots"] for y in years]
    assert slots == sorted(slots)  # units are added, never removed
    discounted = sum(y["cost"] / 1.035 ** y["year"] for y in years)
    assert abs(discounted - out["npv"]) < 1.0  # the NPV is the discounted yearly costs


def test_a_bad_forecast_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "demand_per_day: [1, -2]\ncycle_days: 1\nslack_days: 1\n"
        "unit_types: [{name: cell, slots: 4, capital: 1, fixed_per_year: 1}]\n"
    )
    result = runner.invoke(app, ["simulate", "scale-out", str(bad), "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert "demand_per_day" in error["message"] and "0 or more" in error["message"]
    bad.write_text("demand_per_day: [1]\ncycle_days: 1\nslack_days: 1\nunit_types: []\n")
    result = runner.invoke(app, ["simulate", "scale-out", str(bad), "--json"])
    assert result.exit_code == 2 and "unit_types" in json.loads(result.stdout)["error"]["field"]
