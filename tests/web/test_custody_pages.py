"""Trace and recall in the web pages: backward from a pack, forward from a lot, a recall by a
QP with its report of affected patients by site (page, CSV, PDF), and who may do what."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.web.server import create_web_app

seeded = fh.seeded


def login(app: App, username: str) -> TestClient:
    client = TestClient(create_web_app(app))
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token
    answer = client.post(
        "/login",
        data={"username": username, "password": fh.TEST_PASSWORD, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    return client


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found
    return found.group(1)


def test_trace_backward_from_a_pack_and_forward_from_its_lot(seeded: App) -> None:
    batch_id, packs = ch.released_batch(seeded)
    batch = fh.batch(seeded, batch_id)
    client = login(seeded, "pharmacist")

    back = client.get("/trace", params={"q": ch.scan(packs[0]), "kind": "pack"})
    assert back.status_code == 200
    assert batch.batch_number in back.text and batch.material_lot_number in back.text
    assert 'id="trace-result"' in back.text

    forward = client.get("/trace", params={"q": batch.material_lot_number, "kind": "lot"})
    assert forward.status_code == 200
    assert all(p.serial in forward.text for p in packs)
    assert ch.patient_ref(seeded, packs[0]) in forward.text

    missing = client.get("/trace", params={"q": "no-such-pack"})
    assert missing.status_code == 404 and 'id="error"' in missing.text
    assert login(seeded, "clinician").get("/trace", params={"q": packs[0].id}).status_code == 403


def test_a_qp_recalls_a_lot_and_reads_the_report_by_site(seeded: App) -> None:
    batch_id, packs = ch.released_batch(seeded)
    lot = fh.batch(seeded, batch_id).material_lot_number
    pharmacist = login(seeded, "pharmacist")
    page = pharmacist.get("/recalls")
    assert 'id="recall-form"' not in page.text  # only QPs and admins recall
    refused = pharmacist.post(
        "/recalls", data={"lot": lot, "reason": "x", "csrf_token": csrf(page.text)}
    )
    assert refused.status_code == 403

    qp = login(seeded, "qp")
    form = qp.get("/recalls").text
    assert 'id="recall-form"' in form
    no_token = qp.post("/recalls", data={"lot": lot, "reason": "supplier notice"})
    assert no_token.status_code == 403
    made = qp.post(
        "/recalls",
        data={"lot": lot, "reason": "supplier notice 42", "csrf_token": csrf(form)},
        follow_redirects=False,
    )
    assert made.status_code == 303
    url = made.headers["location"]
    report = qp.get(url)
    assert report.status_code == 200
    assert f"{len(packs)} pack(s)" in report.text
    assert ch.patient_ref(seeded, packs[0]) in report.text
    csv_text = qp.get(url + "/report.csv").text
    assert csv_text.count("\n") >= len(packs) and packs[0].serial in csv_text
    pdf = qp.get(url + "/report.pdf")
    assert pdf.content.startswith(b"%PDF") and pdf.headers["content-type"] == "application/pdf"
    assert "supplier notice 42" in qp.get("/recalls").text

    # verification now answers recalled
    with seeded.uow() as uow:
        result = seeded.custody.verify(uow, fh.actor(seeded, "pharmacist"), scan=ch.scan(packs[0]))
    assert result.status.value == "recalled"
    assert login(seeded, "auditor").get(url).status_code == 200
    assert pharmacist.get(url).status_code == 403
