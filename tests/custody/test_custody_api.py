"""The custody HTTP interface (router `nearfab.api.custody`): verify, capture, query, trace,
recall report and the ledger check, through FastAPI's test client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.api.custody import router
from nearfab.bootstrap import App
from nearfab.web.server import create_web_app

seeded = fh.seeded
flushed_verification_log = ch.flushed_verification_log


@pytest.fixture
def client(seeded: App) -> TestClient:
    web = create_web_app(seeded)
    if not any(getattr(r, "path", "") == "/api/v1/verify" for r in web.routes):
        web.include_router(router)  # until bootstrap/server wiring lands
    ch.chain(seeded)
    return TestClient(web)


def _auth(client: TestClient, username: str) -> dict[str, str]:
    res = client.post(
        "/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD}
    )
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


def test_verify_trace_and_recall_over_http(client: TestClient, seeded: App) -> None:
    batch_id, packs = ch.released_batch(seeded)
    ph, qp = _auth(client, "pharmacist"), _auth(client, "qp")
    body: dict[str, Any] = {"scan": ch.scan(packs[0]), "patient_ref": "PT-NOT-THEM"}
    res = client.post("/api/v1/verify", json=body, headers=ph)
    assert res.status_code == 200 and res.json()["status"] == "wrong_patient"
    body["patient_ref"] = ch.patient_ref(seeded, packs[0])
    assert client.post("/api/v1/verify", json=body, headers=ph).json()["status"] == "ok"
    bad = client.post("/api/v1/verify", json={"scan": "hello"}, headers=ph)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "scan"
    assert client.post("/api/v1/verify", json=body).status_code == 401
    traced = client.get(f"/api/v1/trace/units/{packs[0].id}", headers=qp)
    assert traced.status_code == 200 and traced.json()["unit"]["serial"] == packs[0].serial
    lot = fh.batch(seeded, batch_id).material_lot_number
    made = client.post("/api/v1/recalls", json={"lot": lot, "reason": "assay"}, headers=qp)
    assert made.status_code == 201, made.text
    recall_id = made.json()["recall_id"]
    assert client.post("/api/v1/verify", json=body, headers=ph).json()["status"] == "recalled"
    report = client.get(f"/api/v1/recalls/{recall_id}/report?format=csv", headers=qp)
    assert report.status_code == 200 and packs[0].serial in report.text
    pdf = client.get(f"/api/v1/recalls/{recall_id}/report?format=pdf", headers=qp)
    assert pdf.content.startswith(b"%PDF")
    checked = client.get("/api/v1/custody/ledger/verify", headers=qp)
    assert checked.json()["ok"] is True


def test_capture_and_query_over_http(client: TestClient, seeded: App, shared_data: Path) -> None:
    qp = _auth(client, "qp")
    doc = json.loads(
        (shared_data / "standards/epcis/JSON/Example_9.6.1-ObjectEvent.jsonld").read_text()
    )
    first = client.post("/api/v1/epcis/capture", json=doc, headers=qp)
    assert first.status_code == 201, first.text
    stored = first.json()["stored"]
    assert stored >= 1
    again = client.post("/api/v1/epcis/capture", json=doc, headers=qp)
    assert again.json() | {"duplicate_ids": None} == {
        "stored": 0,
        "duplicates": stored,
        "corrections": 0,
        "event_ids": [],
        "duplicate_ids": None,
    }
    broken = dict(doc, schemaVersion=2)
    refused = client.post("/api/v1/epcis/capture", json=broken, headers=qp)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["path"] == "$.schemaVersion"
    epc = doc["epcisBody"]["eventList"][0]["epcList"][0]
    found = client.get("/api/v1/epcis/events", params={"epc": epc}, headers=qp)
    assert found.status_code == 200
    events = found.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert events and all(epc in e.get("epcList", []) for e in events)
    by_step = client.get("/api/v1/epcis/events", params={"bizStep": "shipping"}, headers=qp).json()
    listed = by_step["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert listed and {e["bizStep"] for e in listed} == {"shipping"}


def test_the_datamatrix_symbol_as_svg_and_png(client: TestClient, seeded: App) -> None:
    from nearfab.custody import decode_datamatrix

    _, packs = ch.released_batch(seeded)
    headers = _auth(client, "pharmacist")
    svg = client.get(f"/api/v1/packs/{packs[0].id}/datamatrix", headers=headers)
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.lstrip().startswith("<?xml") and "<svg" in svg.text
    png = client.get(f"/api/v1/packs/{packs[0].id}/datamatrix?format=png", headers=headers)
    assert png.status_code == 200
    assert decode_datamatrix(png.content) == ch.scan(packs[0])  # an independent decoder
    assert client.get("/api/v1/packs/nope/datamatrix", headers=headers).status_code == 404
