"""The monitoring pages over the web app (FastAPI TestClient, session login, no browser).

A realistic state: three released batches train SPC and MSPC models (admin trains, QP
approves), then a nozzle clog on GSTT printer A makes a batch that raises alarms. The pages
list the alarm, the run page carries the control-chart and T²/SPE figures with limits and
flagged points, the session JSON answers contributions, and only a QP or pharmacist with a
valid form token can close an alarm (audited). SQLite only: the services are tested on both.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.identity import AuditEntry
from nearfab.production import Fault
from nearfab.web.server import create_web_app

HYDRO = "MF-HC-PRINTLET"
PRINTER = "GSTT printer A"
RED = "#b3261e"


@dataclass(frozen=True)
class Faulty:
    app: App
    batch_id: str
    batch_number: str
    run: str
    alarms: list[dict[str, Any]]

    def alarm(self, source: str, rule: str | None = None) -> dict[str, Any]:
        return next(
            a for a in self.alarms if a["source"] == source and (rule is None or a["rule"] == rule)
        )


def train_and_approve(app: App, kind: str) -> None:
    admin, qp = fh.actor(app, "admin"), fh.actor(app, "qp")
    with app.uow() as uow:
        model = app.monitoring.train(
            uow, admin, kind=kind, master_file_code=HYDRO, machine_type="tablet_printer"
        )
    with app.uow() as uow:
        app.monitoring.approve(uow, qp, model.id, password=fh.TEST_PASSWORD, meaning="QP approval")


def faulty_batch(app: App) -> Faulty:
    for _ in range(3):
        batch_id = fh.make_batch(app)
        fh.release(app, batch_id)
    train_and_approve(app, "spc")
    train_and_approve(app, "mspc")
    printer = fh.machine(app, fh.machine_id(app, PRINTER))
    app.fleet.inject_fault(printer, Fault("nozzle_clog", severity=0.2, from_unit=5))
    batch_id = fh.make_batch(app)
    row = fh.batch(app, batch_id)
    from nearfab.monitoring import alarm_dict

    with app.uow() as uow:
        alarms = [alarm_dict(a) for a in app.monitoring.alarms(uow, batch_id=batch_id)]
    assert {a["source"] for a in alarms} == {"spc", "mspc"}, alarms
    return Faulty(app, batch_id, row.batch_number, row.job_id, alarms)


def _faulty(app: App) -> dict[str, Any]:
    """`faulty_batch`'s world, built once per worker; what `Faulty` holds besides the app."""
    made = faulty_batch(app)
    return {
        "batch_id": made.batch_id,
        "batch_number": made.batch_number,
        "run": made.run,
        "alarms": made.alarms,
    }


# a test asking for `faulty` gets a copy of `_faulty`'s world; any other, the seeded network
seeded = fh.seeded_or_world({"faulty": _faulty})
pytestmark = pytest.mark.parametrize("seeded", ["sqlite"], indirect=True)


@pytest.fixture
def faulty(seeded: App, request: pytest.FixtureRequest) -> Faulty:
    """The faulty run's alarms, on the test's own copy of the world that raised them."""
    return Faulty(seeded, **fh.built_data(request))


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def login(app: App, username: str) -> TestClient:
    client = TestClient(create_web_app(app))
    token = csrf_of(client.get("/login").text)
    response = client.post(
        "/login",
        data={"username": username, "password": fh.TEST_PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return client


def figures(page: str) -> dict[str, dict[str, Any]]:
    """Every Plotly figure embedded in a page, by its element id."""
    out = {}
    for el_id, data in re.findall(r'<div class="plot" id="([^"]+)" data-figure="([^"]*)"', page):
        out[el_id] = json.loads(html.unescape(data))
    return out


def trace(fig: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in fig["data"] if t.get("name", "").startswith(name))


# --- tests -----------------------------------------------------------------------------------
def test_logged_out_visitors_are_sent_to_the_login(seeded: App) -> None:
    client = TestClient(create_web_app(seeded))
    for path in ("/monitoring", "/monitoring/runs/job_X", "/alarms/alm_X"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next={path}"
    response = client.post("/alarms/alm_X/close", data={"note": "x"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    answer = client.get("/monitoring/runs/job_X/contributions.json?index=0")
    assert answer.status_code == 401
    assert "log in" in answer.json()["error"]["message"]


def test_overview_lists_the_open_alarms_machines_models_and_runs(faulty: Faulty) -> None:
    client = login(faulty.app, "pharmacist")
    page = client.get("/monitoring")
    assert page.status_code == 200
    text = page.text
    assert '<a href="/monitoring" aria-current="page">Monitoring</a>' in text
    assert '<a href="/plan">Plan</a>' in text
    open_table = text.split('id="open-alarm-table"')[1].split("</table>")[0]
    for alarm in faulty.alarms:
        assert f'href="/alarms/{alarm["id"]}"' in open_table
    assert f'<a href="/batches/{faulty.batch_id}">{faulty.batch_number}</a>' in open_table
    assert PRINTER in open_table
    assert "reading beyond the control limit (3σ)" in open_table  # words, not "we1"
    assert "Hotelling T² above its limit" in open_table
    assert f'id="open-count">{len(faulty.alarms)}<' in text
    assert "No alarm closed yet." in text
    machines = text.split('id="machines"')[1].split("</table>")[0]
    assert PRINTER in machines and "online" in machines and "complete" in machines
    models = text.split('id="models"')[1].split("</table>")[0]
    assert "SPC control charts" in models and "MSPC (T² and SPE)" in models
    assert HYDRO in models and "Quentin Parr" in models and "3 released runs" in models
    runs = text.split('id="runs"')[1].split("</table>")[0]
    assert f'href="/monitoring/runs/{faulty.run}"' in runs
    assert runs.count('<tr data-run="') == 4
    assert 'id="dead-letters"><b>0</b>' in text


def test_run_page_draws_control_charts_with_limits_and_flagged_points(faulty: Faulty) -> None:
    client = login(faulty.app, "qp")
    page = client.get(f"/monitoring/runs/{faulty.run}")
    assert page.status_code == 200, page.text
    text = page.text
    assert f'href="/batches/{faulty.batch_id}" id="batch-link">{faulty.batch_number}<' in text
    assert '<script src="/static/vendor/plotly.min.js" defer></script>' in text
    assert '<script src="/static/monitoring.js" defer></script>' in text
    assert "cdn" not in text.lower()
    figs = figures(text)
    metrics = [k.removeprefix("chart-") for k in figs if k.startswith("chart-")]
    assert "extrusion_pressure_kpa" in metrics and len(metrics) == 4
    pressure = figs["chart-extrusion_pressure_kpa"]
    names = [t["name"] for t in pressure["data"]]
    for expected in ("reading", "centre line", "upper control limit", "lower control limit"):
        assert expected in names
    assert "EWMA" in names and "EWMA limits" in names
    ucl = trace(pressure, "upper control limit")["y"][0]
    spc = faulty.alarm("spc", "we1")
    assert ucl == pytest.approx(spc["limit"])
    flagged = trace(pressure, "flagged by a rule")
    assert flagged["marker"]["color"] == RED
    assert len(flagged["y"]) > 10 and max(flagged["y"]) > ucl
    assert any("reading beyond the control limit" in t for t in flagged["text"])
    assert "flagged by a rule" not in [
        t["name"] for t in figs["chart-nozzle_temperature_c"]["data"]
    ]

    t2 = figs["t2-chart"]
    samples = t2["data"][0]
    limit = trace(t2, "limit")
    assert limit["y"][0] == pytest.approx(faulty.alarm("mspc", "t2")["limit"])
    reds = [i for i, c in enumerate(samples["marker"]["color"]) if c == RED]
    assert reds and all(samples["y"][i] > limit["y"][0] for i in reds)
    assert samples["customdata"][:3] == [0, 1, 2]
    assert "spe-chart" in figs
    assert 'data-url="/monitoring/runs/' in text and "contributions-chart" in text

    # the session JSON the page's script calls when a sample is clicked
    worst = reds[len(reds) // 2]
    answer = client.get(f"/monitoring/runs/{faulty.run}/contributions.json?index={worst}")
    assert answer.status_code == 200
    body = answer.json()
    assert body["index"] == worst and body["t2"] > body["t2_limit"]
    assert body["metrics"][body["t2_contributions"].index(max(body["t2_contributions"]))] == (
        "extrusion_pressure_kpa"
    )
    assert [t["type"] for t in body["figure"]["data"]] == ["bar", "bar"]
    assert body["figure"]["data"][0]["x"] == body["t2_contributions"]
    bad = client.get(f"/monitoring/runs/{faulty.run}/contributions.json?index=99999")
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "index"

    # without JavaScript: the sample form renders the contribution chart on the server
    chosen = client.get(f"/monitoring/runs/{faulty.run}?sample={worst}")
    assert "contributions-chart" in figures(chosen.text)
    assert f"Sample {worst} at" in chosen.text


def test_run_without_an_approved_model_shows_raw_charts_and_says_so(seeded: App) -> None:
    run = fh.batch(seeded, fh.make_batch(seeded)).job_id
    client = login(seeded, "qp")
    page = client.get(f"/monitoring/runs/{run}")
    assert page.status_code == 200
    assert 'id="no-spc"' in page.text and 'id="no-mspc"' in page.text
    figs = figures(page.text)
    assert len(figs) == 4 and all(len(f["data"]) == 1 for f in figs.values())
    assert client.get(f"/monitoring/runs/{run}/contributions.json?index=0").status_code == 404
    missing = client.get("/monitoring/runs/job_NOPE")
    assert missing.status_code == 404 and "job_NOPE" in missing.text
    assert client.get("/alarms/alm_NOPE").status_code == 404


def test_alarm_page_shows_contributions_and_a_qp_closes_it(faulty: Faulty) -> None:
    alarm = faulty.alarm("mspc", "t2")
    client = login(faulty.app, "qp")
    page = client.get(f"/alarms/{alarm['id']}")
    assert page.status_code == 200
    text = page.text
    assert (
        f'<a href="/batches/{faulty.batch_id}" id="alarm-batch">{faulty.batch_number}</a>' in text
    )
    fig = figures(text)["alarm-contributions"]
    assert fig["data"][0]["y"][0] == "Extrusion pressure (kPa)"  # the largest contribution first
    assert 'id="contribution-table"' in text
    assert 'id="ack-form"' in text and 'id="close-form"' in text
    assert "Handled as a deviation on the batch" in text
    token = csrf_of(text)

    # a form without its token is refused and changes nothing
    refused = client.post(
        f"/alarms/{alarm['id']}/close",
        data={"disposition": "no_impact", "note": "checked", "csrf_token": ""},
    )
    assert refused.status_code == 403
    assert 'role="alert"' in refused.text and "form expired" in refused.text
    # a blank note is refused with the reason on the page, the typed disposition kept
    blank = client.post(
        f"/alarms/{alarm['id']}/close",
        data={"disposition": "false_alarm", "note": "  ", "csrf_token": token},
    )
    assert blank.status_code == 422 and "Not closed:" in blank.text
    assert '<option value="false_alarm" selected>' in blank.text

    ack = client.post(
        f"/alarms/{alarm['id']}/acknowledge",
        data={"note": "looking at the nozzle", "csrf_token": token},
        follow_redirects=False,
    )
    assert ack.status_code == 303 and ack.headers["location"] == f"/alarms/{alarm['id']}"
    closed = client.post(
        f"/alarms/{alarm['id']}/close",
        data={
            "disposition": "assignable_cause_fixed",
            "note": "nozzle cleaned; units checked by weight",
            "csrf_token": token,
        },
    )
    assert closed.status_code == 200 and closed.url.path == f"/alarms/{alarm['id']}"
    assert 'role="status"' in closed.text and "Assignable cause found and fixed" in closed.text
    assert 'id="alarm-status">closed<' in closed.text
    assert 'id="close-form"' not in closed.text
    assert "nozzle cleaned; units checked by weight" in closed.text.split('id="audit"')[1]

    with faulty.app.uow() as uow:
        rows = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_type == "alarm", AuditEntry.entity_id == alarm["id"]
            )
        ).all()
        status = faulty.app.monitoring.get_alarm(uow, alarm["id"]).status
    assert status == "closed"
    transitions = [r for r in rows if r.action == "transition"]
    assert [r.new["status"] for r in transitions if r.new] == ["acknowledged", "closed"]
    assert transitions[-1].new and transitions[-1].new["disposition"] == "assignable_cause_fixed"
    assert transitions[-1].actor_name.startswith("Quentin Parr")

    overview = client.get("/monitoring").text
    closed_table = overview.split('id="closed-alarm-table"')[1].split("</table>")[0]
    assert f'href="/alarms/{alarm["id"]}"' in closed_table
    assert "assignable cause fixed" in closed_table


def test_an_operator_sees_no_forms_and_cannot_close(faulty: Faulty) -> None:
    alarm = faulty.alarm("spc", "we1")
    client = login(faulty.app, "operator")
    page = client.get(f"/alarms/{alarm['id']}")
    assert page.status_code == 200
    assert 'id="close-form"' not in page.text
    assert "A QP or a pharmacist acknowledges and closes alarms." in page.text
    refused = client.post(
        f"/alarms/{alarm['id']}/close",
        data={"disposition": "no_impact", "note": "looked fine", "csrf_token": csrf_of(page.text)},
    )
    assert refused.status_code == 403
    # refused by the route's declared permission before anything runs, as in the API
    assert "Not allowed" in refused.text and 'role="alert"' in refused.text
    assert "alarm: close needs one of the roles" in refused.text
    with faulty.app.uow() as uow:
        assert faulty.app.monitoring.get_alarm(uow, alarm["id"]).status == "open"

    clinician = login(faulty.app, "clinician")
    denied = clinician.get("/monitoring")
    assert denied.status_code == 403 and "Not allowed" in denied.text


def test_machine_page_shows_live_charts_across_runs_with_the_model_limits(faulty: Faulty) -> None:
    client = login(faulty.app, "pharmacist")
    overview = client.get("/monitoring").text
    machine_id = fh.machine_id(faulty.app, PRINTER)
    assert f'href="/monitoring/machines/{machine_id}"' in overview

    page = client.get(f"/monitoring/machines/{machine_id}?hours=24")
    assert page.status_code == 200, page.text
    figs = figures(page.text)
    pressure = figs["chart-extrusion_pressure_kpa"]
    ucl = trace(pressure, "upper control limit")["y"][0]
    assert ucl == pytest.approx(faulty.alarm("spc", "we1")["limit"])
    beyond = trace(pressure, "beyond a limit")
    assert beyond["marker"]["color"] == RED and max(beyond["y"]) > ucl
    assert 'http-equiv="refresh" content="15"' in page.text
    assert f'href="/monitoring/runs/{faulty.run}"' in page.text  # the faulty run is listed
    # the window reaches back over the earlier, healthy runs too
    readings = sum(len(t["x"]) for t in pressure["data"] if t["name"] == "reading")
    assert readings == 4 * 126  # three healthy runs and the faulty one, 126 readings each

    assert client.get(f"/monitoring/machines/{machine_id}?hours=0").status_code == 422
    assert client.get("/monitoring/machines/mch_NOPE").status_code == 404
