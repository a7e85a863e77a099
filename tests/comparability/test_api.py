"""Comparability and proficiency testing through the API, the CLI (--json) and the pages, as
attackers: each role from its own site, another site and the control site. A site sees its own
result and suspension only; the control site's QP sees every site's and alone opens, scores and
closes; a suspension is lifted only by the QP's e-signature."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from tests import cli_helpers
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.web.server import create_web_app

seeded = fh.seeded


def _token(app: App, username: str) -> dict[str, str]:
    with app.uow() as uow:
        token, _ = app.users.issue_token(uow, username, fh.TEST_PASSWORD)
    return {"Authorization": f"Bearer {token}"}


def _world(app: App) -> tuple[TestClient, dict[str, dict[str, str]], str]:
    fh.site_user(app, "pharm-man", "pharmacist", "MAN-PH")
    fh.site_user(app, "qp-gstt", "qp", "GSTT-PH")
    batch = fh.make_batch(app)
    with app.uow() as uow:
        code = app.orders.get(uow, fh.batch(app, batch).order_id).master_file_code
    client = TestClient(create_web_app(app))
    who = {u: _token(app, u) for u in ("qp", "pharmacist", "pharm-man", "auditor", "operator")}
    who["qp-gstt"] = _token(app, "qp-gstt")
    return client, who, code


def _error(r: Any) -> str | None:
    return (r.json().get("error") or {}).get("code")


def test_api_attacks_on_rounds_results_and_suspensions(seeded: App) -> None:
    app = seeded
    client, who, code = _world(app)
    body = {
        "master_file_code": code,
        "attribute": "assay of blind sample",
        "unit": "%",
        "reference": "PT-2026-1",
        "site_ids": ["GSTT-PH", "MAN-PH", "MOB-1", "CTRL"],
        "assigned_value": 100.0,
        "sd_pt": 2.0,
    }
    # only the control site's QP opens a round: a site's QP is refused as other_site
    r = client.post("/api/v1/proficiency/rounds", json=body, headers=who["pharmacist"])
    assert r.status_code == 403 and _error(r) == "forbidden"
    r = client.post("/api/v1/proficiency/rounds", json=body, headers=who["qp-gstt"])
    assert r.status_code == 403 and _error(r) == "other_site"
    r = client.post("/api/v1/proficiency/rounds", json=body, headers=who["qp"])
    assert r.status_code == 201, r.text
    round_id = r.json()["id"]
    bad = client.post("/api/v1/proficiency/rounds", json={**body, "sd_pt": -1}, headers=who["qp"])
    assert bad.status_code == 422 and "sd_pt" in json.dumps(bad.json())
    url = f"/api/v1/proficiency/rounds/{round_id}"
    # a site enters its own result only
    r = client.post(
        f"{url}/results", json={"site_id": "MAN-PH", "value": 1}, headers=who["pharmacist"]
    )
    assert r.status_code == 403 and _error(r) == "other_site"
    r = client.post(
        f"{url}/results", json={"site_id": "GSTT-PH", "value": 101}, headers=who["pharmacist"]
    )
    assert r.status_code == 201, r.text
    assert [x["site_code"] for x in r.json()["results"]] == ["GSTT-PH"]
    again = client.post(
        f"{url}/results", json={"site_id": "GSTT-PH", "value": 90}, headers=who["pharmacist"]
    )
    assert again.status_code == 409
    r = client.post(
        f"{url}/results", json={"site_id": "MAN-PH", "value": 107}, headers=who["pharm-man"]
    )
    assert r.status_code == 201
    for site, value in (("MOB-1", 99), ("CTRL", 100)):
        r = client.post(f"{url}/results", json={"site_id": site, "value": value}, headers=who["qp"])
        assert r.status_code == 201
    # an operator may not enter, a pharmacist may not score
    r = client.post(
        f"{url}/results", json={"site_id": "GSTT-PH", "value": 1}, headers=who["operator"]
    )
    assert r.status_code == 403
    assert client.post(f"{url}/score", headers=who["pharmacist"]).status_code == 403
    r = client.post(f"{url}/score", headers=who["qp"])
    assert r.status_code == 200, r.text
    z = {x["site_code"]: x["z"] for x in r.json()["results"]}
    assert z == {"GSTT-PH": 0.5, "MAN-PH": 3.5, "MOB-1": -0.5, "CTRL": 0.0}  # (x - 100) / 2
    # each site reads its own result; the control site's QP and the auditor read every one
    mine = client.get(url, headers=who["pharmacist"]).json()["results"]
    assert [x["site_code"] for x in mine] == ["GSTT-PH"]
    assert len(client.get(url, headers=who["auditor"]).json()["results"]) == 4
    # suspensions: MAN-PH's is seen by MAN-PH and the network, not by GSTT-PH
    sus = "/api/v1/proficiency/suspensions"
    assert client.get(sus, headers=who["pharmacist"]).json() == []
    [own] = client.get(sus, headers=who["pharm-man"]).json()
    assert own["site_code"] == "MAN-PH" and own["status"] == "active"
    assert [s["id"] for s in client.get(sus, headers=who["qp"]).json()] == [own["id"]]
    peek = client.get(sus, params={"site_id": own["site_id"]}, headers=who["pharmacist"])
    assert peek.status_code == 403 and _error(peek) == "other_site"
    # lifting it: a site may not; a wrong password changes nothing; the QP's signature does
    close = f"{sus}/{own['id']}/close"
    capa = {"capa_reference": "CAPA-7", "summary": "retrained", "password": fh.TEST_PASSWORD}
    assert client.post(close, json=capa, headers=who["pharm-man"]).status_code == 403
    # a QP of a point-of-care site holds the role but not a network-level grant
    refused = client.post(close, json=capa, headers=who["qp-gstt"])
    assert refused.status_code == 403 and _error(refused) == "other_site"
    assert client.get(sus, headers=who["qp"]).json()[0]["status"] == "active"
    wrong = client.post(close, json={**capa, "password": "wrong"}, headers=who["qp"])
    assert wrong.status_code in (401, 422) and "password" in json.dumps(wrong.json())
    assert client.get(sus, headers=who["qp"]).json()[0]["status"] == "active"
    # the web form: a wrong password is refused on the page and changes nothing (without the
    # username the refusal would be the first-signature rule instead)
    qp_web = fh.web_login(app, "qp")
    form = {
        **capa,
        "username": "qp",
        "password": "wrong",
        "csrf_token": fh.csrf(qp_web.get("/comparability").text),
    }
    page = qp_web.post(f"/proficiency/suspensions/{own['id']}/close", data=form)
    assert page.status_code == 200
    assert "Refused: signature refused: the user ID or password does not match" in page.text
    assert client.get(sus, headers=who["qp"]).json()[0]["status"] == "active"
    done = client.post(close, json={**capa, "username": "qp"}, headers=who["qp"])
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "lifted" and done.json()["signature_id"]


def test_report_api_site_staff_see_their_own_site(seeded: App) -> None:
    app = seeded
    client, who, code = _world(app)
    network = client.get(f"/api/v1/comparability/{code}", headers=who["qp"])
    assert network.status_code == 200, network.text
    own = client.get(f"/api/v1/comparability/{code}", headers=who["pharm-man"]).json()
    gstt = fh.site_id(app, "GSTT-PH")
    for attribute in own["attributes"]:
        assert all(g["site_id"] != gstt for g in attribute["groups"])
    assert client.get(f"/api/v1/comparability/{code}", headers=who["operator"]).status_code == 403
    r = client.get(f"/api/v1/comparability/{code}", params={"by": "nope"}, headers=who["qp"])
    assert r.status_code == 422
    r = client.get("/api/v1/comparability/NO-SUCH", headers=who["qp"])
    assert r.status_code in (404, 409) and "NO-SUCH" in r.text


def test_cli_json_and_the_pages(seeded: App) -> None:
    app = seeded
    _client, _who, code = _world(app)
    env = {
        "NEARFAB_DATABASE_URL": app.engine.url.render_as_string(hide_password=False),
        # the CLI runs on the wall clock, years after the seeded accounts' passwords were set
        "NEARFAB_PASSWORD_MAX_AGE_DAYS": "36500",
    }
    data = app.settings.data_dir
    common = ["--user", "qp", "--password", fh.TEST_PASSWORD, "--json"]
    opened = cli_helpers.run(
        ["comparability", "open-round", code, *common, "--attribute", "assay", "--unit", "%",
         "--reference", "PT-CLI", "--site", "GSTT-PH", "--site", "MAN-PH", "--site", "CTRL"],
        env=env, data_dir=data,
    )  # fmt: skip
    assert opened.returncode == 0, opened.stdout + opened.stderr
    round_id = json.loads(opened.stdout)["id"]
    refused = cli_helpers.run(["comparability", "score", round_id, *common], env=env, data_dir=data)
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["error"]["code"] == "too_few_results"
    report = cli_helpers.run(["comparability", "report", code, *common], env=env, data_dir=data)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["master_file_code"] == code
    # three close results: scored by Algorithm A, every |z| small, nobody suspended
    for site, value in (("GSTT-PH", 10.0), ("MAN-PH", 10.2), ("CTRL", 9.9)):
        entered = cli_helpers.run(
            ["comparability", "enter-result", round_id, *common, "--site", site,
             "--value", str(value)],
            env=env, data_dir=data,
        )  # fmt: skip
        assert entered.returncode == 0, entered.stdout
    scored = cli_helpers.run(["comparability", "score", round_id, *common], env=env, data_dir=data)
    assert scored.returncode == 0, scored.stdout
    assert {r["verdict"] for r in json.loads(scored.stdout)["results"]} == {"satisfactory"}
    listed = cli_helpers.run(["comparability", "suspensions", *common], env=env, data_dir=data)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    missing = cli_helpers.run(
        ["comparability", "close-capa", "no-such", *common, "--capa", "C-1", "--summary", "x"],
        env=env, data_dir=data,
    )  # fmt: skip
    assert missing.returncode == 2 and json.loads(missing.stdout)["error"]["code"] == "not_found"
    # the pages: the control site's QP sees the report and the round; another site's staff
    # get the round answered as not found
    qp = fh.web_login(app, "qp")
    page = qp.get("/comparability", params={"code": code})
    assert page.status_code == 200 and "Comparability across the network" in page.text
    assert "data-figure" in page.text and "/static/vendor/plotly.min.js" in page.text
    assert "cdn" not in page.text.lower()
    assert qp.get(f"/proficiency/rounds/{round_id}").status_code == 200
    # the round went to GSTT-PH, MAN-PH and the control site: MOB-1's staff are outsiders
    fh.site_user(app, "pharm-mob", "pharmacist", "MOB-1")
    assert fh.web_login(app, "pharm-man").get(f"/proficiency/rounds/{round_id}").status_code == 200
    outsider = fh.web_login(app, "pharm-mob")
    assert outsider.get(f"/proficiency/rounds/{round_id}").status_code == 404
