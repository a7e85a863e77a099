"""`nearfab simulate` from the shell, the HTML report, and export of the demo network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nearfab.cli.simulate import app

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenarios"
runner = CliRunner()


def test_bare_form_runs_a_scenario_and_writes_an_offline_report(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = runner.invoke(
        app,
        [
            str(DOCS / "ishipment-car-t.yaml"),
            "--json",
            "--report",
            str(out),
            "--executor",
            "serial",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["metrics"]["delivered"]["mean"] == 50
    from plotly.offline import get_plotlyjs

    page = out.read_text()
    assert get_plotlyjs() in page  # the library itself is inline
    rest = page.replace(get_plotlyjs(), "")
    assert "Plotly.newPlot" in rest and "cdn" not in rest and "src=" not in rest
    assert (tmp_path / "r-summary.csv").exists()


def test_compare_prints_each_scenario(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "compare",
            str(DOCS / "centralised.yaml"),
            str(DOCS / "redistributed.yaml"),
            "--replications",
            "2",
            "--executor",
            "serial",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [s["scenario"] for s in json.loads(result.output)] == [
        "centralised",
        "fully-redistributed",
    ]


def test_a_bad_scenario_is_refused_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nhorizon_days: -1\nproducts: [{name: p}]\n"
        "sites: [{name: s}]\nregions: [{name: r, site: s}]\n"
    )
    result = runner.invoke(app, [str(bad), "--json"])
    assert result.exit_code == 2
    err = json.loads(result.output)["error"]
    assert err["field"] == "horizon_days" and "greater than 0" in err["message"]


def test_demo_network_exports_and_simulates(seeded: Any) -> None:
    from nearfab.simulation import dump_scenario, export_scenario, load_scenario, simulate

    with seeded.uow() as uow:
        scenario = export_scenario(uow, seeded.families, horizon_days=60)
    names = {s.name for s in scenario.sites}
    assert names == {"GSTT-PH", "MAN-PH", "MOB-1"}
    gstt = next(s for s in scenario.sites if s.name == "GSTT-PH")
    # two printers and the demo's cell micro-factory (demo.py: CELL_MACHINE at GSTT-PH)
    assert gstt.slots == 3 and {p.name for p in scenario.products} >= {"MF-HC-PRINTLET"}
    path = Path(seeded.settings.data_dir) / "today.yaml" if hasattr(seeded, "settings") else None
    text = dump_scenario(scenario)
    if path is None:
        pytest.skip("no data folder")
    path.write_text(text)
    r = simulate(load_scenario(path, seeded.families).to_spec(seeded.families), 0)
    assert r.delivered > 0
