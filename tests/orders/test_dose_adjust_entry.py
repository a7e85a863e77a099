"""Dose adjustment through the API, the CLI (--json) and the pages, as attackers: a pharmacist
records observations but may not decide; a clinician of another site is refused; a decision
is signed. Expected doses are the hand calculation of tests/orders/test_dose_adjust.py
(140 cm, 35 kg: 1.166667 m², 8 mg/m²/day, 3 a day, steps of 0.5 -> 3.5 a dose)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from tests import cli_helpers
from tests import flow_helpers as fh
from tests.orders.test_dose_adjust import clinician_elsewhere, vital, vitals, with_rule

from nearfab.bootstrap import App
from nearfab.web.server import create_web_app

seeded = fh.seeded


def _token(app: App, username: str) -> dict[str, str]:
    with app.uow() as uow:
        token, _ = app.users.issue_token(uow, username, fh.TEST_PASSWORD)
    return {"Authorization": f"Bearer {token}"}


def _code(r: object) -> str | None:
    body = r.json()  # type: ignore[attr-defined]
    return (body.get("error") or {}).get("code") if isinstance(body, dict) else None


def test_api_records_proposes_and_only_the_sites_clinician_decides(seeded: App) -> None:
    app = seeded
    order_id = with_rule(app)
    clinician_elsewhere(app)
    client = TestClient(create_web_app(app))
    who = {u: _token(app, u) for u in ("clinician", "pharmacist", "clin-man", "qp")}
    url = f"/api/v1/orders/{order_id}/observations"
    # another site's clinician may not record for this order; a QP holds no such permission
    assert client.post(url, json=vitals(app), headers=who["clin-man"]).status_code == 403
    assert client.post(url, json=vitals(app), headers=who["qp"]).status_code == 403
    bad = client.post(url, json={"resourceType": "Patient"}, headers=who["pharmacist"])
    assert bad.status_code == 422 and "resourceType" in bad.text
    r = client.post(url, json=vitals(app), headers=who["pharmacist"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert len(body["observations"]) == 2
    proposal = body["proposal"]
    assert (proposal["proposed_value"], proposal["proposed_unit"]) == (3.5, "mg")
    assert proposal["current_value"] == 2.0 and proposal["status"] == "proposed"
    listed = client.get(f"/api/v1/orders/{order_id}/dose-proposals", headers=who["clinician"])
    assert [p["id"] for p in listed.json()] == [proposal["id"]]
    seen = client.get(url, headers=who["clinician"]).json()
    assert {o["code"] for o in seen} == {"29463-7", "8302-2"}
    sign = {"username": "clinician", "password": fh.TEST_PASSWORD, "meaning": "dose accepted"}
    accept = f"/api/v1/dose-proposals/{proposal['id']}/accept"
    refused = client.post(
        accept, json={**sign, "username": "pharmacist"}, headers=who["pharmacist"]
    )
    assert refused.status_code == 403
    other = client.post(accept, json={**sign, "username": "clin-man"}, headers=who["clin-man"])
    assert other.status_code == 403 and _code(other) == "other_site"
    unsigned = client.post(accept, json={"meaning": "ok"}, headers=who["clinician"])
    assert unsigned.status_code == 422
    ok = client.post(accept, json=sign, headers=who["clinician"])
    assert ok.status_code == 200, ok.text
    new_id = ok.json()["new_order_id"]
    assert ok.json()["status"] == "accepted" and ok.json()["signature_id"]
    new = client.get(f"/api/v1/orders/{new_id}", headers=who["clinician"]).json()
    assert new["status"] == "designed"
    again = client.post(accept, json=sign, headers=who["clinician"])
    assert again.status_code == 409 and _code(again) == "decided"
    # asked again, the rule is put to the version in force, which already has its dose
    none = client.post(f"/api/v1/orders/{order_id}/dose-proposals", headers=who["pharmacist"])
    assert none.status_code == 409 and _code(none) == "no_change"


def test_cli_json(seeded: App, tmp_path: Path) -> None:
    app = seeded
    order_id = with_rule(app)
    env = {
        "NEARFAB_DATABASE_URL": app.engine.url.render_as_string(hide_password=False),
        "NEARFAB_PASSWORD_MAX_AGE_DAYS": "36500",
    }
    data = app.settings.data_dir
    # the CLI runs on the wall clock: the measurements are an hour old by it
    at = datetime.now(UTC) - timedelta(hours=1)
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": vital("29463-7", 35, "kg", at)},
            {"resource": vital("8302-2", 140, "cm", at)},
        ],
    }
    file = tmp_path / "vitals.json"
    file.write_text(json.dumps(bundle))
    pharm = ["--user", "pharmacist", "--password", fh.TEST_PASSWORD, "--json"]
    recorded = cli_helpers.run(
        ["order", "observations", order_id, *pharm, "--file", str(file)], env=env, data_dir=data
    )
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    proposal = json.loads(recorded.stdout)["proposal"]
    assert proposal["proposed_value"] == 3.5
    refused = cli_helpers.run(["order", "accept", proposal["id"], *pharm], env=env, data_dir=data)
    assert refused.returncode != 0 and json.loads(refused.stdout)["error"]["code"] == "forbidden"
    clin = ["--user", "clinician", "--password", fh.TEST_PASSWORD, "--json"]
    rejected = cli_helpers.run(
        ["order", "reject", proposal["id"], *clin, "--reason", "height to be measured again"],
        env=env,
        data_dir=data,
    )
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr
    out = json.loads(rejected.stdout)
    assert out["status"] == "rejected" and out["signature_id"] and out["new_order_id"] is None
    listed = cli_helpers.run(["order", "proposals", order_id, *clin], env=env, data_dir=data)
    assert [p["status"] for p in json.loads(listed.stdout)] == ["rejected"]


def test_the_pages(seeded: App) -> None:
    app = seeded
    order_id = with_rule(app)
    pharmacist = fh.web_login(app, "pharmacist")
    page = pharmacist.get(f"/orders/{order_id}")
    assert page.status_code == 200 and 'id="order-doses"' in page.text
    doses = pharmacist.get(f"/orders/{order_id}/doses")
    assert doses.status_code == 200 and 'id="record-vitals"' in doses.text
    assert "Accept and sign" not in doses.text  # nothing to decide, and not theirs to decide
    token = fh.csrf(doses.text)
    posted = pharmacist.post(
        f"/orders/{order_id}/doses/observations",
        data={"csrf_token": token, "weight": "35", "height": "140"},
        follow_redirects=True,
    )
    assert posted.status_code == 200 and "Proposed: 3.5 mg" in posted.text, posted.text[-2000:]
    clinician = fh.web_login(app, "clinician")
    doses = clinician.get(f"/orders/{order_id}/doses")
    assert "Accept and sign" in doses.text
    with app.uow() as uow:
        [proposal] = app.dose_adjustment.proposals(uow, fh.actor(app, "clinician"), order_id)
    no_password = clinician.post(
        f"/dose-proposals/{proposal['id']}/accept",
        data={"csrf_token": fh.csrf(doses.text), "username": "clinician"},
        follow_redirects=True,
    )
    assert 'id="dose-error"' in no_password.text and "password" in no_password.text
    accepted = clinician.post(
        f"/dose-proposals/{proposal['id']}/accept",
        data={
            "csrf_token": fh.csrf(doses.text),
            "username": "clinician",
            "password": fh.TEST_PASSWORD,
        },
        follow_redirects=True,
    )
    assert accepted.status_code == 200 and "is the new version" in accepted.text
    # a form without its token changes nothing
    with app.uow() as uow:
        before = len(app.dose_adjustment.observations(uow, fh.actor(app, "clinician"), order_id))
    clinician.post(f"/orders/{order_id}/doses/observations", data={"weight": "36"})
    with app.uow() as uow:
        after = len(app.dose_adjustment.observations(uow, fh.actor(app, "clinician"), order_id))
    assert after == before


def test_a_weight_that_is_not_a_finite_number_is_refused_naming_the_field(seeded: App) -> None:
    app = seeded
    order_id = with_rule(app)
    pharmacist = fh.web_login(app, "pharmacist")
    token = fh.csrf(pharmacist.get(f"/orders/{order_id}/doses").text)
    for typed in ("abc", "nan", "inf"):  # float() reads the last two: neither is a weight
        posted = pharmacist.post(
            f"/orders/{order_id}/doses/observations",
            data={"csrf_token": token, "weight": typed, "height": "140"},
            follow_redirects=True,
        )
        assert 'id="dose-error"' in posted.text, typed
        assert f"weight: {typed!r} is not a number" in posted.text.replace("&#39;", "'"), typed
    with app.uow() as uow:  # nothing recorded, not even the valid height
        assert app.dose_adjustment.observations(uow, fh.actor(app, "clinician"), order_id) == []
