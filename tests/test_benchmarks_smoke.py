"""Every script in benchmarks/ runs at a tiny size and prints its figures (a benchmark that no
test runs rots: telemetry_ingest.py crashed for weeks). Each script gets its own smoke
arguments below; a new script without an entry fails `test_every_benchmark_has_a_smoke_run`.

The scripts run in this process (runpy, as `__main__`, sharing the imports already made and
the tests' cheap argon2). verify_latency.py too: its server and load generator are still
spawned processes (`multiprocessing` spawn finds the script through runpy's `__main__`), but
its seeding, batch and checks no longer pay for a second interpreter importing the whole
stack and hashing the demo users' passwords at the product's cost (about 9 s of CPU a run).
The figures are read from the JSON each prints.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# script -> (arguments for a tiny run, the figures its JSON must carry as positive numbers)
SMOKE: dict[str, tuple[list[str], list[str]]] = {
    # owned with the audit chain; `--smoke` is added when the script has it (see below)
    "audit_chain.py": (["--smoke", "--json"], []),
    "batch_mspc_score.py": (
        ["--smoke", "--json"],
        ["fit_s", "runs_per_s", "naive_runs_per_s", "ratio", "monitor_p50_us"],
    ),
    "flow_throughput.py": (
        ["--smoke", "--json"],
        ["prescriptions_per_s", "raw_prescriptions_per_s", "batches_per_s"],
    ),
    # needs the mosquitto binary (the link's idle pass), as replication.py
    "inbox_reads.py": (
        ["--smoke", "--json"],
        ["idle_pass_cpu_ms_0", "full_pass_ms_0", "site_outcomes_ms", "outcomes_text_scan_ms"],
    ),
    "ledger.py": (
        ["--entries", "200", "--single", "20", "--json"],
        ["append_per_s", "baseline_sign_per_s", "verify_per_s", "baseline_read_per_s"],
    ),
    "mspc_score.py": (
        ["--smoke", "--json"],
        ["samples_per_s", "raw_samples_per_s", "ratio", "p99_us", "dynamic_online_p99_us"],
    ),
    # needs the mosquitto binary (as the telemetry tests; CI installs it)
    "replication.py": (
        ["--smoke", "--json"],
        ["records", "applied", "replicate_records_per_s", "raw_publish_per_s", "verify_per_s"],
    ),
    "scheduling.py": (["--smoke", "--json"], []),  # nested: checked below
    "simulation.py": (
        ["--smoke", "--json"],
        ["events", "events_per_s", "raw_simpy_events_per_s", "ratio"],
    ),
    "telemetry_ingest.py": (
        ["--smoke", "--json"],
        ["points", "points_per_s", "raw_points_per_s", "ratio"],
    ),
    "release_queue.py": (
        ["--smoke", "--json"],
        ["waiting", "worklist_statements", "release_page_statements", "baseline_ms"],
    ),
    "remote_decision.py": (
        ["--smoke", "--json"],
        ["records_held", "check_ms", "whole_chain_ms", "baseline_ms"],
    ),
    "tep_table.py": (["--smoke", "--json"], []),  # nested: checked below
    "trace.py": (["--smoke", "--json"], ["events", "p50_ms", "p99_ms", "baseline_p99_ms"]),
    "verify_latency.py": (["--smoke", "--json"], ["units", "batches", "sites"]),
}
# a known breakage in a script this suite does not own is shown, not hidden: XFAIL while it
# fails, XPASS once it is fixed (then remove the entry)
KNOWN_BROKEN: dict[str, tuple[type[BaseException], str]] = {}


def _scripts() -> list[str]:
    return sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


def test_every_benchmark_has_a_smoke_run() -> None:
    assert _scripts(), "no benchmarks found"
    assert set(_scripts()) == set(SMOKE), set(_scripts()) ^ set(SMOKE)


def _run_in_process(
    script: str, args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> str:
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / script), *args])
    capsys.readouterr()  # drop anything printed before
    try:
        runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
    except SystemExit as exc:  # argparse errors, or a script that exits itself
        assert exc.code in (None, 0), f"{script} exited with {exc.code}"
    return capsys.readouterr().out


def _positive(figures: dict[str, Any], key: str, script: str) -> None:
    value = figures.get(key)
    assert isinstance(value, int | float) and not isinstance(value, bool), (script, key, value)
    assert value > 0, (script, key, value)


def _params() -> list[Any]:
    out = []
    for script in _scripts():
        broken = KNOWN_BROKEN.get(script)
        marks = (
            [pytest.mark.xfail(raises=broken[0], reason=broken[1], strict=True)] if broken else []
        )
        out.append(pytest.param(script, marks=marks, id=script.removesuffix(".py")))
    return out


@pytest.mark.parametrize("script", _params())
def test_benchmark_runs_at_a_tiny_size_and_prints_its_figures(
    script: str,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args, keys = SMOKE[script]
    if "--smoke" not in args and '"--smoke"' in (BENCHMARKS / script).read_text():
        args = [*args, "--smoke"]
    if script == "tep_table.py":  # the Tennessee Eastman files are external test material
        shared: Path = request.getfixturevalue("shared_data")
        args = [*args, "--data", str(shared / "tep")]
    out = _run_in_process(script, args, capsys, monkeypatch)
    figures = json.loads(out)
    if script == "audit_chain.py":  # one object per backend and measurement
        assert isinstance(figures, list) and figures, out[:500]
        for item in figures:
            for key in ("raw_rows_per_s", "chained_rows_per_s", "verify_rows_per_s"):
                if key in item:
                    _positive(item, key, script)
        assert any("chained_rows_per_s" in item for item in figures), figures
        return
    assert isinstance(figures, dict) and figures, out[:500]
    for key in keys:
        _positive(figures, key, script)

    if script == "scheduling.py":
        [run] = figures["runs"]
        for block in ("edd", "cp_sat", "planner", "replan_after_machine_failure"):
            assert block in run, block
        _positive(run["edd"], "first_feasible_s", script)
        assert run["planner"]["weighted_tardiness"] <= run["edd"]["weighted_tardiness"]
        assert figures["summary"]["seeds"] == [7]
    elif script == "tep_table.py":
        assert figures["faults"] == [1, 3]
        for model in ("pca", "dpca_ewma"):
            fault1 = figures[model]["per_fault"]["1"]
            assert 0 <= fault1["either_detection"] <= 1
            assert 0 <= figures[model]["d00_te_false_alarms"] <= 1
    elif script == "verify_latency.py":
        [run] = figures["runs"]
        for key in ("rps", "baseline_rps", "p99_ms", "saturated_p99_ms"):
            _positive(run, key, script)
        assert run["errors"] == {} and run["errors_open_loop"] == {}
        # every verification answered is logged once the writers are flushed
        assert figures["verifications"] == figures["verifications_logged"] > 0


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("site_db", "control_db"),
    [("postgresql", "postgresql"), ("sqlite", "postgresql")],
    ids=["both-postgresql", "site-sqlite-control-postgresql"],
)
def test_replication_benchmark_on_postgresql_with_a_measured_day(
    site_db: str,
    control_db: str,
    pg_server: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """replication.py with the control node on PostgreSQL and the site node on either
    (throwaway databases on the test cluster; a SQLite site's rows copied into the control's)
    and the backlog sized from a measured order: the demo's order, prescription to dispense."""
    orders = 3
    args = ["--smoke", "--json", "--db", site_db, "--control-db", control_db]
    args += ["--pg-admin", pg_server, "--day", "--orders-per-day", str(orders)]
    figures = json.loads(_run_in_process("replication.py", args, capsys, monkeypatch))
    for key in ("replicate_records_per_s", "raw_publish_per_s", "verify_per_s"):
        _positive(figures, key, "replication.py")
    assert (figures["db"], figures["control_db"]) == (site_db, control_db)
    assert figures["control_database"].startswith("PostgreSQL ")
    # a site node captures its audit rows, its ledger chain, its batch summaries and each
    # finished run's telemetry summary (docs/replication.md); one order makes, releases and
    # dispenses a batch: its batch record changes, the custody ledger takes at least the
    # commissioning and the dispense, and its one machine run is summarised once
    by_kind = figures["records_per_order_by_kind"]
    assert set(by_kind) == {"audit", "batch", "ledger", "telemetry"}, by_kind
    assert by_kind["batch"] >= 1 and by_kind["ledger"] >= 2, by_kind
    assert by_kind["telemetry"] == pytest.approx(1.0), by_kind
    assert figures["records_per_order"] == pytest.approx(sum(by_kind.values()), abs=0.02)
    # the day: `orders` orders of that many records each
    assert figures["day_records"] == round(orders * figures["records_per_order"])
    # everything sent arrived once, and its chain verifies
    assert figures["records"] == figures["acknowledged"] == figures["applied"]
    assert figures["chain_ok"] is True
    # every database the run made is gone
    import psycopg

    with psycopg.connect(pg_server.replace("+psycopg", ""), autocommit=True) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'nearfab_bench_repl%'"
        ).fetchall()
    assert left == []
