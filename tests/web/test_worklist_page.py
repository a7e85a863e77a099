"""Issue 13 item 3: the /worklist page and GET /api/v1/worklist (SQLite and PostgreSQL).

The page's forms post to the batch page's own signing routes (one signing path) and come back
to the worklist; the operator who signed a critical entry is not offered its verification, the
pharmacist is; the menu offers "Worklist" to operator, pharmacist and QP, never to auditor or
clinician, whom the page refuses with a styled page. The attack: Manchester's operator posts a
signature for St Thomas' batch from his own worklist (his session, his CSRF token): refused on
a page, in words, answered as an unknown batch (404, never confirming it exists elsewhere);
nothing signed and the refusal audited against the batch."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.web.server import create_web_app


def _gstt_batch(app: App) -> str:
    for _ in range(6):
        batch_id = fh.make_batch(app, ready=False)
        if fh.batch(app, batch_id).site_id == fh.site_id(app, "GSTT-PH"):
            return batch_id
    pytest.fail("the planner never chose St Thomas' for a batch")


# a test asking for `gstt_batch` gets a copy of a world where that batch is already made (built
# once per backend and worker: tests/flow_helpers.py), every other test the seeded network
seeded = fh.seeded_or_world({"gstt_batch": _gstt_batch})


@pytest.fixture
def gstt_batch(request: pytest.FixtureRequest, seeded: App) -> str:
    """The id of `_gstt_batch`'s batch in the test's copy of its world."""
    batch_id: str = fh.built_data(request)
    return batch_id


def _row(page: str, table: str, batch_id: str) -> str:
    """The worklist table's row about `batch_id` ('' when there is none)."""
    body = re.search(rf'<table id="{table}".*?</table>', page, re.S)
    if body is None:
        return ""
    row = re.search(rf'<tr data-batch="{batch_id}".*?</tr>', body.group(0), re.S)
    return row.group(0) if row else ""


def _post(client: TestClient, action: str, **fields: str) -> object:
    token = fh.csrf(client.get("/worklist").text)
    return client.post(
        action,
        data={"csrf_token": token, "return_to": "worklist", "password": fh.TEST_PASSWORD, **fields},
        follow_redirects=False,
    )


def _menu(client: TestClient) -> list[str]:
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', client.get("/orders").text, re.S)
    assert nav is not None
    return re.findall(r">([^<]+)</a>", nav.group(1))


def test_signing_and_verifying_from_the_worklist(seeded: App, gstt_batch: str) -> None:
    batch_id = gstt_batch
    web = create_web_app(seeded)
    operator = fh.web_login(web, "operator")

    page = operator.get("/worklist").text
    row = _row(page, "steps-due", batch_id)
    assert 'data-step="line_clearance"' in row and "before the machine starts" in row
    # the batch page's route, brought back here
    assert f'action="/batches/{batch_id}/steps/line_clearance/sign"' in row
    assert 'name="return_to" value="worklist"' in row

    answer = _post(operator, f"/batches/{batch_id}/steps/line_clearance/sign", username="operator")
    assert answer.status_code == 303 and answer.headers["location"] == "/worklist"
    page = operator.get("/worklist").text
    assert "Step line_clearance: signed (performed by)" in page
    row = _row(page, "steps-due", batch_id)
    assert 'data-step="filament_loaded"' in row
    assert 'name="entry.filament_lot"' in row and 'name="entry.mass_loaded_g"' in row

    # a refusal from the service is shown on the worklist, in words, nothing signed
    answer = _post(
        operator,
        f"/batches/{batch_id}/steps/filament_loaded/sign",
        **{"entry.filament_lot": "HC-1", "entry.mass_loaded_g": "-3"},
    )
    assert answer.status_code == 422
    assert "must be a finite number" in answer.text and 'id="error"' in answer.text

    answer = _post(
        operator,
        f"/batches/{batch_id}/steps/filament_loaded/sign",
        **{"entry.filament_lot": "HC-1", "entry.mass_loaded_g": "12.5"},
    )
    assert answer.status_code == 303
    page = operator.get("/worklist").text
    assert _row(page, "steps-due", batch_id) == ""  # step 4 waits for the verification
    assert _row(page, "to-verify", batch_id) == ""  # never to the one who signed
    assert f"/batches/{batch_id}/steps/filament_loaded/verify" not in page
    assert "waits for a second person" in page

    pharmacist = fh.web_login(web, "pharmacist")
    row = _row(pharmacist.get("/worklist").text, "to-verify", batch_id)
    assert "Olu Operator" in row and "12.5" in row and "HC-1" in row
    assert f'action="/batches/{batch_id}/steps/filament_loaded/verify"' in row
    answer = _post(
        pharmacist, f"/batches/{batch_id}/steps/filament_loaded/verify", username="pharmacist"
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/worklist"
    page = pharmacist.get("/worklist").text
    assert "entry verified" in page and _row(page, "to-verify", batch_id) == ""
    row = _row(operator.get("/worklist").text, "steps-due", batch_id)
    assert 'data-step="visual_inspection"' in row and "after the run" in row


def test_another_sites_operator_forging_a_signature_from_the_worklist(
    seeded: App, gstt_batch: str
) -> None:
    batch_id = gstt_batch
    web = create_web_app(seeded)
    other = fh.web_login(web, "operator-man")
    assert batch_id not in other.get("/worklist").text
    refusals_before = len(fh.refusals(seeded, "batch", batch_id))

    answer = _post(other, f"/batches/{batch_id}/steps/line_clearance/sign", username="operator-man")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert '<link rel="stylesheet" href="/static/app.css">' in answer.text
    assert "<h1>Worklist</h1>" in answer.text and 'role="alert"' in answer.text
    assert "no such record, or it belongs to a site you do not see" in answer.text
    assert "St Thomas" not in answer.text and not answer.text.lstrip().startswith("{")
    with seeded.uow() as uow:
        assert seeded.production.signoffs(uow, batch_id) == []
    assert len(fh.refusals(seeded, "batch", batch_id)) == refusals_before + 1


def test_the_menu_and_the_page_by_role(seeded: App) -> None:
    web = create_web_app(seeded)
    for username in ("operator", "pharmacist", "qp"):
        assert "Worklist" in _menu(fh.web_login(web, username)), username
    for username in ("auditor", "clinician"):
        browser = fh.web_login(web, username)
        assert "Worklist" not in _menu(browser), username
        answer = browser.get("/worklist")
        assert answer.status_code == 403 and "<h1>Not allowed</h1>" in answer.text, username
        assert "Sign this step" not in answer.text


def test_the_api_gives_the_same_worklist(seeded: App, gstt_batch: str) -> None:
    batch_id = gstt_batch
    client = TestClient(create_web_app(seeded))
    token = client.post(
        "/api/v1/auth/token", json={"username": "operator", "password": fh.TEST_PASSWORD}
    ).json()["access_token"]
    r = client.get("/api/v1/worklist", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    steps = [(s["code"], s["phase"]) for s in r.json()["steps"] if s["batch_id"] == batch_id]
    assert steps == [("line_clearance", "before the machine starts")]
