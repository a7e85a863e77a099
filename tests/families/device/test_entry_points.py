"""The flowmeter from prescription to the patient through the REST API, the command line and
the web pages (issue 16), on the device network of `network.py`: the pharmacy's build through
the API with the wrong role refused at release, the home build's approval through the API (the
planner refused, the control site's responsible person accepted), the CLI submitting,
releasing and dispensing, and the pages taking a pasted FHIR prescription, releasing and
dispensing. The printer's run is the machine's own step (the twin, through the fleet)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests import cli_helpers
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch
from tests.families.device import network as net

from nearfab.custody import decode_datamatrix, parse_scan
from nearfab.web.server import create_web_app

world = fh.world_fixture(net.build)


def _login(client: TestClient, username: str) -> dict[str, str]:
    password = net.password_of(username)
    r = client.post("/api/v1/auth/token", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _sign(username: str, **extra: Any) -> dict[str, Any]:
    return {"password": net.password_of(username), "username": username, **extra}


def test_the_api_takes_a_flowmeter_to_the_patient(world: fh.Built) -> None:
    app = world.app
    client = TestClient(create_web_app(app))
    clinician, planner = _login(client, "clinician"), _login(client, "planner")
    r = client.post("/api/v1/orders", json=net.bundle(30, "M", rx="rx-api"), headers=clinician)
    assert r.status_code == 201, r.text
    (order,) = r.json()["orders"]
    assert order["status"] == "designed" and order["design"]["size"] == "M"
    # outside the envelope through the API: stored, stopped, the reason named
    r = client.post("/api/v1/orders", json=net.bundle(80, "M", rx="rx-api-80"), headers=clinician)
    assert r.status_code == 201 and r.json()["orders"][0]["status"] == "stopped"
    assert "outside the validated envelope" in r.json()["orders"][0]["stop_reason"]

    r = client.post(f"/api/v1/orders/{order['id']}/schedule", headers=planner)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    r = client.post(f"/api/v1/jobs/{job_id}/ticket", headers=planner)
    assert r.status_code == 200, r.text
    signed = r.json()["payload"]["design"]["design_file"]["sha256"]
    assert signed == order["design"]["design_file"]["sha256"]
    r = client.post(f"/api/v1/jobs/{job_id}/start", headers=_login(client, "operator"))
    assert r.status_code == 200, r.text
    batch_id = r.json()["id"]
    fh.finish(app, batch_id)
    qp = _login(client, "qp")
    record = client.get(f"/api/v1/batches/{batch_id}", headers=qp).json()
    assert record["status"] == "completed" and record["units_made"] == 1
    assert {"nozzle_temperature_c", "bed_temperature_c", "extrusion_rate_mm3_s", "layer"} == set(
        record["telemetry_summary"]
    )
    fh.prepare_release(app, batch_id)
    ok = _sign(net.RP, decision="release", meaning="Responsible person: device released")
    # the wrong role: a pharmacist may not release the device
    r = client.post(
        f"/api/v1/batches/{batch_id}/decision",
        json=_sign("pharmacist", decision="release", meaning="release"),
        headers=_login(client, "pharmacist"),
    )
    assert r.status_code == 403, r.text
    r = client.post(f"/api/v1/batches/{batch_id}/decision", json=ok, headers=_login(client, net.RP))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "released"

    # the pack's UDI: a GS1 DataMatrix with the GTIN, expiry, lot and serial
    pharmacist = _login(client, "pharmacist")
    [pack] = ch.units(app, batch_id)
    r = client.get(f"/api/v1/packs/{pack.id}/label", params={"format": "png"}, headers=pharmacist)
    assert r.status_code == 200
    scanned = decode_datamatrix(r.content)
    udi = parse_scan(scanned)
    assert (udi.gtin, udi.serial) == (net.GTIN, pack.serial)
    view = client.get(f"/api/v1/orders/{order['id']}", headers=clinician).json()
    r = client.post(
        "/api/v1/dispense",
        json={"scan": scanned, "patient_ref": view["patient_ref"]},
        headers=pharmacist,
    )
    assert r.status_code == 200, r.text
    assert client.get(f"/api/v1/orders/{order['id']}", headers=clinician).json()["status"] == (
        "dispensed"
    )
    # EPCIS events as for medicines: the pack commissioned, then dispensed
    r = client.get("/api/v1/epcis/events", headers=qp)
    assert r.status_code == 200, r.text
    events = r.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    steps = [
        str(e.get("bizStep", "")).rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        for e in events
        if any(pack.serial in str(epc) for epc in e.get("epcList", []))
    ]
    assert "commissioning" in steps and "dispensing" in steps, steps


def test_the_api_approves_a_home_build_only_by_the_responsible_person(world: fh.Built) -> None:
    app = world.app
    client = TestClient(create_web_app(app))
    job_id = net.home_job(app, "rx-api-home")
    # nobody issues its ticket by hand: the planner, nor the QP (who could before)
    for who in ("planner", "qp"):
        r = client.post(f"/api/v1/jobs/{job_id}/ticket", headers=_login(client, who))
        assert r.status_code == 409, r.text
        assert (r.json()["error"]["code"], r.json()["error"]["field"]) == (
            "build_approval_required",
            "approver",
        )
    # the approval, attacked: a role without job.build_approve (planner, pharmacist, the home
    # site's own operator), a responsible person of another site (the pharmacy's), the
    # control site's QP (not the family's approver), a wrong password
    approve = f"/api/v1/jobs/{job_id}/build-approval"
    for who, code in (
        ("planner", "forbidden"),
        ("pharmacist", "forbidden"),
        (net.HOME_OPERATOR, "forbidden"),
        (net.RP_PHARMACY, "other_site"),
        ("qp", "wrong_signatory"),
    ):
        r = client.post(approve, json=_sign(who), headers=_login(client, who))
        assert (r.status_code, r.json()["error"]["code"]) == (403, code), (who, r.text)
    # the queue is read like the release queue: not by the planner nor the home operator; a
    # site's staff see their own site's builds only (none of the patient's home)
    for who in ("planner", net.HOME_OPERATOR):
        r = client.get("/api/v1/builds/awaiting-approval", headers=_login(client, who))
        assert r.status_code == 403, (who, r.text)
    for who in ("pharmacist", net.RP_PHARMACY):
        r = client.get("/api/v1/builds/awaiting-approval", headers=_login(client, who))
        assert r.status_code == 200 and job_id not in r.text, (who, r.text)
    rp = _login(client, net.RP)
    r = client.post(approve, json=_sign(net.RP, password="not-the-password"), headers=rp)
    assert r.status_code == 401, r.text
    assert fh.job(app, job_id).ticket is None
    r = client.get("/api/v1/builds/awaiting-approval", headers=rp)
    assert r.status_code == 200, r.text
    [row] = [b for b in r.json() if b["job_id"] == job_id]
    assert (row["site_code"], row["approver"], row["may_approve"]) == (
        net.HOME,
        "responsible_person",
        True,
    )
    r = client.post(approve, json=_sign(net.RP), headers=rp)
    assert r.status_code == 200, r.text
    approval = r.json()["payload"]["build_approval"]
    assert (approval["role"], approval["site_kind"], approval["meaning"]) == (
        "responsible_person",
        "home",
        "home build approval",
    )
    assert approval["signature_id"].startswith("sig") and approval["at"]
    # approved once: a second approval finds no planned build
    r = client.post(approve, json=_sign(net.RP), headers=rp)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "not_awaiting_approval")
    assert all(b["job_id"] != job_id for b in client.get(
        "/api/v1/builds/awaiting-approval", headers=rp).json())  # fmt: skip
    # the home operator, trained on the product, starts the approved build at home
    r = client.post(f"/api/v1/jobs/{job_id}/start", headers=_login(client, net.HOME_OPERATOR))
    assert r.status_code == 200, r.text


def test_the_pages_approve_a_home_build_only_by_the_responsible_person(world: fh.Built) -> None:
    app = world.app
    job_id = net.home_job(app, "rx-web-home")
    form = {"meaning": "home build approval", "password": fh.TEST_PASSWORD}
    # the menu entry only for the roles that may open the page (those reading the release
    # queue); a site's staff see no build of the patient's home, and none may approve
    for who in ("planner", "pharmacist", net.HOME_OPERATOR, net.RP_PHARMACY):
        browser = net.web_login(app, who)
        reads = who in ("pharmacist", net.RP_PHARMACY)
        assert ('href="/builds/approvals"' in browser.get("/").text) is reads, who
        r = browser.get("/builds/approvals")
        assert r.status_code == (200 if reads else 403) and job_id not in r.text, who
        token = fh.csrf(browser.get("/account").text)
        r = browser.post(
            f"/builds/{job_id}/approve",
            data={**form, "password": net.password_of(who), "csrf_token": token},
        )
        assert r.status_code == 403, who
    qp = net.web_login(app, "qp")
    page = qp.get("/builds/approvals").text
    assert f'data-job="{job_id}"' in page and "you do not hold it" in page
    assert 'class="narrow build-approve"' not in page  # no form for the QP
    r = qp.post(
        f"/builds/{job_id}/approve", data={**form, "csrf_token": fh.csrf(page)}
    )  # the QP posting anyway: refused by the service, said on the page
    assert r.status_code == 200 and "Refused:" in r.text and "responsible_person" in r.text
    rp = net.web_login(app, net.RP)
    home = rp.get("/").text
    assert 'href="/builds/approvals"' in home
    page = rp.get("/builds/approvals").text
    assert f'action="/builds/{job_id}/approve"' in page
    # no CSRF token, a stale one: refused, nothing signed
    for token in ("", "forged-token"):
        r = rp.post(
            f"/builds/{job_id}/approve",
            data={**form, "username": net.RP, "password": net.RP_PASSWORD, "csrf_token": token},
        )
        assert "Refused:" in r.text, r.text[:500]
    assert fh.job(app, job_id).ticket is None
    r = rp.post(
        f"/builds/{job_id}/approve",
        data={**form, "username": net.RP, "password": "wrong", "csrf_token": fh.csrf(page)},
    )
    assert "Refused:" in r.text and fh.job(app, job_id).ticket is None
    r = rp.post(
        f"/builds/{job_id}/approve",
        data={**form, "username": net.RP, "password": net.RP_PASSWORD, "csrf_token": fh.csrf(page)},
    )
    assert r.status_code == 200 and f"Build {job_id} approved" in r.text, r.text[:2000]
    approval = fh.job(app, job_id).ticket["payload"]["build_approval"]
    assert approval["by"] == fh.actor(app, net.RP).user_id and approval["signature_id"]


def test_the_cli_submits_releases_and_dispenses_a_flowmeter(
    world: fh.Built, tmp_path: Path
) -> None:
    app = world.app
    env = {
        "NEARFAB_DATABASE_URL": app.engine.url.render_as_string(hide_password=False),
        "NEARFAB_PASSWORD_MAX_AGE_DAYS": "3650",
    }

    def cli(*args: str, code: int = 0) -> Any:
        done = cli_helpers.run([*args, "--json"], env=env, data_dir=app.settings.data_dir)
        assert done.returncode == code, done.stdout + done.stderr
        return json.loads(done.stdout)

    rx = tmp_path / "rx.json"
    rx.write_text(json.dumps(net.bundle(15, "S", rx="rx-cli")))
    (order,) = cli("order", "submit", str(rx), "--site", "GSTT-PH")["orders"]
    assert order["status"] == "designed"
    batch_id = fh.start(app, fh.ticketed_job(app, order["id"]))
    fh.finish(app, batch_id)
    fh.prepare_release(app, batch_id)
    refused = cli(
        "release", "sign", batch_id, "--decision", "release", "--user", "pharmacist",
        "--password", fh.TEST_PASSWORD, "--meaning", "release", code=2,
    )  # fmt: skip
    assert refused["error"]["code"] == "forbidden"
    released = cli(
        "release", "sign", batch_id, "--decision", "release", "--user", net.RP,
        "--password", net.RP_PASSWORD, "--meaning", "Responsible person: device released",
    )  # fmt: skip
    assert released["status"] == "released"
    [pack] = ch.units(app, batch_id)
    done = cli(
        "dispense", "--scan", ch.scan(pack), "--patient", ch.patient_ref(app, pack),
        "--user", "pharmacist", "--password", fh.TEST_PASSWORD,
    )  # fmt: skip
    assert done["order_complete"] is True
    assert cli("order", "show", order["id"])["status"] == "dispensed"

    # a home build, approved from the command line by the responsible person (not the QP)
    job_id = net.home_job(app, "rx-cli-home")
    assert job_id in [b["job_id"] for b in cli("builds", "awaiting")]
    refused = cli(
        "builds", "approve", job_id, "--user", "qp", "--password", fh.TEST_PASSWORD, code=2
    )
    assert refused["error"]["code"] == "wrong_signatory"
    ticket = cli("builds", "approve", job_id, "--user", net.RP, "--password", net.RP_PASSWORD)
    assert ticket["payload"]["build_approval"]["role"] == "responsible_person"
    assert fh.job(app, job_id).status == "ticket_issued"


def test_the_pages_take_a_pasted_prescription_release_and_dispense(world: fh.Built) -> None:
    app = world.app
    clinician = fh.web_login(app, "clinician")
    form = clinician.get("/orders/new").text
    r = clinician.post(
        "/orders/new",
        data={
            "csrf_token": fh.csrf(form),
            "mode": "paste",
            "fhir_json": json.dumps(net.bundle(40, "M", rx="rx-web")),
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text[:2000]
    order_id = r.headers["location"].rsplit("/", 1)[1]
    assert fh.order_status(app, order_id) == "designed"
    batch_id = fh.start(app, fh.ticketed_job(app, order_id))
    fh.finish(app, batch_id)
    fh.prepare_release(app, batch_id)
    qp = fh.web_login(app, "qp")
    page = qp.get(f"/batches/{batch_id}").text
    # the core's batch record, in the family's words (ISO 13485)
    assert f"Device history record {fh.batch(app, batch_id).batch_number}" in page
    assert "Test coupon: critical dimensions" in page and "Flow check of every device" in page
    rp = net.web_login(app, net.RP)
    queue = rp.get("/release").text
    done = rp.post(
        f"/release/{batch_id}",
        data={
            "csrf_token": fh.csrf(queue),
            "decision": "release",
            "meaning": "Responsible person: device released",
            "username": net.RP,
            "password": net.RP_PASSWORD,
        },
    )
    assert done.status_code in (200, 303), done.text[:2000]
    assert fh.batch(app, batch_id).status == "released"
    [pack] = ch.units(app, batch_id)
    pharmacist = fh.web_login(app, "pharmacist")
    form = {
        "scan": ch.scan(pack),
        "patient_ref": ch.patient_ref(app, pack),
        "csrf_token": fh.csrf(pharmacist.get("/dispense").text),
        "action": "dispense",
    }
    r = pharmacist.post("/dispense", data=form)
    assert r.status_code == 200 and 'id="result"' in r.text, r.text[:2000]
    assert fh.order_status(app, order_id) == "dispensed"


@pytest.mark.parametrize("size", ["XL"])
def test_the_pages_show_why_an_order_outside_the_envelope_stopped(
    world: fh.Built, size: str
) -> None:
    app = world.app
    clinician = fh.web_login(app, "clinician")
    form = clinician.get("/orders/new").text
    r = clinician.post(
        "/orders/new",
        data={
            "csrf_token": fh.csrf(form),
            "mode": "paste",
            "fhir_json": json.dumps(net.bundle(25, size, rx="rx-web-xl")),
        },
    )
    assert r.status_code == 200
    assert "outside the validated envelope" in r.text
