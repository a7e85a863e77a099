"""The CLI contract, driven as a user would: `nearfab` commands on a data folder.

The commands run in the test process through Typer's runner (tests/cli_helpers.py: same
entry point, arguments, environment and output, without importing the whole stack again for
each command); two tests start real `nearfab` processes, as smoke tests of the entry point
itself: `test_demo_serves_the_dashboard` and `test_cli_refuses_a_data_folder_with_other_keys`.
The tests that start from `nearfab init --demo` get a copy of one data folder that command
seeded once per module and worker (`demo_folder`, `demo_site`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests import cli_helpers

import nearfab.cli.context as cli_context
from nearfab.custody import decode_datamatrix

PASSWORD = "cli-demo-password-1"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "fhir"


def nearfab(data_dir: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """`nearfab --data-dir DATA ARGS...`, in process (see the module's docstring)."""
    env = {"NEARFAB_DEMO_PASSWORD": PASSWORD, "NEARFAB_DATABASE_URL": None}
    proc = cli_helpers.run(list(args), env=env, data_dir=data_dir)
    if ok:
        assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A data folder `nearfab init --demo` seeded, once per module and worker, and what the
    command printed."""
    data = tmp_path_factory.mktemp("cli-demo") / "site"
    return data, nearfab(data, "init", "--demo").stdout


@pytest.fixture
def demo_site(demo_folder: tuple[Path, str], tmp_path: Path) -> Path:
    """The test's own copy of `demo_folder`'s data folder (database and keys): what
    `nearfab init --demo` on a new folder gives, without seeding again for each test."""
    shutil.copytree(demo_folder[0], tmp_path / "site")
    return tmp_path / "site"


def test_cli_prescription_to_dispense(
    demo_folder: tuple[Path, str], demo_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = demo_site
    out = demo_folder[1]  # what `nearfab init --demo` printed
    assert "demo network seeded" in out

    submitted = as_json(
        nearfab(
            data,
            "order",
            "submit",
            str(FIXTURE / "hydrocortisone-paediatric-bundle.json"),
            "--site",
            "GSTT-PH",
            "--json",
        )
    )
    (order,) = submitted["orders"]
    assert order["status"] == "designed" and order["units"] == 84
    trail = as_json(nearfab(data, "audit", "order", order["id"], "--json"))
    assert [(e["action"], (e["new"] or {}).get("status")) for e in trail] == [
        ("create", "received"),
        ("transition", "designed"),
    ]
    assert trail[0]["actor_id"].startswith("system:cli:")

    # the runner opens the batch record; its machine waits for the steps before it (the
    # line clearance, the filament loaded and verified), and says so by the batch's id
    text = nearfab(data, "network", "run", "--until-idle").stdout
    waiting = [line for line in text.splitlines() if "waits for the steps" in line]
    assert len(waiting) == 1, text
    batch_id = waiting[0].split("waiting: ", 1)[1].split(":", 1)[0]
    assert batch_id.startswith("bat_")
    assert "line_clearance (" in waiting[0] and "filament_loaded (" in waiting[0]
    record = as_json(nearfab(data, "batch", "show", batch_id, "--json"))
    assert record["status"] == "in_progress" and record["measurements"] is None

    # the steps before the machine starts, signed in order by the operator on duty, the
    # critical entry verified by a second person (quality-and-release.md)
    operator = {"Olu Operator": "operator", "Mani Operator": "operator-man"}.get(
        record["operator"]["name"], "operator-mob"
    )
    lot = record["material_lot"]["lot_number"]
    for code, values in (
        ("line_clearance", []),
        ("filament_loaded", [f"filament_lot={lot}", "mass_loaded_g=30.5"]),
    ):
        entries = [arg for value in values for arg in ("--entry", value)]
        signer = ["--user", operator, "--password", PASSWORD]
        nearfab(data, "batches", "sign-step", batch_id, code, *signer, *entries, "--json")
    nearfab(
        data,
        "batches",
        "verify-step",
        batch_id,
        "filament_loaded",
        "--user",
        "qp",
        "--password",
        PASSWORD,
        "--json",
    )
    run = as_json(nearfab(data, "network", "run", "--until-idle", "--json"))
    assert run["batches_completed"] == [batch_id]

    pending = as_json(nearfab(data, "release", "pending", "--json"))
    (item,) = pending
    assert item["proposed_decision"] == "release"
    assert item["batch_id"] == batch_id
    # for people, the same queue prints the id whole on one line, ready to copy into `release
    # sign`, even in a narrow terminal (60 columns used to cut it to "bat_2…")
    monkeypatch.setattr(cli_context.console, "width", 60)
    text = nearfab(data, "release", "pending").stdout
    monkeypatch.undo()
    assert any(batch_id in line for line in text.splitlines()), text
    assert item["batch_number"] in text
    record = as_json(nearfab(data, "batch", "show", batch_id, "--json"))
    assert record["status"] == "completed" and len(record["measurements"]["unit_masses_mg"]) == 84
    assert len(record["ticket_hash"]) == 64 and record["material_lot"]["lot_number"]
    assert [s["name"] for s in record["steps"]][:7] == [
        "material_dispensed",
        "run_started",
        "line_clearance",
        "filament_loaded",
        "filament_loaded_verified",
        "handed_to_machine",
        "run_finished",
    ]
    assert record["signatures"] == []

    # after the run: the inspection, then the QP's audit-trail review
    nearfab(
        data,
        "batches",
        "sign-step",
        batch_id,
        "visual_inspection",
        "--user",
        operator,
        "--password",
        PASSWORD,
        "--entry",
        "units_rejected=0",
        "--json",
    )
    steps = as_json(nearfab(data, "batches", "steps", batch_id, "--json"))
    assert [s["status"] for s in steps["steps"]] == [
        "performed",
        "verified",
        "recorded",
        "performed",
    ]
    reviewed = as_json(
        nearfab(
            data,
            "batches",
            "review-audit-trail",
            batch_id,
            "--user",
            "qp",
            "--password",
            PASSWORD,
            "--json",
        )
    )
    assert reviewed["rows"] > 5 and len(reviewed["trail_hash"]) == 64

    # a rejection needs a reason; a wrong password signs nothing
    refused = nearfab(
        data,
        "release",
        "sign",
        batch_id,
        "--decision",
        "reject",
        "--user",
        "qp",
        "--password",
        PASSWORD,
        "--meaning",
        "QP rejection",
        "--json",
        ok=False,
    )
    assert refused.returncode == 2 and as_json(refused)["error"]["field"] == "reason"
    refused = nearfab(
        data,
        "release",
        "sign",
        batch_id,
        "--decision",
        "release",
        "--user",
        "qp",
        "--password",
        "nope-nope",
        "--meaning",
        "QP release",
        "--json",
        ok=False,
    )
    assert refused.returncode == 2 and as_json(refused)["error"]["code"] == "unauthenticated"

    signed = as_json(
        nearfab(
            data,
            "release",
            "sign",
            batch_id,
            "--decision",
            "release",
            "--user",
            "qp",
            "--password",
            PASSWORD,
            "--meaning",
            "QP release",
            "--json",
        )
    )
    assert signed["status"] == "released" and signed["signature_valid"] is True
    assert as_json(nearfab(data, "release", "pending", "--json")) == []
    record = as_json(nearfab(data, "batch", "show", batch_id, "--json"))
    (signature,) = record["signatures"]
    assert signature["meaning"] == "QP release" and signature["printed_name"] == "Quentin Parr (QP)"
    assert record["status"] == "released" and record["review"]["signature_valid"] is True
    # both refused attempts (no reason to reject, wrong password) are on the batch's trail
    batch_trail = as_json(nearfab(data, "audit", "batch", batch_id, "--json"))
    refused_rows = [e["reason"] for e in batch_trail if e["action"] == "refuse"]
    assert len(refused_rows) == 2
    assert "rejection needs a reason" in refused_rows[0]
    assert "password does not match" in refused_rows[1]

    shown = as_json(nearfab(data, "order", "show", order["id"], "--json"))
    assert shown["status"] == "released"
    packs = shown["packs"]
    assert len(packs) == 3  # 84 tablets, 30 a pack

    label = tmp_path / "pack.png"
    nearfab(data, "label", packs[0]["id"], "--out", str(label))
    scanned = decode_datamatrix(label.read_bytes())
    pdf = tmp_path / "pack.pdf"
    nearfab(data, "label", packs[0]["id"], "--out", str(pdf))
    assert pdf.read_bytes().startswith(b"%PDF")

    wrong = nearfab(
        data,
        "dispense",
        "--scan",
        scanned,
        "--patient",
        "PT-NOBODY",
        "--user",
        "pharmacist",
        "--password",
        PASSWORD,
        "--json",
        ok=False,
    )
    assert wrong.returncode == 2 and as_json(wrong)["error"]["code"] == "wrong_patient"

    def dispense(pack: dict[str, Any]) -> dict[str, Any]:
        return dict(
            as_json(
                nearfab(
                    data,
                    "dispense",
                    "--scan",
                    pack["element_string"],
                    "--patient",
                    shown["patient_ref"],
                    "--user",
                    "pharmacist",
                    "--password",
                    PASSWORD,
                    "--json",
                )
            )
        )

    done = [dispense(pack) for pack in packs]
    assert [d["order_complete"] for d in done] == [False, False, True]
    assert {d["serial"] for d in done} == {p["serial"] for p in packs}
    final = as_json(nearfab(data, "order", "show", order["id"], "--json"))
    assert final["status"] == "dispensed"


def test_cli_refuses_bad_input_clearly(demo_site: Path, tmp_path: Path) -> None:
    data = demo_site
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = nearfab(data, "order", "submit", str(bad), "--json", ok=False)
    assert proc.returncode == 2
    assert as_json(proc)["error"]["field"] == "$"
    proc = nearfab(data, "order", "show", "ord_NOPE", "--json", ok=False)
    assert proc.returncode == 2 and as_json(proc)["error"]["code"] == "not_found"
    proc = nearfab(data, "label", "nothing", "--out", str(tmp_path / "x.gif"), ok=False)
    assert proc.returncode == 2 and "--out" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_serves_the_dashboard(tmp_path: Path) -> None:
    """`nearfab demo` seeds a new data folder and serves the pages and API on the port given."""
    port = _free_port()
    env = {**os.environ, "NEARFAB_DEMO_PASSWORD": PASSWORD}
    env.pop("NEARFAB_DATABASE_URL", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nearfab",
            "--data-dir",
            str(tmp_path / "demo"),
            "demo",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        body = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as r:
                    body = r.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert "Log in" in body, "the demo did not serve its login page"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/app.css", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=5) as r:
            assert "/api/v1/orders" in json.loads(r.read())["paths"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    if proc.returncode not in (0, -15):
        pytest.fail(f"demo exited with {proc.returncode}")


def test_cli_order_changes_need_a_reason_and_follow_the_lifecycle(demo_site: Path) -> None:
    data = demo_site
    submitted = as_json(
        nearfab(
            data,
            "order",
            "submit",
            str(FIXTURE / "hydrocortisone-paediatric-bundle.json"),
            "--site",
            "GSTT-PH",
            "--json",
        )
    )
    order_id = submitted["orders"][0]["id"]
    refused = nearfab(data, "order", "replan", order_id, "--reason", "retry", "--json", ok=False)
    assert refused.returncode == 2 and as_json(refused)["error"]["code"] == "not_failed"
    done = as_json(nearfab(data, "order", "cancel", order_id, "--reason", "duplicate", "--json"))
    assert done == {"id": order_id, "status": "cancelled"}
    trail = as_json(nearfab(data, "audit", "order", order_id, "--json"))
    assert trail[-1]["reason"] == "duplicate" and trail[-1]["new"]["status"] == "cancelled"


def test_cli_refuses_a_data_folder_with_other_keys(tmp_path: Path) -> None:
    first = tmp_path / "first"
    nearfab(first, "init")
    env = {**os.environ, "NEARFAB_DATABASE_URL": f"sqlite:///{first / 'nearfab.db'}"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nearfab",
            "--data-dir",
            str(tmp_path / "second"),
            "order",
            "list",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    said = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "copy the keys/ folder" in said and "Traceback" not in said
