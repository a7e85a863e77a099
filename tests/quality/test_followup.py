"""Release with a result pending, and its follow-up (issue 15 part 2), on SQLite and PostgreSQL,
through the services, the HTTP API and the CLI.

A test-only family (registered here, a few lines) declares one of its release tests "may be
pending at release" (a stand-in for a culture whose result comes days after use). The QP
certifies with that result pending: the signature's meaning and the certificate name it. The
result is entered later, e-signed: a pass closes the follow-up; a fail opens an investigation
and notifies the treating prescriber; a second entry is refused unless it is a signed
correction with its reason. Who may enter it is tested by attacking from each role and site.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.quality.release_helpers import register_release, user
from tests.quality.release_helpers import token as _token
from typer.testing import CliRunner

from nearfab.bootstrap import App
from nearfab.cli.main import app as cli
from nearfab.common.errors import Forbidden, NotFound, Refused, Unauthenticated, ValidationFailed
from nearfab.identity import AuditEntry
from nearfab.quality.kit import Check, ReleaseEvidence, ReleaseResults
from nearfab.quality.models import FollowUpResult, PrescriberNotice
from nearfab.web.server import create_web_app

LATE = "ph_eur_2_9_40"  # the demo master file's test name the test family answers as pending
PRESCRIBER = ("Practitioner/demo-prescriber", "Dr Clare Nice")  # the demo bundle's requester
MEANING = "QP certification: batch released"


class LateResultRelease:
    """The test family's release part: the demo master file's tests by name, the first one's
    result may be pending at release; the others pass."""

    tests: Mapping[str, str] = {
        LATE: "Late culture (test family)",
        "ph_eur_2_9_5": "Count (test family)",
        "unit_mass": "Mass (test family)",
    }
    pending_at_release = frozenset({LATE})

    def check_rule(self, rule: Mapping[str, Any]) -> None:
        return None

    def evaluate(
        self, tests: Sequence[str], evidence: ReleaseEvidence, rule: Mapping[str, Any]
    ) -> ReleaseResults:
        return ReleaseResults(
            checks=tuple(
                Check(n, None, "Late culture: result pending")
                if n == LATE
                else Check(n, True, f"{n}: within specification")
                for n in tests
            )
        )

    def lot_attributes(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        return dict(attributes)


def _released_with_pending(app: App) -> str:
    register_release(app, LateResultRelease())
    batch_id = fh.make_batch(app)
    with app.uow() as uow:
        review = app.quality.get_review(uow, batch_id)
        assert review.proposed_decision == "release"  # a pending result does not block
        assert review.proposal["pending"] == [LATE]
    fh.release(app, batch_id)
    return batch_id


# a test asking for `pending` gets a copy of a world where `_released_with_pending` already ran
# (built once per backend and worker); the test family is registered again on the copy (an
# app's families live in memory)
seeded = fh.seeded_or_world({"pending": _released_with_pending})


@pytest.fixture
def pending(seeded: App, request: pytest.FixtureRequest) -> str:
    """The batch released with a result pending (`_released_with_pending`), on the test's copy."""
    register_release(seeded, LateResultRelease())
    batch_id: str = fh.built_data(request)
    return batch_id


def _site_code(app: App, batch_id: str) -> str:
    with app.uow() as uow:
        return app.network.get_site(uow, fh.batch(app, batch_id).site_id).code


def _enter(app: App, username: str, batch_id: str, **kw: Any) -> Any:
    with app.uow() as uow:
        return app.quality.followups.enter_result(
            uow,
            fh.actor(app, username),
            batch_id,
            kw.pop("test", LATE),
            outcome=kw.pop("outcome", "pass"),
            detail=kw.pop("detail", "no growth after 14 days"),
            password=kw.pop("password", fh.TEST_PASSWORD),
            meaning="result entered by",
            **kw,
        )


def test_a_result_pending_at_release_is_certified_as_such_and_a_pass_closes_it(
    seeded: App, pending: str
) -> None:
    batch_id = pending
    site = _site_code(seeded, batch_id)
    user(seeded, "qa-here", ["pharmacist"], site)
    other = next(c for c in ("GSTT-PH", "MAN-PH") if c != site)
    user(seeded, "qa-there", ["pharmacist"], other)

    # the e-signature's manifestation names the result still pending
    with seeded.uow() as uow:
        review = seeded.quality.get_review(uow, batch_id)
        (sig,) = [
            s
            for s in seeded.signatures.signatures_for(uow, "batch", batch_id)
            if s.id == review.signature_id
        ]
    assert sig.meaning == f"{MEANING}; released with results pending: {LATE}"
    assert fh.batch(seeded, batch_id).status == "released"

    api = TestClient(create_web_app(seeded))
    cert = api.get(f"/api/v1/batches/{batch_id}", headers=_token(seeded, "qp")).json()["review"]
    assert cert["pending_results"] == [LATE]
    assert [(f["test"], f["title"], f["status"]) for f in cert["followups"]] == [
        (LATE, "Late culture (test family)", "pending")
    ]
    assert cert["signature_valid"] is True
    # the open follow-ups: the batch's site and the network see it, another site does not
    here = api.get("/api/v1/release/followups", headers=_token(seeded, "qa-here")).json()
    there = api.get("/api/v1/release/followups", headers=_token(seeded, "qa-there")).json()
    assert [f["batch_id"] for f in here] == [batch_id] and there == []
    assert batch_id in {
        f["batch_id"]
        for f in api.get("/api/v1/release/followups", headers=_token(seeded, "auditor")).json()
    }

    url = f"/api/v1/batches/{batch_id}/followups/{LATE}/result"
    body = {
        "outcome": "pass",
        "detail": "no growth after 14 days",
        "username": "qa-here",
        "password": fh.TEST_PASSWORD,
    }
    r = api.post(url, json=body, headers=_token(seeded, "qa-here"))
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "passed" and done["deviation_id"] is None
    (entry,) = done["results"]
    assert (entry["outcome"], entry["detail"], entry["in_force"]) == (
        "pass",
        "no growth after 14 days",
        True,
    )
    assert entry["signature_valid"] is True and entry["entered_by_name"] == "Qa-Here"
    assert api.get("/api/v1/release/followups", headers=_token(seeded, "qa-here")).json() == []

    # a second entry never overwrites: refused without a reason, and the refusal is audited
    again = api.post(url, json=body | {"outcome": "fail"}, headers=_token(seeded, "qa-here"))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "result_already_entered"
    assert again.json()["error"]["field"] == "reason"
    assert "result_already_entered" in {
        (e.new or {}).get("code") for e in fh.refusals(seeded, "batch", batch_id)
    }
    with seeded.uow() as uow:
        assert [r.outcome for r in seeded.quality.followups.results(uow, done["id"])] == ["pass"]
        assert seeded.quality.deviations(uow, batch_id) == []
        assert uow.session.scalars(select(PrescriberNotice)).all() == []
        # the QP's certification still verifies after the follow-up
        assert seeded.quality.signature_valid(uow, seeded.quality.get_review(uow, batch_id))


def test_a_failed_result_opens_an_investigation_and_notifies_the_prescriber(
    seeded: App, pending: str
) -> None:
    batch_id = pending
    batch = fh.batch(seeded, batch_id)
    with seeded.uow() as uow:
        order = seeded.orders.get(uow, batch.order_id)
        patient_ref = seeded.orders.patient(uow, order.patient_id).ref
        order_site = seeded.network.get_site(uow, order.site_id).code
    other = next(c for c in ("GSTT-PH", "MAN-PH") if c != order_site)
    user(seeded, "doctor-here", ["clinician"], order_site)
    user(seeded, "doctor-there", ["clinician"], other)

    detail = "growth of a Gram-positive coccus on day 3"
    fu = _enter(seeded, "qp", batch_id, outcome="fail", detail=detail)
    with seeded.uow() as uow:
        (fu,) = seeded.quality.followups.for_batch(uow, batch_id)
        (dev,) = seeded.quality.deviations(uow, batch_id)
        (notice,) = uow.session.scalars(select(PrescriberNotice)).all()
        review = seeded.quality.get_review(uow, batch_id)
        release_still_valid = seeded.quality.signature_valid(uow, review)
    assert fu.status == "failed" and fu.deviation_id == dev.id
    assert (dev.kind, dev.status) == ("release_followup_failed", "open")
    assert detail in dev.description and batch.batch_number in dev.description
    # the treating prescriber of the batch's patient, as the prescription named them
    assert (notice.prescriber_reference, notice.prescriber_display) == PRESCRIBER
    assert (notice.site_id, notice.order_id, notice.patient_ref) == (
        order.site_id,
        order.id,
        patient_ref,
    )
    assert notice.deviation_id == dev.id and detail in notice.message
    assert release_still_valid is True  # the investigation came after the certification
    # all of it audited: the result, the investigation and the notice
    with seeded.uow() as uow:
        rows = {
            (e.entity_type, e.entity_id, e.action)
            for e in uow.session.scalars(
                select(AuditEntry).where(AuditEntry.entity_id.in_([fu.id, dev.id, notice.id]))
            )
        }
    assert {
        ("release_followup", fu.id, "update"),
        ("deviation", dev.id, "create"),
        ("prescriber_notice", notice.id, "create"),
    } <= rows

    # the clinician of the patient's site sees it on the API and the dashboard; another site not
    api = TestClient(create_web_app(seeded))
    mine = api.get("/api/v1/notices", headers=_token(seeded, "doctor-here")).json()
    assert [(n["id"], n["prescriber_display"]) for n in mine] == [(notice.id, PRESCRIBER[1])]
    assert api.get("/api/v1/notices", headers=_token(seeded, "doctor-there")).json() == []
    page = fh.web_login(seeded, "doctor-here").get("/").text
    assert batch.batch_number in page and "Late culture (test family)" in page
    ack = f"/api/v1/notices/{notice.id}/acknowledge"
    stranger = api.post(ack, headers=_token(seeded, "doctor-there"))
    assert stranger.status_code == 403 and stranger.json()["error"]["code"] == "other_site"
    assert api.post(ack, headers=_token(seeded, "qp")).status_code == 403
    assert api.post(ack, headers=_token(seeded, "doctor-here")).status_code == 200
    twice = api.post(ack, headers=_token(seeded, "doctor-here"))
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "already_acknowledged"
    unread = api.get("/api/v1/notices?unacknowledged=true", headers=_token(seeded, "doctor-here"))
    assert unread.json() == []

    # a signed correction with its reason: a new entry, the old one kept; the investigation
    # stays open (a person closes it)
    with pytest.raises(Refused) as same:
        _enter(seeded, "qp", batch_id, outcome="fail", detail=detail, reason="retyped")
    assert same.value.code == "nothing_to_correct"
    _enter(seeded, "qp", batch_id, outcome="pass", detail="contaminated plate", reason="lab error")
    with seeded.uow() as uow:
        (fu,) = seeded.quality.followups.for_batch(uow, batch_id)
        first, second = seeded.quality.followups.results(uow, fu.id)
        (dev,) = seeded.quality.deviations(uow, batch_id)
    assert fu.status == "passed" and fu.result_id == second.id
    assert (second.corrects_id, second.reason, first.outcome) == (first.id, "lab error", "fail")
    assert dev.status == "open"


def test_a_refused_result_changes_nothing_and_is_on_record(seeded: App, pending: str) -> None:
    batch_id = pending
    with pytest.raises(Unauthenticated):
        _enter(seeded, "qp", batch_id, outcome="fail", password="not-the-password")
    for field, kw in (
        ("outcome", {"outcome": "maybe"}),
        ("detail", {"detail": "  "}),
        ("test", {"test": "unit_mass"}),  # passed at release: nothing pending
    ):
        with pytest.raises((ValidationFailed, NotFound)) as bad:
            _enter(seeded, "qp", batch_id, **kw)
        assert bad.value.field == field
    with seeded.uow() as uow:
        (fu,) = seeded.quality.followups.for_batch(uow, batch_id)
        assert (fu.status, fu.result_id, fu.deviation_id) == ("pending", None, None)
        assert uow.session.scalars(select(FollowUpResult)).all() == []
        assert uow.session.scalars(select(PrescriberNotice)).all() == []
        assert seeded.quality.deviations(uow, batch_id) == []
    assert len(fh.refusals(seeded, "batch", batch_id)) >= 3


def test_who_may_enter_a_result_each_role_from_each_site(seeded: App, pending: str) -> None:
    batch_id = pending
    site = _site_code(seeded, batch_id)
    other = next(c for c in ("GSTT-PH", "MAN-PH") if c != site)
    attackers = {
        "op-here": (["operator"], site, "forbidden"),
        "doc-here": (["clinician"], site, "forbidden"),
        "plan-here": (["planner"], site, "forbidden"),
        "adm-here": (["admin"], site, "forbidden"),
        "aud-net": (["auditor"], "CTRL", "forbidden"),
        "qa-there": (["pharmacist"], other, "other_site"),
        "qp-there": (["qp"], other, "other_site"),
    }
    for username, (roles, code, expected) in attackers.items():
        user(seeded, username, roles, code)
        with pytest.raises(Forbidden) as refused:
            _enter(seeded, username, batch_id, outcome="fail")
        assert refused.value.code == expected, username
    audited = {e.actor_name for e in fh.refusals(seeded, "batch", batch_id)}
    assert {u.title() for u in attackers} <= audited
    with seeded.uow() as uow:
        (fu,) = seeded.quality.followups.for_batch(uow, batch_id)
    assert fu.status == "pending"
    # QA of the batch's own site may; so may a QP of the control site (from the CLI)
    user(seeded, "qa-here", ["pharmacist"], site)
    assert _enter(seeded, "qa-here", batch_id).status == "passed"


def test_the_cli_enters_a_result_and_its_correction(
    seeded: App, monkeypatch: pytest.MonkeyPatch, pending: str
) -> None:
    monkeypatch.setenv(
        "NEARFAB_DATABASE_URL", str(seeded.engine.url.render_as_string(hide_password=False))
    )
    # the CLI runs on the real clock; the seeded world set its passwords on the test's clock
    monkeypatch.setenv("NEARFAB_PASSWORD_MAX_AGE_DAYS", "3650")
    batch_id = pending
    runner = CliRunner()
    base = ["--data-dir", str(seeded.settings.data_dir), "batches", "followup-result"]
    qp = ["--user", "qp", "--password", fh.TEST_PASSWORD]
    args = [*base, batch_id, LATE, *qp, "--outcome", "fail", "--detail", "turbid on day 2"]
    done = runner.invoke(cli, [*args, "--json"])
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    assert out["status"] == "failed" and out["deviation_id"]
    again = runner.invoke(cli, [*args, "--json"])
    assert again.exit_code == 2
    assert json.loads(again.stdout)["error"]["code"] == "result_already_entered"
    fixed = runner.invoke(
        cli,
        [*base, batch_id, LATE, *qp, "--outcome", "pass", "--detail", "clear", "--reason", "x"],
    )
    assert fixed.exit_code == 0, fixed.output
    assert "passed" in fixed.stdout


def test_the_batch_page_form_enters_a_result_and_shows_it(seeded: App, pending: str) -> None:
    batch_id = pending
    browser = fh.web_login(seeded, "qp")
    page = browser.get(f"/batches/{batch_id}").text
    assert "Late culture (test family)" in page and "Enter the result" in page
    form = {
        "csrf_token": fh.csrf(page),
        "outcome": "fail",
        "detail": "turbid on day 2",
        "meaning": "result entered by",
        "username": "qp",
        "password": fh.TEST_PASSWORD,
    }
    r = browser.post(f"/batches/{batch_id}/followups/{LATE}/result", data=form)
    assert r.status_code == 200 and f"Result of {LATE}: entered" in r.text
    assert "turbid on day 2" in r.text and "Correct the result" in r.text
    # the same form again, without a reason: refused, said on the page
    again = browser.post(f"/batches/{batch_id}/followups/{LATE}/result", data=form)
    assert "result_already_entered" in again.text
    with seeded.uow() as uow:
        (fu,) = seeded.quality.followups.for_batch(uow, batch_id)
    assert fu.status == "failed"
