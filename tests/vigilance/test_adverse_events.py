"""Pharmacovigilance (issue 19 part 4): an adverse event (FHIR R4 AdverseEvent or a form) on a
pack, traced to its batch, machine, site and material lot, and forward to every pack made from
that lot and every other patient exposed; CSV export; API. SQLite and PostgreSQL.

The expected packs are found here independently of the trace (which follows EPCIS
transformation events): every pack of every batch record whose material lot is the reported
pack's lot, straight from the batch records."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import cli_helpers
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.common.errors import Forbidden, NotFound, ValidationFailed
from nearfab.custody import SerialUnit
from nearfab.identity import AuditEntry
from nearfab.production import BatchRecord
from nearfab.web.server import create_web_app


def _released(app: App) -> str:
    """A released batch (its packs the tests report against), built once per backend and
    worker (flow_helpers.seeded_or_world); its id."""
    batch_id, _ = ch.released_batch(app)
    return batch_id


# a test asking for `packs` gets a copy of `_released`'s world; any other, the seeded network
seeded = fh.seeded_or_world({"packs": _released})


@pytest.fixture
def packs(seeded: App, request: pytest.FixtureRequest) -> list[SerialUnit]:
    """The packs of `_released`'s batch, on the test's own copy."""
    return ch.units(seeded, fh.built_data(request))


flushed_verification_log = ch.flushed_verification_log


def adverse_event(scan: str, **extra: Any) -> dict[str, Any]:
    """A FHIR R4 AdverseEvent naming the pack by its GS1 scan."""
    return {
        "resourceType": "AdverseEvent",
        "id": "ae-1",
        "actuality": "actual",
        "event": {"text": "vomiting within an hour of the morning dose"},
        "seriousness": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness",
                    "code": "non-serious",
                }
            ]
        },
        "date": "2026-01-02T08:00:00Z",
        "suspectEntity": [{"instance": {"identifier": {"value": scan}}}],
        **extra,
    }


def _expected(app: App, lot: str) -> dict[str, str]:
    """serial -> batch id of every pack made from `lot`, from the batch records."""
    with app.uow() as uow:
        batches = list(
            uow.session.scalars(
                select(BatchRecord.id).where(BatchRecord.material_lot_number == lot)
            )
        )
        return {
            u.serial: u.batch_id
            for u in uow.session.scalars(select(SerialUnit).where(SerialUnit.batch_id.in_(batches)))
        }


def test_an_adverse_event_is_traced_to_every_patient_exposed(seeded: App) -> None:
    app = seeded
    first, packs1 = ch.released_batch(app)
    second, packs2 = ch.released_batch(app)
    ch.dispense(app, packs2[0])  # the other patient has taken a pack of the second batch
    lot = fh.batch(app, first).material_lot_number
    same_lot = fh.batch(app, second).material_lot_number == lot
    assert same_lot, "the seed makes both batches from one lot: the shared-lot path is tested"
    clinician, qp = fh.actor(app, "clinician"), fh.actor(app, "qp")
    with app.uow() as uow:
        row = app.vigilance.report(uow, clinician, adverse_event(ch.scan(packs1[0])))
        event_id = row.id
        assert (row.unit_id, row.batch_id, row.seriousness) == (packs1[0].id, first, "non-serious")
        assert row.source == "fhir" and row.actuality == "actual"
    with app.uow() as uow:
        found = app.vigilance.trace(uow, qp, event_id)
    expected = _expected(app, lot)
    assert {p["serial"] for p in found["packs"]} == set(expected)
    relation = {p["serial"]: p["relation"] for p in found["packs"]}
    assert relation[packs1[0].serial] == "reported pack"
    assert {relation[u.serial] for u in packs1[1:]} <= {"same batch"}
    batch = fh.batch(app, first)
    assert found["machine"]["id"] == batch.machine_id
    assert found["site"]["id"] == batch.site_id
    assert found["material_lots"][0]["lot_number"] == lot
    assert found["batch_record"]["id"] == first
    other = ch.patient_ref(app, packs2[0])
    if same_lot:
        assert {relation[u.serial] for u in packs2} == {"shared material lot"}
        assert found["other_patients_exposed"] == [other]
    else:
        assert found["other_patients_exposed"] == []
    assert ch.patient_ref(app, packs1[0]) not in found["other_patients_with_packs"]
    with app.uow() as uow:
        text = app.vigilance.trace_csv(uow, qp, event_id)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(expected)
    assert rows[0]["relation"] == "reported pack" and rows[0]["adverse_event"] == event_id


def test_who_may_report_and_read_and_what_is_refused(seeded: App, packs: list[SerialUnit]) -> None:
    app = seeded
    scan = ch.scan(packs[0])
    with app.uow() as uow, pytest.raises(Forbidden):
        app.vigilance.report(uow, fh.actor(app, "operator"), adverse_event(scan))
    elsewhere = fh.create_user(app, "clin-elsewhere", ["clinician"], "MAN-PH")
    with app.uow() as uow, pytest.raises(Forbidden):
        app.vigilance.report(uow, elsewhere, adverse_event(scan))
    clinician = fh.actor(app, "clinician")
    with app.uow() as uow, pytest.raises(ValidationFailed) as exc:
        app.vigilance.report(uow, clinician, adverse_event(scan, suspectEntity=[]))
    assert exc.value.field == "AdverseEvent.suspectEntity"
    with app.uow() as uow, pytest.raises(ValidationFailed) as exc:
        app.vigilance.report(uow, clinician, adverse_event(scan, actuality="maybe"))
    assert exc.value.field == "AdverseEvent.actuality"
    with app.uow() as uow, pytest.raises(ValidationFailed) as exc:
        app.vigilance.report(uow, clinician, adverse_event(scan, event={"text": " "}))
    assert exc.value.field == "AdverseEvent.event.text"
    with app.uow() as uow, pytest.raises(NotFound):
        app.vigilance.report(uow, clinician, {"scan": "no-such-pack", "description": "rash"})
    with app.uow() as uow:
        row = app.vigilance.report(
            uow, clinician, {"scan": packs[0].id, "description": "rash on the arms"}
        )
        event_id = row.id
        assert row.source == "form"
    # the clinician reports but does not trace; a QP of the control site does
    with app.uow() as uow, pytest.raises(Forbidden):
        app.vigilance.trace(uow, clinician, event_id)
    with app.uow() as uow:
        audited = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_type == "adverse_event", AuditEntry.entity_id == event_id
            )
        ).all()
        assert [a.action for a in audited] == ["create"]


def test_api_report_trace_and_csv(seeded: App, packs: list[SerialUnit]) -> None:
    app = seeded
    client = TestClient(create_web_app(app))

    def token(username: str) -> dict[str, str]:
        with app.uow() as uow:
            value, _ = app.users.issue_token(uow, username, fh.TEST_PASSWORD)
        return {"Authorization": f"Bearer {value}"}

    r = client.post(
        "/api/v1/adverse-events",
        json=adverse_event(ch.scan(packs[0])),
        headers=token("clinician"),
    )
    assert r.status_code == 201, r.text
    event_id = r.json()["id"]
    bad = client.post("/api/v1/adverse-events", json={}, headers=token("clinician"))
    assert bad.status_code == 422 and "scan" in bad.text
    assert (
        client.get(f"/api/v1/adverse-events/{event_id}/trace", headers=token("clinician"))
    ).status_code == 403
    qp = token("qp")
    trace = client.get(f"/api/v1/adverse-events/{event_id}/trace", headers=qp)
    assert trace.status_code == 200 and trace.json()["packs"][0]["relation"] == "reported pack"
    exported = client.get(f"/api/v1/adverse-events/{event_id}/trace.csv", headers=qp)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert exported.text.splitlines()[0].startswith("adverse_event,relation,serial")
    pdf = client.get(f"/api/v1/adverse-events/{event_id}/trace.pdf", headers=qp)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")


def test_pdf_and_the_cli(seeded: App, tmp_path: Any, packs: list[SerialUnit]) -> None:
    app = seeded
    with app.uow() as uow:
        event_id = app.vigilance.report(
            uow, fh.actor(app, "pharmacist"), {"scan": ch.scan(packs[0]), "description": "rash"}
        ).id
    with app.uow() as uow:
        pdf = app.vigilance.trace_pdf(uow, fh.actor(app, "qp"), event_id)
    assert pdf.startswith(b"%PDF-") and len(pdf) > 1000
    env = {
        "NEARFAB_DATABASE_URL": app.engine.url.render_as_string(hide_password=False),
        "NEARFAB_PASSWORD_MAX_AGE_DAYS": "36500",
    }
    data = app.settings.data_dir
    qp = ["--user", "qp", "--password", fh.TEST_PASSWORD, "--json"]
    out_csv, out_pdf = tmp_path / "trace.csv", tmp_path / "trace.pdf"
    traced = cli_helpers.run(
        ["vigilance", "trace", event_id, *qp, "--csv", str(out_csv), "--pdf", str(out_pdf)],
        env=env,
        data_dir=data,
    )
    assert traced.returncode == 0, traced.stdout + traced.stderr
    found = json.loads(traced.stdout)
    assert found["event"]["id"] == event_id and found["packs"][0]["relation"] == "reported pack"
    assert len(out_csv.read_text().splitlines()) == len(found["packs"]) + 1
    assert out_pdf.read_bytes().startswith(b"%PDF-")
    clin = ["--user", "clinician", "--password", fh.TEST_PASSWORD, "--json"]
    reported = cli_helpers.run(
        ["vigilance", "report", *clin, "--scan", packs[0].id, "--description", "dizziness"],
        env=env,
        data_dir=data,
    )
    assert reported.returncode == 0, reported.stdout + reported.stderr
    assert json.loads(reported.stdout)["unit_id"] == packs[0].id
    refused = cli_helpers.run(["vigilance", "trace", event_id, *clin], env=env, data_dir=data)
    assert refused.returncode != 0 and json.loads(refused.stdout)["error"]["code"] == "forbidden"


def test_the_pages(seeded: App, packs: list[SerialUnit]) -> None:
    app = seeded
    pharmacist = fh.web_login(app, "pharmacist")
    form = pharmacist.get("/adverse-events/new", params={"scan": packs[0].id})
    assert form.status_code == 200 and 'id="adverse-event-form"' in form.text
    empty = pharmacist.post(
        "/adverse-events/new",
        data={"csrf_token": fh.csrf(form.text), "scan": packs[0].id, "description": ""},
        follow_redirects=True,
    )
    assert 'id="vigilance-error"' in empty.text and "description" in empty.text
    posted = pharmacist.post(
        "/adverse-events/new",
        data={
            "csrf_token": fh.csrf(form.text),
            "scan": ch.scan(packs[0]),
            "description": "rash on the arms",
            "seriousness": "non-serious",
        },
        follow_redirects=True,
    )
    assert posted.status_code == 200 and 'id="adverse-event-exposed"' in posted.text
    assert "reported pack" in posted.text and packs[0].serial in posted.text
    event_id = str(posted.url).rsplit("/", 1)[-1]
    exported = pharmacist.get(f"/adverse-events/{event_id}/trace.csv")
    assert exported.status_code == 200 and exported.text.startswith("adverse_event,relation")
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.headers["content-disposition"] == (
        f'attachment; filename="adverse-event-{event_id}.csv"'
    )
    pdf = pharmacist.get(f"/adverse-events/{event_id}/trace.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"] == (
        f'attachment; filename="adverse-event-{event_id}.pdf"'
    )
    # an event that does not exist is answered as such, for both files
    for kind in ("csv", "pdf"):
        assert pharmacist.get(f"/adverse-events/ae_NOSUCH/trace.{kind}").status_code == 404
    clinician = fh.web_login(app, "clinician")
    assert clinician.get(f"/adverse-events/{event_id}").status_code == 403
    # a form without its token records nothing
    with app.uow() as uow:
        before = len(
            uow.session.scalars(
                select(AuditEntry).where(AuditEntry.entity_type == "adverse_event")
            ).all()
        )
    clinician.post("/adverse-events/new", data={"scan": packs[0].id, "description": "x"})
    with app.uow() as uow:
        after = len(
            uow.session.scalars(
                select(AuditEntry).where(AuditEntry.entity_type == "adverse_event")
            ).all()
        )
    assert after == before
