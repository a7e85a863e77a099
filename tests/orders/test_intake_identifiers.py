"""Intake refuses a patient identifier that fails its check digit (issue 20): an NHS number in
an NHS number system, or a GSRN in a GSRN system, that no wristband or typed number could ever
match. The refusal (422) names the identifier's FHIR path and the reason, does not repeat the
digits, and nothing of the prescription is kept. Before, the identifier was dropped silently
and the order made, unidentifiable by it at the bedside."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.patient_helpers import ALICE, bundle_for

from nearfab.bootstrap import App
from nearfab.common.errors import ValidationFailed
from nearfab.identity import AuditEntry
from nearfab.orders import Order, Prescription
from nearfab.web.server import create_web_app

# 943 476 5919 is valid (tests/orders/test_patient_identifiers.py): 9*10+4*9+3*8+4*7+7*6+6*5+
# 5*4+9*3+1*2 = 299 = 27*11 + 2, 11 - 2 = 9. Its last digit changed to 8 fails the rule.
BAD_NHS = "9434765918"
# ALICE's GSRN 950110153000000014 with its mod-10 check digit 4 changed to 5
BAD_GSRN = "950110153000000015"


def _count(app: App, model: Any) -> int:
    with app.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model)) or 0)


def _refused(app: App, doc: dict[str, Any]) -> ValidationFailed:
    before = (_count(app, Order), _count(app, Prescription))
    with pytest.raises(ValidationFailed) as caught, app.uow() as uow:
        app.orders.submit(uow, fh.actor(app, "clinician"), doc)
    assert (_count(app, Order), _count(app, Prescription)) == before  # nothing kept
    return caught.value


def test_an_invalid_nhs_number_is_refused_at_its_fhir_path(seeded: App) -> None:
    doc = bundle_for(seeded, ALICE)
    doc["entry"][0]["resource"]["identifier"][0]["value"] = BAD_NHS  # the Patient is entry 0
    exc = _refused(seeded, doc)
    assert exc.field == "Bundle.entry[0].resource.identifier[0].value"
    assert "NHS number" in exc.message and "check digit is 8" in exc.message
    assert "modulus-11 rule gives 9" in exc.message and BAD_NHS not in exc.message


def test_the_hl7_oid_system_and_a_gsrn_system_are_checked_too(seeded: App) -> None:
    doc = bundle_for(seeded, ALICE)
    ident = doc["entry"][0]["resource"]["identifier"][0]
    ident.update(system="urn:oid:2.16.840.1.113883.2.1.4.1", value="943 476 5918")
    assert _refused(seeded, doc).field == "Bundle.entry[0].resource.identifier[0].value"
    doc = bundle_for(seeded, ALICE)
    doc["entry"][0]["resource"]["identifier"][2]["value"] = BAD_GSRN
    exc = _refused(seeded, doc)
    assert exc.field == "Bundle.entry[0].resource.identifier[2].value"
    assert "check digit is 5, GS1 mod-10 gives 4" in exc.message


def test_a_contained_patient_is_named_by_its_contained_path(seeded: App) -> None:
    doc = bundle_for(seeded, ALICE)
    patient = doc["entry"][0]["resource"]
    rx = doc["entry"][1]["resource"]
    patient = {**patient, "id": "p1"}
    patient["identifier"] = [{**patient["identifier"][0], "value": BAD_NHS}]
    rx["contained"] = [*rx.get("contained", []), patient]
    rx["subject"] = {"reference": "#p1"}
    at = len(rx["contained"]) - 1
    assert _refused(seeded, doc).field == (
        f"Bundle.entry[1].resource.contained[{at}].identifier[0].value"
    )


def test_over_http_422_naming_the_path(seeded: App) -> None:
    client = TestClient(create_web_app(seeded), raise_server_exceptions=False)
    r = client.post(
        "/api/v1/auth/token", json={"username": "clinician", "password": fh.TEST_PASSWORD}
    )
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    doc = bundle_for(seeded, ALICE)
    doc["entry"][0]["resource"]["identifier"][0]["value"] = BAD_NHS
    start = _count(seeded, AuditEntry)
    r = client.post("/api/v1/orders", json=doc, headers=headers)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "Bundle.entry[0].resource.identifier[0].value"
    assert "check digit" in error["message"]
    with seeded.uow() as uow:
        rows = list(uow.session.scalars(select(AuditEntry).where(AuditEntry.seq > start)))
        assert BAD_NHS not in repr([(a.new, a.old, a.reason) for a in rows])
    # the valid number is taken
    r = client.post("/api/v1/orders", json=bundle_for(seeded, ALICE), headers=headers)
    assert r.status_code in (200, 201), r.text
