"""The EPCIS and ledger pages without a browser: who may use them, what bad input answers
(never a server error), an empty ledger, a document that is not JSON, the CSRF token, and the
capture's all-or-nothing on the real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

from tests import flow_helpers as fh
from tests.web.test_custody_pages import csrf, login

from nearfab.bootstrap import App
from nearfab.custody import EpcisEvent

seeded = fh.seeded

DOC = fh.epcis_receiving_document("urn:epc:id:sgtin:0614141.107346.9001")


def test_an_empty_ledger_and_odd_queries_answer_without_errors(seeded: App) -> None:
    qp = login(seeded, "qp")
    empty = qp.get("/ledger")
    assert empty.status_code == 200 and "Ledger intact: 0 entries" in empty.text
    for params in (
        {"limit": "abc", "run": "1"},
        {"limit": "0", "run": "1"},
        {"GE_eventTime": "2026-13-01T00:00", "run": "1"},
        {"epc": "not a urn", "bizStep": "urn:epcglobal:cbv:bizstep:shipping"},
        {"location": "x" * 400},
    ):
        answer = qp.get("/epcis", params=params)
        assert answer.status_code < 500, (params, answer.status_code)
    assert qp.get("/epcis", params={"limit": "abc", "run": "1"}).status_code == 422
    assert qp.get("/epcis/event", params={"id": "nope"}).status_code == 404
    assert qp.get("/ledger", params={"all_signatures": "1"}).status_code == 200
    clinician = login(seeded, "clinician")
    assert clinician.get("/ledger").status_code == 403
    assert clinician.get("/epcis", params={"run": "1"}).status_code == 403
    auditor = login(seeded, "auditor")
    assert auditor.get("/ledger").status_code == 200
    assert 'id="epcis-capture"' not in auditor.get("/epcis").text  # auditors read only


def test_capture_refuses_what_is_not_a_valid_document_and_stores_nothing(
    seeded: App, shared_data: Path
) -> None:
    """(GS1's schema comes from ../shared/data; without it capture answers 503.)"""
    qp = login(seeded, "qp")
    page = qp.get("/epcis").text
    token = csrf(page)
    not_json = qp.post("/epcis/capture", data={"document": "{oops", "csrf_token": token})
    assert not_json.status_code == 422 and "not JSON" in not_json.text
    forged = qp.post("/epcis/capture", data={"document": json.dumps(DOC), "csrf_token": "x"})
    assert forged.status_code == 403
    bad = dict(DOC, epcisBody={"eventList": [dict(DOC["epcisBody"]["eventList"][0], action="X")]})
    refused = qp.post("/epcis/capture", data={"document": json.dumps(bad), "csrf_token": token})
    assert refused.status_code == 400 and "$.epcisBody.eventList[0].action" in refused.text
    assert fh.count(seeded, EpcisEvent) == 0
    stored = qp.post(
        "/epcis/capture",
        files={"file": ("doc.jsonld", json.dumps(DOC).encode(), "application/ld+json")},
        data={"csrf_token": token},
    )
    assert stored.status_code == 200 and 'id="stored-count">1<' in stored.text
    assert fh.count(seeded, EpcisEvent) == 1
    found = qp.get("/epcis", params={"epc": "urn:epc:id:sgtin:0614141.107346.9001"})
    assert found.status_code == 200 and 'id="event-count">1 found<' in found.text
    ledger = qp.get("/ledger")
    assert "Ledger intact" in ledger.text  # the captured event is chained at the control site
