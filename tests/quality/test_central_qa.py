"""The network's quality system (issue 19 parts 3-4) on the seeded demo network, SQLite and
PostgreSQL: complaints and CAPAs with owners and due dates (refusals naming the field), a CAPA
closed by a QP's e-signature, the central QA view (a site's QA sees its own site, the control
site's QA every site; overdue and the monthly trend), the annual report checked against the
batches this test made (hand tally), its CSV parsed back and its PDF read; and the API attacked
per role and site."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch
from tests.identity.test_record_export import pdf_text

from nearfab.bootstrap import App
from nearfab.common.errors import (
    Forbidden,
    InvalidTransition,
    NotFound,
    Refused,
    ValidationFailed,
)
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import AuditEntry, Signature
from nearfab.qaviews import annual_report, annual_report_csv, annual_report_pdf, central_qa
from nearfab.quality import Capa
from nearfab.web.server import create_web_app


def _made(app: App) -> str:
    """A made batch awaiting release (the complaints and CAPAs name it), built once per backend
    and worker (flow_helpers.seeded_or_world); its id."""
    return fh.make_batch(app)


# a test asking for `made` gets a copy of `_made`'s world; any other, the seeded network
seeded = fh.seeded_or_world({"made": _made})


@pytest.fixture
def made(seeded: App, request: pytest.FixtureRequest) -> str:
    """`_made`'s batch id, on the test's own copy."""
    batch_id: str = fh.built_data(request)
    return batch_id


flushed_verification_log = ch.flushed_verification_log


def _due(app: App, days: int = 14) -> str:
    return (app.clock.now().date() + timedelta(days=days)).isoformat()


def _complaint(app: App, username: str, **data: Any) -> Any:
    with app.uow() as uow:
        row = app.qms.record_complaint(
            uow,
            fh.actor(app, username),
            {
                "site_id": "GSTT-PH",
                "reporter": "ward nurse, ward 4",
                "description": "pack arrived with a cracked unit",
                "owner": "pharmacist",
                "due_date": _due(app),
                **data,
            },
        )
        uow.session.expunge(row)
        return row


def _capa(app: App, username: str, **data: Any) -> Capa:
    with app.uow() as uow:
        row = app.qms.open_capa(
            uow,
            fh.actor(app, username),
            {
                "site_id": "GSTT-PH",
                "title": "packing bench check",
                "description": "add a check of every unit before packing",
                "source_kind": "other",
                "owner": "pharmacist",
                "due_date": _due(app),
                **data,
            },
        )
        uow.session.expunge(row)
        return row


def test_complaints_and_capas_refusals_name_the_field(seeded: App, made: str) -> None:
    app = seeded
    fh.site_user(app, "pharm-man", "pharmacist", "MAN-PH")
    batch = fh.batch(app, made)
    with pytest.raises(ValidationFailed) as neither:
        _complaint(app, "pharmacist")
    assert neither.value.field == "batch_number"
    with pytest.raises(ValidationFailed) as unknown:
        _complaint(app, "pharmacist", batch_number="NO-SUCH")
    assert unknown.value.field == "batch_number"
    with pytest.raises(ValidationFailed) as serial:
        _complaint(app, "pharmacist", pack_serial="000000")
    assert serial.value.field == "pack_serial"
    with pytest.raises(ValidationFailed) as owner:
        _complaint(app, "pharmacist", batch_number=batch.batch_number, owner="nobody")
    assert owner.value.field == "owner"
    with pytest.raises(ValidationFailed) as past:
        _complaint(app, "pharmacist", batch_number=batch.batch_number, due_date=_due(app, -1))
    assert past.value.field == "due_date"
    with pytest.raises(ValidationFailed) as blank:
        _complaint(app, "pharmacist", batch_number=batch.batch_number, reporter=" ")
    assert blank.value.field == "complaint.reporter"
    # another site's QA may not record a complaint for GSTT-PH; an operator holds no role
    with pytest.raises(Forbidden) as other:
        _complaint(app, "pharm-man", batch_number=batch.batch_number)
    assert other.value.code == "other_site"
    with pytest.raises(Forbidden) as operator:
        _complaint(app, "operator", batch_number=batch.batch_number)
    assert operator.value.code == "forbidden"
    with pytest.raises(ValidationFailed) as source:
        _capa(app, "pharmacist", source_kind="complaint")
    assert source.value.field == "source_id"
    with pytest.raises(ValidationFailed) as kind:
        _capa(app, "pharmacist", source_kind="rumour")
    assert kind.value.field == "capa.source_kind"
    with app.uow() as uow:
        written = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.entity_type.in_(["complaint", "capa"]))
        ).all()
    assert written == []  # nothing half-written

    # a pack's serial finds its batch
    with app.uow() as uow:
        [unit, *_] = app.custody.units_of_order(uow, batch.order_id)
        pack_serial = unit.serial
    complaint = _complaint(app, "pharmacist", pack_serial=pack_serial)
    assert complaint.batch_number == batch.batch_number
    assert complaint.master_file_code == batch.master_file_code
    with pytest.raises(ValidationFailed) as mismatch:
        _complaint(app, "pharmacist", pack_serial=pack_serial, batch_number="X")
    assert mismatch.value.field == "batch_number"
    # investigate, then close naming a CAPA at the complaint's site
    capa = _capa(app, "pharmacist", source_kind="complaint", source_id=complaint.id)
    with app.uow() as uow, pytest.raises(InvalidTransition):  # received -> closed: no
        app.qms.close_complaint(uow, fh.actor(app, "pharmacist"), complaint.id, {"conclusion": "x"})
    with app.uow() as uow:
        app.qms.investigate_complaint(
            uow, fh.actor(app, "pharmacist"), complaint.id, {"investigation": "unit inspected"}
        )
    with app.uow() as uow, pytest.raises(ValidationFailed) as bad_capa:
        app.qms.close_complaint(
            uow,
            fh.actor(app, "pharmacist"),
            complaint.id,
            {"conclusion": "handling damage", "capa_id": "capa_nope"},
        )
    assert bad_capa.value.field == "capa_id"
    with app.uow() as uow:
        closed = app.qms.close_complaint(
            uow,
            fh.actor(app, "pharmacist"),
            complaint.id,
            {"conclusion": "handling damage", "capa_id": capa.id},
        )
        assert closed.status == "closed" and closed.capa_id == capa.id

    # closing a CAPA is a QP's e-signature: the pharmacist may not, a wrong password writes
    # nothing, the right one closes it with the signature
    close = {"effectiveness": "no cracked unit in 30 packs", "password": fh.TEST_PASSWORD}
    with app.uow() as uow, pytest.raises(Forbidden):
        app.qms.close_capa(uow, fh.actor(app, "pharmacist"), capa.id, close)
    with app.uow() as uow, pytest.raises(Exception) as wrong:
        app.qms.close_capa(uow, fh.actor(app, "qp"), capa.id, close | {"password": "nope"})
    assert getattr(wrong.value, "field", None) == "password"
    with app.uow() as uow:
        assert uow.session.get_one(Capa, capa.id).status == "open"
    with app.uow() as uow:
        done = app.qms.close_capa(uow, fh.actor(app, "qp"), capa.id, close)
        sig = uow.session.get(Signature, done.signature_id)
    assert done.status == "closed" and sig is not None
    assert sig.meaning == "QP closure of CAPA (effectiveness checked)"
    with app.uow() as uow, pytest.raises(Refused) as again:
        app.qms.close_capa(uow, fh.actor(app, "qp"), capa.id, close)
    assert again.value.field == "status"


def test_central_view_scopes_sites_and_marks_overdue(seeded: App, made: str) -> None:
    app = seeded
    fh.site_user(app, "pharm-man", "pharmacist", "MAN-PH")
    batch = fh.batch(app, made)
    with app.uow() as uow:
        dev = app.quality.records.open_deviation(
            uow, fh.actor(app, "qp"), batch.id, description="label smudged"
        )
        dev_id = dev.id
    complaint = _complaint(app, "pharmacist", batch_number=batch.batch_number)
    gstt_capa = _capa(app, "pharmacist", due_date=_due(app, 3))
    man_capa = _capa(app, "pharm-man", site_id="MAN-PH", owner="pharm-man")
    with app.uow() as uow:  # the deviation gets an owner and a due date
        app.qms.assign(
            uow, fh.actor(app, "qp"), "deviation", dev_id, {"owner": "qp", "due_date": _due(app, 1)}
        )
    app.clock.advance(5 * 86400)  # type: ignore[attr-defined]  # the deviation (1 day) and GSTT's CAPA (3) overdue
    with app.uow() as uow:
        network = central_qa(app, uow, fh.actor(app, "qp"))
        gstt = central_qa(app, uow, fh.actor(app, "pharmacist"))
        man = central_qa(app, uow, fh.actor(app, "pharm-man"))
        with pytest.raises(Forbidden):
            central_qa(app, uow, fh.actor(app, "operator"))
    making = {"GSTT-PH": batch.site_id}
    with app.uow() as uow:
        making_code = app.network.get_site(uow, batch.site_id).code
    ids = {i["id"]: i for i in network["items"]}
    assert set(ids) >= {dev_id, complaint.id, gstt_capa.id, man_capa.id}
    assert ids[dev_id]["overdue"] and ids[dev_id]["owner"] == "qp"
    assert ids[dev_id]["site_code"] == making_code
    assert ids[gstt_capa.id]["overdue"] and not ids[man_capa.id]["overdue"]
    assert not ids[complaint.id]["overdue"] and ids[complaint.id]["days_open"] == 5
    # a site's QA sees its own site's items only
    assert {i["site_code"] for i in gstt["items"]} == {"GSTT-PH"}
    assert {i["site_code"] for i in man["items"]} == {"MAN-PH"}
    assert man_capa.id in {i["id"] for i in man["items"]}
    assert not {complaint.id, gstt_capa.id} & {i["id"] for i in man["items"]}
    # counts by site (hand tally of what was opened above, the deviation at its making site)
    by_site = {r["site_code"]: r for r in network["by_site"]}
    expected_gstt = 2 + (1 if making_code == "GSTT-PH" else 0)
    assert by_site["GSTT-PH"]["open"] == expected_gstt
    assert by_site["MAN-PH"]["capa"] == 1
    assert by_site[making_code]["deviation"] == 1 and by_site[making_code]["overdue"] >= 1
    assert network["network_wide"] and not gstt["network_wide"]
    month = app.clock.now().strftime("%Y-%m")
    trend = {(t["month"], t["site_code"]): t for t in network["trend"]}
    opened_month = (app.clock.now() - timedelta(days=5)).strftime("%Y-%m")
    assert trend[(opened_month, "MAN-PH")]["capas"] == 1
    assert month  # the view is built on the clock's day
    assert making  # site of the batch came from the batch the test made


def test_annual_report_against_the_batches_made_here(seeded: App) -> None:
    app = seeded
    released = fh.make_batch(app)
    fh.release(app, released)
    rejected = fh.make_batch(app)
    fh.reject(app, rejected)
    waiting = fh.make_batch(app)
    with app.uow() as uow:
        app.quality.records.open_deviation(
            uow, fh.actor(app, "qp"), waiting, description="label smudged"
        )
    made = {b: fh.batch(app, b) for b in (released, rejected, waiting)}
    complaint = _complaint(app, "pharmacist", batch_number=made[released].batch_number)
    # one pack of the released batch dispensed before the recall reaches its lot: it counts as
    # dispensed in the year although the recall then marks it recalled
    [first, *_] = ch.units(app, released)
    ch.dispense(app, first)
    with app.uow() as uow:
        recall = app.custody_chain.recalls.create(
            uow,
            fh.actor(app, "qp"),
            lot=made[released].material_lot_number,
            reason="supplier notice",
        )
        recall_id = recall.id
    year = app.clock.now().year
    with app.uow() as uow:
        codes = {s.id: s.code for s in app.network.list_sites(uow)}
        report = annual_report(app, uow, fh.actor(app, "qp"), HYDROCORTISONE, year)
        with pytest.raises(Forbidden):
            annual_report(app, uow, fh.actor(app, "pharmacist"), HYDROCORTISONE, year)
        with pytest.raises(NotFound):
            annual_report(app, uow, fh.actor(app, "qp"), "MF-NONE", year)
        with pytest.raises(ValidationFailed) as bad_year:
            annual_report(app, uow, fh.actor(app, "qp"), HYDROCORTISONE, 1900)
        previous = annual_report(app, uow, fh.actor(app, "qp"), HYDROCORTISONE, year - 1)
    assert bad_year.value.field == "year"
    # hand tally: three batches made here, one released, one rejected, one awaiting
    tally: dict[str, dict[str, int]] = {}
    for b, outcome in ((released, "released"), (rejected, "rejected"), (waiting, "awaiting")):
        t = tally.setdefault(codes[made[b].site_id], {"made": 0, "released": 0, "rejected": 0})
        t["made"] += 1
        if outcome != "awaiting":
            t[outcome] += 1
    sites = {s["site_code"]: s for s in report["sites"]}
    assert set(sites) >= {"GSTT-PH", "MAN-PH", "MOB-1"}  # allowed by the seed
    for code, t in tally.items():
        assert (
            sites[code]["batches_made"],
            sites[code]["batches_released"],
            sites[code]["batches_rejected"],
        ) == (t["made"], t["released"], t["rejected"])
    assert report["totals"]["batches_made"] == 3
    assert report["totals"]["batches_released"] == 1
    assert report["totals"]["batches_rejected"] == 1
    assert report["totals"]["batches_awaiting_disposition"] == 1
    assert ch.units(app, released)[0].status == "recalled"  # dispensed, then recalled
    assert report["totals"]["packs_dispensed"] == 1  # the one pack dispensed above
    assert sites[codes[made[released].site_id]]["packs_dispensed"] == 1
    assert [d["batch_number"] for d in report["deviations"]] == [made[waiting].batch_number]
    assert [c["id"] for c in report["complaints"]] == [complaint.id]
    [recalled] = report["recalls"]
    assert recalled["id"] == recall_id
    assert made[released].batch_number in recalled["batches"]
    assert [(c["version"], c["title"]) for c in report["changes"]] == [(1, "first version")]
    assert previous["totals"]["batches_made"] == 0 and previous["complaints"] == []

    # the CSV parsed back gives the same figures
    rows = list(csv.DictReader(io.StringIO(annual_report_csv(report))))
    totals = {r["key"]: int(r["value"]) for r in rows if r["section"] == "total"}
    assert totals["batches_made"] == 3 and totals["batches_rejected"] == 1
    volume = {(r["site"], r["key"]): r["value"] for r in rows if r["section"] == "volume"}
    for code, t in tally.items():
        assert volume[(code, "batches_made")] == str(t["made"])
    assert [r["key"] for r in rows if r["section"] == "complaint"] == [complaint.id]
    assert [r["key"] for r in rows if r["section"] == "recall"] == [recall_id]
    # the PDF, opened: the title, a site, a deviation's batch and the complaint are on it
    text = pdf_text(annual_report_pdf(report))
    assert f"Annual report {year}: {HYDROCORTISONE}" in text
    assert made[waiting].batch_number in text and complaint.id in text
    assert "Sites and volumes" in text and "Recalls" in text


def _token(app: App, username: str) -> dict[str, str]:
    with app.uow() as uow:
        token, _ = app.users.issue_token(uow, username, fh.TEST_PASSWORD)
    return {"Authorization": f"Bearer {token}"}


def test_api_attacks_per_role_and_site(seeded: App, made: str) -> None:
    app = seeded
    fh.site_user(app, "pharm-man", "pharmacist", "MAN-PH")
    fh.site_user(app, "qp-gstt", "qp", "GSTT-PH")
    batch = fh.batch(app, made)
    client = TestClient(create_web_app(app))
    who = {
        u: _token(app, u)
        for u in ("qp", "pharmacist", "pharm-man", "auditor", "operator", "qp-gstt")
    }
    body = {
        "site_id": "GSTT-PH",
        "reporter": "patient's parent",
        "description": "unit smells odd",
        "batch_number": batch.batch_number,
        "owner": "pharmacist",
        "due_date": _due(app),
    }
    r = client.post("/api/v1/qa/complaints", json=body, headers=who["pharmacist"])
    assert r.status_code == 201, r.text
    complaint = r.json()
    assert complaint["batch_number"] == batch.batch_number and complaint["status"] == "received"
    # MAN-PH's QA may not record one for GSTT-PH, nor read it; an operator holds no role
    r = client.post("/api/v1/qa/complaints", json=body, headers=who["pharm-man"])
    assert r.status_code == 403 and r.json()["error"]["code"] == "other_site"
    r = client.get(f"/api/v1/qa/complaints/{complaint['id']}", headers=who["pharm-man"])
    assert r.status_code == 403
    r = client.post("/api/v1/qa/complaints", json=body, headers=who["operator"])
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = client.post(
        "/api/v1/qa/complaints", json=body | {"owner": "ghost"}, headers=who["pharmacist"]
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "owner"
    # the views: GSTT's QA sees its complaint, MAN's QA does not, the control site's QP does
    seen = {
        u: {i["id"] for i in client.get("/api/v1/qa", headers=who[u]).json()["items"]}
        for u in ("qp", "pharmacist", "pharm-man", "auditor")
    }
    assert complaint["id"] in seen["qp"] and complaint["id"] in seen["pharmacist"]
    assert complaint["id"] in seen["auditor"] and complaint["id"] not in seen["pharm-man"]
    assert client.get("/api/v1/qa", headers=who["operator"]).status_code == 403
    # a CAPA at GSTT-PH: the site's own QP may close it, a QP of no network reach elsewhere not
    r = client.post(
        "/api/v1/qa/capas",
        json={
            "site_id": "GSTT-PH",
            "title": "odour",
            "description": "check storage",
            "source_kind": "complaint",
            "source_id": complaint["id"],
            "owner": "pharmacist",
            "due_date": _due(app),
        },
        headers=who["pharmacist"],
    )
    assert r.status_code == 201, r.text
    capa = r.json()
    close = {"effectiveness": "storage fixed", "password": fh.TEST_PASSWORD}
    r = client.post(f"/api/v1/qa/capas/{capa['id']}/close", json=close, headers=who["pharmacist"])
    assert r.status_code == 403
    r = client.post(
        f"/api/v1/qa/capas/{capa['id']}/close", json=close | {"username": "qp"}, headers=who["qp"]
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "closed" and r.json()["signature_id"]
    # change control and the annual report are the network's: a site's QP is refused
    with app.uow() as uow:
        data = app.master_files.effective_for_code(uow, HYDROCORTISONE).content()
    data.pop("version")
    with app.uow() as uow:
        v2 = app.master_files.draft(uow, fh.actor(app, "qp"), data).id
    cc = {"proposed_master_file_id": v2, "title": "t", "description": "d", "reason": "r"}
    r = client.post("/api/v1/change-controls", json=cc, headers=who["qp-gstt"])
    assert r.status_code == 403 and r.json()["error"]["code"] == "other_site"
    r = client.post("/api/v1/change-controls", json=cc, headers=who["qp"])
    assert r.status_code == 201, r.text
    assert {s["site_code"] for s in r.json()["impact"]} == {"GSTT-PH", "MAN-PH", "MOB-1"}
    year = app.clock.now().year
    url = f"/api/v1/annual-reports/{HYDROCORTISONE}/{year}"
    assert client.get(url, headers=who["qp-gstt"]).status_code == 403
    assert client.get(url, headers=who["pharmacist"]).status_code == 403
    assert client.get(url, headers=who["auditor"]).status_code == 200
    r = client.get(url, headers=who["qp"])
    assert r.status_code == 200 and r.json()["totals"]["batches_made"] == 1
    r = client.get(f"{url}/export", params={"format": "csv"}, headers=who["qp"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    r = client.get(f"{url}/export", params={"format": "pdf"}, headers=who["qp"])
    assert r.status_code == 200 and r.content.startswith(b"%PDF-")
    assert client.get(f"{url}/export", headers=who["pharmacist"]).status_code == 403


def test_the_page_shows_items_charts_and_the_report(seeded: App, made: str) -> None:
    app = seeded
    batch = fh.batch(app, made)
    complaint = _complaint(app, "pharmacist", batch_number=batch.batch_number)
    _capa(app, "pharmacist", due_date=_due(app, 1))
    app.clock.advance(3 * 86400)  # type: ignore[attr-defined]
    qp = fh.web_login(app, "qp")
    page = qp.get("/qa")
    assert page.status_code == 200
    assert f'data-id="{complaint.id}"' in page.text
    assert page.text.count('class="chart" data-figure=') == 2  # open per site, monthly trend
    assert "overdue" in page.text and 'id="annual-report"' in page.text
    assert "/static/vendor/plotly.min.js" in page.text and "cdn" not in page.text.lower()
    pdf = qp.get("/qa/annual-report", params={"code": HYDROCORTISONE, "year": app.clock.now().year})
    assert pdf.status_code == 200 and batch.batch_number in pdf_text(pdf.content)
    year = app.clock.now().year
    assert pdf.headers["content-disposition"] == (
        f'attachment; filename="annual-report-{HYDROCORTISONE}-{year}.pdf"'
    )
    csv = qp.get(
        "/qa/annual-report", params={"code": HYDROCORTISONE, "year": year, "format": "csv"}
    )
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.headers["content-disposition"] == (
        f'attachment; filename="annual-report-{HYDROCORTISONE}-{year}.csv"'
    )
    pharmacist = fh.web_login(app, "pharmacist")
    own = pharmacist.get("/qa")
    assert own.status_code == 200 and f'data-id="{complaint.id}"' in own.text
    assert 'id="annual-report"' not in own.text
    assert (
        pharmacist.get(
            "/qa/annual-report", params={"code": HYDROCORTISONE, "year": 2026}
        ).status_code
        == 403
    )
    assert fh.web_login(app, "operator").get("/qa").status_code == 403


def test_cli_json(seeded: App, tmp_path: Any, made: str) -> None:
    import json

    from tests import cli_helpers

    app = seeded
    batch = fh.batch(app, made)
    env = {
        "NEARFAB_DATABASE_URL": app.engine.url.render_as_string(hide_password=False),
        # the CLI runs on the wall clock, years after the seeded accounts' passwords were set
        "NEARFAB_PASSWORD_MAX_AGE_DAYS": "36500",
    }
    data = app.settings.data_dir
    common = ["--user", "pharmacist", "--password", fh.TEST_PASSWORD, "--json"]
    recorded = cli_helpers.run(
        ["qa", "complaint", *common, "--site", "GSTT-PH", "--reporter", "nurse",
         "--description", "cracked", "--owner", "pharmacist", "--due", "2099-01-01",
         "--batch", batch.batch_number],
        env=env, data_dir=data,
    )  # fmt: skip
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    complaint_id = json.loads(recorded.stdout)["id"]
    refused = cli_helpers.run(
        ["qa", "complaint", *common, "--site", "GSTT-PH", "--reporter", "nurse",
         "--description", "cracked", "--owner", "pharmacist", "--due", "2099-01-01"],
        env=env, data_dir=data,
    )  # fmt: skip
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["error"]["field"] == "batch_number"
    shown = cli_helpers.run(["qa", "view", *common], env=env, data_dir=data)
    assert complaint_id in {i["id"] for i in json.loads(shown.stdout)["items"]}
    qp = ["--user", "qp", "--password", fh.TEST_PASSWORD, "--json"]
    out = tmp_path / "report.csv"
    year = str(app.clock.now().year)
    report = cli_helpers.run(
        ["qa", "annual-report", HYDROCORTISONE, year, *qp, "--out", str(out)],
        env=env, data_dir=data,
    )  # fmt: skip
    assert report.returncode == 0, report.stdout + report.stderr
    assert json.loads(report.stdout)["totals"]["batches_made"] == 1
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [r["key"] for r in rows if r["section"] == "complaint"] == [complaint_id]
    denied = cli_helpers.run(
        ["qa", "annual-report", HYDROCORTISONE, year, *common], env=env, data_dir=data
    )
    assert denied.returncode == 2


def test_a_proficiency_suspension_is_an_open_item_tracked_by_its_capa(seeded: App) -> None:
    """comparability/ suspends a site with |z| > 3; the central view lists the suspension at
    its site until the QP lifts it, with the central CAPA that names it."""
    app = seeded
    qp = fh.actor(app, "qp")
    with app.uow() as uow:
        round_id = app.comparability.open_round(
            uow,
            qp,
            {
                "master_file_code": HYDROCORTISONE,
                "attribute": "assay",
                "unit": "%",
                "reference": "PT-QA",
                "site_ids": ["GSTT-PH", "MAN-PH", "MOB-1", "CTRL"],
                "assigned_value": 100.0,
                "sd_pt": 2.0,
            },
        ).id
    # hand: x_pt = 100, σ_pt = 2: z(MAN-PH) = (107 - 100) / 2 = 3.5 > 3, the others |z| <= 0.5
    for site, value in (("GSTT-PH", 101.0), ("MAN-PH", 107.0), ("MOB-1", 99.0), ("CTRL", 100.0)):
        with app.uow() as uow:
            app.comparability.enter_result(uow, qp, round_id, {"site_id": site, "value": value})
    with app.uow() as uow:
        app.comparability.score_round(uow, qp, round_id)
    with app.uow() as uow:
        [suspension] = app.comparability.suspensions(uow, qp)
    capa = _capa(
        app,
        "qp",
        site_id="MAN-PH",
        source_kind="proficiency_suspension",
        source_id=suspension["id"],
        title="assay bias at MAN-PH",
    )
    with app.uow() as uow:
        view = central_qa(app, uow, qp)
    items = {i["id"]: i for i in view["items"]}
    row = items[suspension["id"]]
    assert (row["kind"], row["site_code"], row["status"]) == ("suspension", "MAN-PH", "active")
    assert row["reference"] == f"CAPA {capa.id}" and "z = 3.50" in row["title"]
    assert items[capa.id]["reference"] == f"proficiency_suspension {suspension['id']} " + (
        "(suspension active)"
    )
    assert {r["site_code"]: r["suspension"] for r in view["by_site"]} == {"MAN-PH": 1}
    # the suspension is lifted once its CAPA is closed (comparability checks it)
    with app.uow() as uow:
        app.qms.close_capa(
            uow,
            qp,
            capa.id,
            {"effectiveness": "z within 1 next round", "password": fh.TEST_PASSWORD},
        )
    with app.uow() as uow:
        app.comparability.close_capa(
            uow,
            qp,
            suspension["id"],
            {"capa_reference": capa.id, "summary": "recalibrated", "password": fh.TEST_PASSWORD},
        )
    with app.uow() as uow:
        after = {i["id"]: i for i in central_qa(app, uow, qp)["items"]}
    assert suspension["id"] not in after and capa.id not in after  # both closed
    with app.uow() as uow:
        lifted = next(s for s in app.comparability.suspensions(uow, qp) if s["id"] == row["id"])
    assert lifted["status"] == "lifted" and lifted["capa_reference"] == capa.id


def test_the_page_records_a_complaint_and_a_qp_closes_a_capa(seeded: App, made: str) -> None:
    app = seeded
    fh.site_user(app, "pharm-man", "pharmacist", "MAN-PH")
    batch = fh.batch(app, made)
    capa = _capa(app, "pharmacist")
    pharmacist = fh.web_login(app, "pharmacist")
    form = {
        "csrf_token": fh.csrf(pharmacist.get("/qa").text),
        "site_id": "GSTT-PH",
        "reporter": "ward nurse",
        "description": "label unreadable",
        "batch_number": batch.batch_number,
        "owner": "pharmacist",
        "due_date": _due(app),
    }
    r = pharmacist.post("/qa/complaints", data=form)
    assert r.status_code == 200 and f"on batch {batch.batch_number} recorded" in r.text
    r = pharmacist.post("/qa/complaints", data=form | {"owner": "ghost"})
    assert "Refused: owner: no active user" in r.text
    # another site's QA: answered as a record that does not exist; nothing written
    other = fh.web_login(app, "pharm-man")
    r = other.post("/qa/complaints", data=form | {"csrf_token": fh.csrf(other.get("/qa").text)})
    assert r.status_code == 404
    with app.uow() as uow:
        assert len(central_qa(app, uow, fh.actor(app, "qp"))["by_site"]) == 1  # GSTT-PH only
    # the pharmacist sees no close form; the QP closes the CAPA with an e-signature
    assert f'action="/qa/capas/{capa.id}/close"' not in pharmacist.get("/qa").text
    qp = fh.web_login(app, "qp")
    page = qp.get("/qa").text
    assert f'action="/qa/capas/{capa.id}/close"' in page
    close = {"csrf_token": fh.csrf(page), "effectiveness": "checked 10 packs"}
    r = qp.post(f"/qa/capas/{capa.id}/close", data=close | {"password": "nope"})
    assert "Refused:" in r.text
    r = qp.post(
        f"/qa/capas/{capa.id}/close",
        data=close | {"username": "qp", "password": fh.TEST_PASSWORD},
    )
    assert f"CAPA {capa.id} closed (e-signed)." in r.text
    with app.uow() as uow:
        assert uow.session.get_one(Capa, capa.id).status == "closed"
