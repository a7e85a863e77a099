"""The network plan through its three entry points: `nearfab plan` (in process, through Typer's
runner, on a seeded data folder), the REST API and the /plan page (FastAPI's TestClient).

One arrangement serves every test: on the demo network, two hydrocortisone prescriptions and a
propranolol one; the printers that may make propranolol (GSTT A and B, MAN A) go into
maintenance, so only the mobile printer is left for hydrocortisone and propranolol has no place;
one hydrocortisone order is urgent and goes to a patient 5 days from every site, so it is late.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests import cli_helpers
from tests import flow_helpers as fh

from nearfab.bootstrap import App, build_app
from nearfab.config import Settings
from nearfab.web.server import create_web_app

seeded = fh.seeded
PROPRANOLOL_PRINTERS = ("GSTT printer A", "GSTT printer B", "MAN printer A")
FAR_AWAY = "home:far-away"
LATE_COLOUR = "#c92a2a"


# --- arrange through the services ----------------------------------------------------------
def arrange(app: App) -> dict[str, str]:
    """Three designed orders: one on time, one late (transport), one with no place."""
    admin, planner = fh.actor(app, "admin"), fh.actor(app, "planner")
    on_time = fh.submit(app)
    late = fh.submit(app)
    unplaced = fh.submit(app, medication="propranolol", dose_mg=5.0)
    for name in PROPRANOLOL_PRINTERS:
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
    return {"on_time": on_time, "late": late, "unplaced": unplaced}


def check_plan(plan: dict[str, Any], orders: dict[str, str]) -> None:
    """The plan's shape, and each arranged order where it belongs, with the reason."""
    assert plan["number"] >= 1 and plan["trigger"] and plan["reason"]
    placed = {a["order_id"]: a for a in plan["assignments"]}
    assert set(placed) == {orders["on_time"], orders["late"]}
    for a in placed.values():
        assert a["site"] == "MOB-1" and a["machine"] == "Mobile printer"
        assert a["start"] < a["end"]
        assert isinstance(a["late_min"], int)
    assert placed[orders["on_time"]]["late_min"] == 0
    assert placed[orders["late"]]["late_min"] > 24 * 60  # 5 days' transport, 3 days' lead time
    why = {e["order_id"]: e for e in plan["explanations"]}
    assert set(why) == {orders["late"], orders["unplaced"]}
    assert why[orders["late"]]["status"] == "late"
    assert why[orders["late"]]["reason"] == "transport_time"
    assert why[orders["late"]]["minutes_late"] == placed[orders["late"]]["late_min"]
    unplaced = why[orders["unplaced"]]
    assert unplaced["status"] == "unplaced" and unplaced["reason"] == "machine_unavailable"
    for name in PROPRANOLOL_PRINTERS:
        assert f"{name}: machine is maintenance" in unplaced["message"]
    assert plan["late"] == 1 and plan["unplaced"] == 1


# --- the CLI: `nearfab plan`, in process ------------------------------------------------------
@pytest.fixture(scope="module")
def seeded_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with the demo network (system clock, as the CLI has), seeded once."""
    from nearfab.demo import seed

    folder = tmp_path_factory.mktemp("plan-cli") / "site"
    application = build_app(Settings(data_dir=folder, database_url=None))
    try:
        seed(application, fh.TEST_PASSWORD)
    finally:
        application.engine.dispose()
    return folder


@pytest.fixture
def site(seeded_folder: Path, tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A copy of the seeded folder with the arranged orders; no connection left open."""
    folder = tmp_path / "site"
    shutil.copytree(seeded_folder, folder)
    application = build_app(Settings(data_dir=folder, database_url=None))
    try:
        orders = arrange(application)
    finally:
        application.engine.dispose()
    yield folder, orders


def nearfab(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`nearfab --data-dir FOLDER ARGS...` with no NEARFAB_* setting, in process
    (tests/cli_helpers.py; tests/e2e/test_cli_flow.py keeps the real-process smoke tests)."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("NEARFAB_")}
    return cli_helpers.run(list(args), env=env, data_dir=folder)


def test_cli_plan_json_shows_assignments_and_why(site: tuple[Path, dict[str, str]]) -> None:
    folder, orders = site
    proc = nearfab(folder, "plan", "--json", "--horizon", "48", "--time-limit", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = json.loads(proc.stdout)
    check_plan(plan, orders)
    assert plan["number"] == 1 and plan["trigger"] == "manual"
    assert plan["created_by"].startswith("system:cli:")
    assert {c["order_id"] for c in plan["changes"]} == {orders["on_time"], orders["late"]}

    # a second plan is version 2, and the human-readable form names the unplaced order
    proc = nearfab(folder, "plan", "--time-limit", "1", "--reason", "second look")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "plan v2" in proc.stdout
    assert orders["unplaced"] in proc.stdout and "out of service" in proc.stdout
    assert re.search(rf"MOB-1 · Mobile printer: {orders['late']} .+ UTC late \d+ min", proc.stdout)
    assert f"{orders['unplaced']} unplaced (machine_unavailable)" in proc.stdout


def test_cli_plan_honours_horizon_and_time_limit(seeded_folder: Path, tmp_path: Path) -> None:
    """The mobile printer is down for 4 h: within a 2 h horizon nothing fits; within 48 h the
    hydrocortisone orders start after the downtime."""
    folder = tmp_path / "site"
    shutil.copytree(seeded_folder, folder)
    application = build_app(Settings(data_dir=folder, database_url=None))
    try:
        orders = arrange(application)
        planning = application.scheduling.planning
        assert planning is not None
        now = application.clock.now()
        back = now + timedelta(hours=4)
        with application.uow() as uow:
            planning.add_downtime(
                uow,
                fh.actor(application, "planner"),
                fh.machine_id(application, "Mobile printer"),
                now - timedelta(minutes=1),
                back,
                reason="nozzle replacement",
            )
            uow.commit()
    finally:
        application.engine.dispose()

    proc = nearfab(folder, "plan", "--json", "--horizon", "2", "--time-limit", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    short = json.loads(proc.stdout)
    assert short["assignments"] == []
    why = {e["order_id"]: e for e in short["explanations"]}
    assert set(why) == set(orders.values())
    for key in ("on_time", "late"):
        assert why[orders[key]]["status"] == "unplaced"
        assert why[orders[key]]["reason"] in {"calendar", "capacity"}
        assert "horizon" in why[orders[key]]["message"]

    proc = nearfab(folder, "plan", "--json", "--horizon", "48", "--time-limit", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    longer = json.loads(proc.stdout)
    assert longer["number"] == 2 and longer["solve_s"] <= 1 + 2  # limit, and some slack
    placed = {a["order_id"]: a for a in longer["assignments"]}
    assert set(placed) == {orders["on_time"], orders["late"]}
    assert all(datetime.fromisoformat(a["start"]) >= back for a in placed.values())


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--horizon", "0"),
        ("--horizon", "-5"),
        ("--horizon", "100000"),
        ("--horizon", "nan"),
        ("--horizon", "soon"),
        ("--time-limit", "-1"),
        ("--time-limit", "601"),
        ("--time-limit", "inf"),
        ("--time-limit", "long"),
    ],
)
def test_cli_plan_refuses_bad_options(
    seeded_folder: Path, tmp_path: Path, option: str, value: str
) -> None:
    folder = tmp_path / "site"
    shutil.copytree(seeded_folder, folder)
    proc = nearfab(folder, "plan", "--json", f"{option}={value}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert option in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    # nothing was planned
    application = build_app(Settings(data_dir=folder, database_url=None))
    try:
        with application.uow() as uow:
            assert application.scheduling.current_plan(uow) is None
    finally:
        application.engine.dispose()


def test_cli_bad_option_in_json_mode_is_json(seeded_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "site"
    shutil.copytree(seeded_folder, folder)
    proc = nearfab(folder, "plan", "--json", "--horizon", "0")
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert error["field"] == "horizon" and "--horizon" in error["message"]


# --- the API --------------------------------------------------------------------------------
def token(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
def client(seeded: App) -> TestClient:
    return TestClient(create_web_app(seeded))


def test_api_current_plan_history_and_replan(client: TestClient, seeded: App) -> None:
    orders = arrange(seeded)
    planner = token(client, "planner")

    r = client.get("/api/v1/plan", headers=planner)
    assert r.status_code == 404 and r.json()["error"]["field"] == "plan"
    assert client.get("/api/v1/plan/history", headers=planner).json() == []

    r = client.post(
        "/api/v1/plan", json={"reason": "morning plan", "time_limit_s": 2}, headers=planner
    )
    assert r.status_code == 201, r.text
    first = r.json()
    check_plan(first, orders)
    assert first["number"] == 1 and first["reason"] == "morning plan"

    # the mobile printer fails: the planner replans, saying why
    with seeded.uow() as uow:
        seeded.network.set_machine_status(
            uow,
            fh.actor(seeded, "admin"),
            fh.machine_id(seeded, "Mobile printer"),
            "maintenance",
            reason="nozzle fault",
        )
    r = client.post(
        "/api/v1/plan",
        json={"reason": "mobile printer down", "time_limit_s": 1, "horizon_h": 48},
        headers=planner,
    )
    assert r.status_code == 201, r.text
    second = r.json()
    assert second["number"] == 2 and second["reason"] == "mobile printer down"
    assert second["assignments"] == []
    assert {e["order_id"] for e in second["explanations"]} == set(orders.values())
    assert {e["reason"] for e in second["explanations"]} == {"machine_unavailable"}
    moved = {c["order_id"]: c for c in second["changes"]}
    assert set(moved) == {orders["on_time"], orders["late"]}

    # every reader sees the current plan and each version with what changed and why
    for reader in ("planner", "qp", "auditor", "operator", "pharmacist", "admin"):
        r = client.get("/api/v1/plan", headers=token(client, reader))
        assert r.status_code == 200, (reader, r.text)
        assert r.json()["number"] == 2
    history = client.get("/api/v1/plan/history", headers=planner).json()
    assert [v["number"] for v in history] == [2, 1]
    assert [v["reason"] for v in history] == ["mobile printer down", "morning plan"]
    assert all(v["trigger"] == "manual" for v in history)
    assert [len(v["changes"]) for v in history] == [2, 2]
    assert {c["order_id"] for c in history[0]["changes"]} == set(moved)
    assert [
        v["number"]
        for v in client.get("/api/v1/plan/history", params={"limit": 1}, headers=planner).json()
    ] == [2]
    assert (
        client.get("/api/v1/plan/history", params={"limit": 0}, headers=planner).status_code == 422
    )

    r = client.get("/api/v1/plan/1", headers=planner)
    assert r.status_code == 200 and r.json() == first
    r = client.get("/api/v1/plan/9", headers=planner)
    assert r.status_code == 404 and "9" in r.json()["error"]["message"]


def test_api_refuses_without_token_and_for_roles_that_may_not_plan(
    client: TestClient, seeded: App
) -> None:
    arrange(seeded)
    for method, path in [
        ("get", "/api/v1/plan"),
        ("get", "/api/v1/plan/history"),
        ("get", "/api/v1/plan/1"),
        ("post", "/api/v1/plan"),
    ]:
        r = client.request(method.upper(), path, json={"reason": "x"} if method == "post" else None)
        assert r.status_code == 401, (path, r.text)

    # planning needs planner, pharmacist or admin (PLANNERS in scheduling/services/planning.py)
    for role in ("qp", "auditor", "operator", "clinician"):
        r = client.post("/api/v1/plan", json={"reason": "try"}, headers=token(client, role))
        assert r.status_code == 403, (role, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    with seeded.uow() as uow:
        assert seeded.scheduling.current_plan(uow) is None
    # a clinician does not read the plan either
    r = client.get("/api/v1/plan/history", headers=token(client, "clinician"))
    assert r.status_code == 403

    pharmacist = token(client, "pharmacist")
    for body, field in [
        ({"reason": ""}, "reason"),
        ({"reason": "x", "horizon_h": 0}, "horizon_h"),
        ({"reason": "x", "horizon_h": 5000}, "horizon"),
        ({"reason": "x", "time_limit_s": 601}, "time_limit_s"),
        ({"reason": "x", "time_limit_s": -1}, "time_limit_s"),
    ]:
        r = client.post("/api/v1/plan", json=body, headers=pharmacist)
        assert r.status_code == 422, (body, r.text)
        assert field in r.text, (body, r.text)
    r = client.post("/api/v1/plan", json={"reason": "pharmacist plans"}, headers=pharmacist)
    assert r.status_code == 201, r.text
    assert r.json()["created_by"] == fh.actor(seeded, "pharmacist").user_id


# --- the web page ---------------------------------------------------------------------------
def web_login(app: App, username: str) -> TestClient:
    client = TestClient(create_web_app(app))
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert found, "no CSRF token on the login page"
    r = client.post(
        "/login",
        data={"username": username, "password": fh.TEST_PASSWORD, "csrf_token": found.group(1)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return client


def gantt_figure(page: str) -> dict[str, Any]:
    found = re.search(r'<div id="gantt"[^>]* data-figure="([^"]*)"', page)
    assert found, "no Gantt figure on the page"
    figure: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return figure


def test_plan_page_draws_the_gantt_and_says_why(seeded: App) -> None:
    anonymous = TestClient(create_web_app(seeded))
    r = anonymous.get("/plan", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/plan"

    client = web_login(seeded, "planner")
    r = client.get("/plan")
    assert r.status_code == 200
    assert "No plan yet" in r.text

    orders = arrange(seeded)
    with seeded.uow() as uow:
        version = seeded.scheduling.plan(
            uow, fh.actor(seeded, "planner"), reason="ward round", time_limit_s=2
        )
        late_min = next(
            a["late_min"] for a in version.assignments if a["order_id"] == orders["late"]
        )
    r = client.get("/plan")
    assert r.status_code == 200
    page = r.text
    assert "Version 1" in page and "ward round" in page
    assert '<script src="/static/vendor/plotly.min.js" defer></script>' in page
    assert '<script src="/static/monitoring.js" defer></script>' in page  # draws it

    figure = gantt_figure(page)
    # the bars (the page adds an invisible point per machine row, so idle machines show)
    bars = {t["name"]: t for t in figure["data"] if t["type"] == "bar"}
    assert set(bars) == {"on time", "late"}
    assert bars["late"]["marker"]["color"] == LATE_COLOUR
    assert bars["on time"]["marker"]["color"] != LATE_COLOUR
    assert [c[0] for c in bars["late"]["customdata"]] == [orders["late"]]
    assert bars["late"]["customdata"][0][2] == late_min
    assert [c[0] for c in bars["on time"]["customdata"]] == [orders["on_time"]]
    for trace in bars.values():
        assert trace["y"] == ["MOB-1 · Mobile printer"]
        assert trace["orientation"] == "h" and trace["x"][0] > 0
    assert figure["layout"]["xaxis"]["type"] == "date"

    # the unplaced and the late order, each with its reason, linked to the order
    table = page[page.index("Late or unplaced orders") :]
    assert f'href="/orders/{orders["unplaced"]}"' in table
    assert "every qualified machine is out of service" in table
    assert html.escape("GSTT printer A: machine is maintenance") in table
    assert f'href="/orders/{orders["late"]}"' in table and "transport" in table
    # what changed names the machine, not its id
    assert "→ Mobile printer" in page
    assert "v1 · " in page

    js = client.get("/static/vendor/plotly.min.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert len(js.content) > 1_000_000


def test_plan_page_is_for_plan_readers(seeded: App) -> None:
    r = web_login(seeded, "clinician").get("/plan")
    assert r.status_code == 403
    assert "Not allowed" in r.text and "plan" in r.text
    assert web_login(seeded, "operator").get("/plan").status_code == 200
