"""Laboratory results through the HTTP API, the CLI and the batch page, on SQLite and
PostgreSQL, with the demo's cell product (tests/quality/lab_helpers.py: a master-file version
whose release rule lists the laboratory's tests).

Attacks: QA of another site, a role without the permission, a clinician, no password, a wrong
password, a key the product does not take; none leaves a row. Expected values by hand:
endotoxin 0.5 EU/mL × 70 mL ÷ 70 kg = 0.5 EU/kg ≤ 5 EU/kg (Ph. Eur. 5.1.10) -> pass; CD3+
0.92 ≥ 0.80 -> pass; mycoplasma negative -> pass (Ph. Eur. 2.6.7).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests import flow_helpers as fh
from tests.quality import lab_helpers as lab
from tests.quality.release_helpers import token, user
from typer.testing import CliRunner

from nearfab.bootstrap import App
from nearfab.cli.main import app as cli
from nearfab.web.server import create_web_app

# a test asking for `batch`: a copy of `lab.lab_batch`'s world (built once per backend and worker)
seeded = fh.seeded_or_world({"batch": lab.lab_batch})

GOOD = {"markers": {"CD3+": 0.92}, "endotoxin_eu_per_ml": 0.5, "mycoplasma": "negative"}
ENDOTOXIN = "endotoxin: 0.5 EU/mL × 70 mL ÷ 70 kg = 0.500 EU/kg ≤ 5 EU/kg"


@pytest.fixture
def batch(seeded: App, request: pytest.FixtureRequest) -> str:
    """`lab.lab_batch`'s cell batch, on the test's own copy of its world."""
    batch_id: str = fh.built_data(request)
    return batch_id


def _body(username: str, **changes: Any) -> dict[str, Any]:
    return {
        "results": GOOD,
        "method": lab.METHOD,
        "username": username,
        "password": fh.TEST_PASSWORD,
        **changes,
    }


def _checks(review: dict[str, Any]) -> dict[str, tuple[bool | None, str]]:
    return {c["name"]: (c["passed"], c["detail"]) for c in review["checks"]}


def test_the_api_enters_lab_results_and_refuses_each_attack(seeded: App, batch: str) -> None:
    api = TestClient(create_web_app(seeded))
    url = f"/api/v1/batches/{batch}/lab-results"
    user(seeded, "qa-there", ["pharmacist"], "MAN-PH")
    user(seeded, "op-here", ["operator"], "GSTT-PH")

    def post(username: str, **changes: Any) -> Any:
        return api.post(url, json=_body(username, **changes), headers=token(seeded, username))

    refusals = {
        "other site": (post("qa-there"), 403, "other_site", None),
        "wrong role": (post("op-here"), 403, "forbidden", None),
        "prescriber": (post("clinician"), 403, "forbidden", None),
        "no password": (
            api.post(
                url,
                json={k: v for k, v in _body("pharmacist").items() if k != "password"},
                headers=token(seeded, "pharmacist"),
            ),
            422,
            "validation_failed",
            "password",
        ),
        "wrong password": (post("pharmacist", password="not mine"), 401, "unauthenticated", None),
        "bad key": (
            post("pharmacist", results={"endotoxin": 0.5}),
            422,
            "validation_failed",
            "lab_results.endotoxin",
        ),
        "bad value": (
            post("pharmacist", results={"viability": 1.5}),
            422,
            "validation_failed",
            "lab_results.viability",
        ),
    }
    for what, (r, status, code, field) in refusals.items():
        assert r.status_code == status, (what, r.status_code, r.text)
        error = r.json()["error"]
        assert error["code"] == code, (what, error)
        if field is not None:
            assert error["field"] == field, (what, error)
    seen = api.get(url, headers=token(seeded, "pharmacist"))
    assert seen.status_code == 200, seen.text
    assert seen.json()["results"] == [] and seen.json()["in_force"] == {}
    assert set(seen.json()["keys"]) == {
        "viable_cells",
        "viability",
        "markers",
        "endotoxin_eu_per_ml",
        "mycoplasma",
        "sterility",
    }

    done = post("pharmacist")
    assert done.status_code == 200, done.text
    out = done.json()
    assert out["in_force"] == GOOD and out["status"] == "completed"
    assert {r["key"] for r in out["results"]} == set(GOOD)
    assert all(
        r["signature_valid"] and r["entered_by_name"] == "Phil Harmon" for r in out["results"]
    )
    checks = _checks(out["review"])
    assert checks["identity_purity"] == (True, "identity and purity: CD3+ 92.0% ≥ 80.0%")
    assert checks["endotoxin"] == (True, ENDOTOXIN)
    assert checks["mycoplasma"] == (True, "mycoplasma: negative")
    assert out["review"]["proposed_decision"] == "release"
    assert out["review"]["pending_results"] == ["sterility"]  # not entered: followed up
    # the auditor reads it from the control site; QA of another site may not
    assert api.get(url, headers=token(seeded, "auditor")).json()["in_force"] == GOOD
    other = api.get(url, headers=token(seeded, "qa-there"))
    assert other.status_code == 403 and other.json()["error"]["code"] == "other_site"
    # a second entry of a result without a reason is refused; with one it is a correction
    again = post("pharmacist", results={"endotoxin_eu_per_ml": 6})
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "result_already_entered"
    fixed = post("qp", results={"endotoxin_eu_per_ml": 6}, reason="the dilution was misread")
    assert fixed.status_code == 200, fixed.text
    assert _checks(fixed.json()["review"])["endotoxin"][0] is False  # 6 EU/kg > 5 EU/kg
    assert fixed.json()["review"]["proposed_decision"] == "reject"
    superseded = [r for r in fixed.json()["results"] if not r["in_force"]]
    assert [(r["key"], r["value"]) for r in superseded] == [("endotoxin_eu_per_ml", 0.5)]


def test_the_cli_enters_and_lists_lab_results(
    seeded: App, batch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "NEARFAB_DATABASE_URL", str(seeded.engine.url.render_as_string(hide_password=False))
    )
    # the CLI runs on the real clock; the seeded world set its passwords on the test's clock
    monkeypatch.setenv("NEARFAB_PASSWORD_MAX_AGE_DAYS", "3650")
    runner = CliRunner()
    base = ["--data-dir", str(seeded.settings.data_dir), "batches"]
    signer = ["--user", "pharmacist", "--password", fh.TEST_PASSWORD, "--method", lab.METHOD]
    bad = runner.invoke(
        cli, [*base, "lab-result", batch, *signer, "--result", "endotoxin=0.5", "--json"]
    )
    assert bad.exit_code == 2, bad.output
    assert json.loads(bad.stdout)["error"]["field"] == "lab_results.endotoxin"
    results = [
        "--result",
        'markers={"CD3+": 0.92}',
        "--result",
        "endotoxin_eu_per_ml=0.5",
        "--result",
        "mycoplasma=negative",
    ]
    done = runner.invoke(cli, [*base, "lab-result", batch, *signer, *results, "--json"])
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    assert out["in_force"] == GOOD
    assert _checks(out["review"])["endotoxin"] == (True, ENDOTOXIN)
    listed = runner.invoke(cli, [*base, "lab-results", batch])
    assert listed.exit_code == 0, listed.output
    assert "endotoxin_eu_per_ml" in listed.stdout and "release proposal: release" in listed.stdout


def test_the_batch_page_form_enters_lab_results_and_shows_them(seeded: App, batch: str) -> None:
    browser = fh.web_login(seeded, "pharmacist")
    page = browser.get(f"/batches/{batch}").text
    assert "Laboratory results" in page and 'name="result.endotoxin_eu_per_ml"' in page
    form = {
        "csrf_token": fh.csrf(page),
        "result.endotoxin_eu_per_ml": "0.5",
        "result.markers": '{"CD3+": 0.92}',
        "result.mycoplasma": "negative",
        "result.viability": "",  # left empty: not entered
        "method": lab.METHOD,
        "meaning": "results entered by",
        "username": "pharmacist",
        "password": fh.TEST_PASSWORD,
    }
    r = browser.post(f"/batches/{batch}/lab-results", data=form)
    assert r.status_code == 200 and "Laboratory results: entered (signed)" in r.text
    assert 'data-key="endotoxin_eu_per_ml"' in r.text and ENDOTOXIN in r.text
    assert 'data-key="viability"' not in r.text
    with seeded.uow() as uow:
        assert seeded.quality.lab_results.in_force(uow, batch) == GOOD
    # a bad value: refused, said on the page with the field, nothing kept
    wrong = browser.post(
        f"/batches/{batch}/lab-results",
        data={**form, "result.viability": "1.5", "result.endotoxin_eu_per_ml": ""},
    )
    assert "refused (validation_failed)" in wrong.text and "lab_results.viability" in wrong.text
    with seeded.uow() as uow:
        assert "viability" not in seeded.quality.lab_results.in_force(uow, batch)
    # a prescriber's browser sees no form, and posting it is refused
    doctor = fh.web_login(seeded, "clinician")
    assert doctor.post(f"/batches/{batch}/lab-results", data=form).status_code == 403


def test_a_product_without_laboratory_results_shows_no_form(seeded: App) -> None:
    solid = fh.make_batch(seeded, ready=False)
    page = fh.web_login(seeded, "pharmacist").get(f"/batches/{solid}").text
    assert "Laboratory results" not in page and "lab-results-form" not in page
