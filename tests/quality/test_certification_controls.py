"""What a QP needs before certifying a batch, on SQLite and PostgreSQL, through the services and
the HTTP API:

- only an active QP assigned to the batch's master file certifies it (21 CFR 11.10(g),
  authority checks; EU GMP Annex 16: the QP named for the product);
- the batch's audit trail has been reviewed, and signed as reviewed, after its last change
  (EU GMP Annex 11 §9, audit trail review; 21 CFR 11.10(e)).
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Refused,
    Unauthenticated,
    ValidationFailed,
)
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import AuditEntry, User


def _unready(app: App) -> str:
    """A made batch, its record not yet signed nor its audit trail reviewed (make_batch
    ready=False), built once per backend and worker (flow_helpers.seeded_or_world); its id."""
    return fh.make_batch(app, ready=False)


# a test asking for `unready` gets a copy of `_unready`'s world; any other, the seeded network
seeded = fh.seeded_or_world({"unready": _unready})


@pytest.fixture
def unready(seeded: App, request: pytest.FixtureRequest) -> str:
    """`_unready`'s batch id, on the test's own copy."""
    batch_id: str = fh.built_data(request)
    return batch_id


def _decide(app: App, batch_id: str, username: str = "qp", **kw: object) -> None:
    with app.uow() as uow:
        app.quality.decide(
            uow,
            fh.actor(app, username),
            batch_id,
            decision=kw.pop("decision", "release"),  # type: ignore[arg-type]
            password=kw.pop("password", fh.TEST_PASSWORD),  # type: ignore[arg-type]
            meaning="QP certification: batch released",
            **kw,  # type: ignore[arg-type]
        )


def _assign(app: App, username: str, *, unassign: bool = False, by: str = "admin") -> None:
    with app.uow() as uow:
        service = app.master_files
        change = service.unassign_qp if unassign else service.assign_qp
        done = change(
            uow,
            fh.actor(app, by),
            HYDROCORTISONE,
            username,
            reason="named on the licence" if not unassign else "left the company",
        )
    if not unassign:  # naming a QP is requested, then approved by a second administrator
        with app.uow() as uow:
            app.users.decide_request(
                uow, fh.actor(app, "admin-two"), done.id, approve=True, reason="licence checked"
            )


def _code(app: App, batch_id: str) -> str:
    return fh.batch(app, batch_id).master_file_code


def test_11_10_g_only_assigned_active_qp_certifies(seeded: App) -> None:
    fh.create_user(seeded, "qp-two", ["qp"], "CTRL")
    batch_id = fh.make_batch(seeded)  # record complete, audit trail reviewed
    assert _code(seeded, batch_id) == HYDROCORTISONE

    with pytest.raises(Refused) as caught:
        _decide(seeded, batch_id, username="qp-two")
    exc = caught.value
    assert exc.code == "not_qp_for_master_file" and exc.field == "signer"
    assert HYDROCORTISONE in exc.message
    fh.assert_refusal_audited(seeded, exc, "batch", batch_id)
    assert fh.batch(seeded, batch_id).status == "completed"

    # an admin assigns the QP, with a reason, on record
    _assign(seeded, "qp-two")
    with seeded.uow() as uow:
        rows = uow.session.scalars(
            select(AuditEntry)
            .where(AuditEntry.entity_type == "master_file_qp")
            .order_by(AuditEntry.id)
        ).all()
        assert rows[-1].reason == "named on the licence"
        assert rows[-1].new is not None
        assert {k: rows[-1].new[k] for k in ("master_file_code", "user_id", "active")} == {
            "master_file_code": HYDROCORTISONE,
            "user_id": fh.actor(seeded, "qp-two").user_id,
            "active": True,
        }
        # requested by one administrator, approved by another (separation of duties)
        assert rows[-1].new["requested_by"] == fh.actor(seeded, "admin").user_id
        assert rows[-1].new["approved_by"] == fh.actor(seeded, "admin-two").user_id
    _decide(seeded, batch_id, username="qp-two")
    assert fh.batch(seeded, batch_id).status == "released"

    # unassigned: no longer certifies; deactivated: neither
    second = fh.make_batch(seeded)
    _assign(seeded, "qp-two", unassign=True)
    with pytest.raises(Refused) as unassigned:
        _decide(seeded, second, username="qp-two")
    assert unassigned.value.code == "not_qp_for_master_file"
    _assign(seeded, "qp-two")
    fh.edit(seeded, User, fh.actor(seeded, "qp-two").user_id, active=False)
    with pytest.raises(Refused) as inactive:
        _decide(seeded, second, username="qp-two")
    assert inactive.value.code == "not_qp_for_master_file"
    # a rejection is not a certification: any QP may reject
    fh.create_user(seeded, "qp-three", ["qp"], "CTRL")
    _decide(seeded, second, username="qp-three", decision="reject", reason="not wanted")
    assert fh.batch(seeded, second).status == "rejected"


def test_qp_assignment_is_for_admins_and_qps_only(seeded: App) -> None:
    fh.create_user(seeded, "qp-two", ["qp"], "CTRL")
    with pytest.raises(Forbidden):
        _assign(seeded, "qp-two", by="qp")  # a QP cannot appoint another
    with pytest.raises(ValidationFailed) as not_qp:
        _assign(seeded, "pharmacist")
    assert not_qp.value.field == "user"
    with pytest.raises(Conflict) as twice:
        _assign(seeded, "qp")  # the demo QP is assigned already
    assert twice.value.code == "already_assigned"
    with seeded.uow() as uow, pytest.raises(ValidationFailed) as no_reason:
        seeded.master_files.assign_qp(
            uow, fh.actor(seeded, "admin"), HYDROCORTISONE, "qp-two", reason=" "
        )
    assert no_reason.value.field == "reason"
    with seeded.uow() as uow, pytest.raises(NotFound):
        seeded.master_files.assign_qp(
            uow, fh.actor(seeded, "admin"), "MF-NOPE", "qp-two", reason="x"
        )
    with pytest.raises(NotFound):
        _assign(seeded, "qp-two", unassign=True)  # not assigned
    with seeded.uow() as uow:
        assigned = {r.user_id for r in seeded.master_files.qps(uow, HYDROCORTISONE) if r.active}
    assert assigned == {fh.actor(seeded, "qp").user_id, fh.actor(seeded, "qp-autopilot").user_id}


def test_annex11_s9_release_needs_audit_trail_reviewed(seeded: App, unready: str) -> None:
    batch_id = unready
    fh.complete_record(seeded, batch_id)
    with pytest.raises(Refused) as caught:
        _decide(seeded, batch_id)
    exc = caught.value
    assert exc.code == "audit_trail_not_reviewed" and exc.field == "audit_trail"
    fh.assert_refusal_audited(seeded, exc, "batch", batch_id)

    for username in ("pharmacist", "operator", "auditor"):  # only a QP reviews
        with pytest.raises(Forbidden):
            fh.review_audit_trail(seeded, batch_id, username=username)
    with seeded.uow() as uow, pytest.raises(Unauthenticated):
        seeded.quality.records.review_audit_trail(
            uow, fh.actor(seeded, "qp"), batch_id, password="not-it"
        )
    with seeded.uow() as uow:
        batch = seeded.production.get(uow, batch_id)
        assert seeded.quality.records.review_state(uow, batch).review is None

    fh.review_audit_trail(seeded, batch_id)
    with seeded.uow() as uow:
        records = seeded.quality.records
        batch = seeded.production.get(uow, batch_id)
        (review,) = records.reviews(uow, batch_id)
        rows = [r for r in records.trail(uow, batch) if r.id <= review.last_audit_id]
        # the signature is bound to the hash of the rows the QP saw
        assert review.row_count == len(rows) > 5
        assert review.trail_hash == records.trail_hash(batch_id, rows)
        (sig,) = seeded.signatures.signatures_for(uow, "audit_trail_review", review.id)
        assert sig.meaning == "audit trail reviewed" and sig.signer_name == "Quentin Parr (QP)"
        assert seeded.signatures.is_valid(sig, records.review_content(review))
        kinds = {r.entity_type for r in rows}
        assert {"batch", "job", "order", "release_review", "batch_step"} <= kinds
    # a failed attempt (wrong password) is in the trail but does not make the review stale
    with pytest.raises(Unauthenticated):
        _decide(seeded, batch_id, password="wrong")
    _decide(seeded, batch_id)
    assert fh.batch(seeded, batch_id).status == "released"
    with pytest.raises(Refused) as after:
        fh.review_audit_trail(seeded, batch_id)
    assert after.value.code == "not_pending"


def test_rejection_does_not_need_the_review(seeded: App, unready: str) -> None:
    batch_id = unready
    fh.reject(seeded, batch_id)
    assert fh.batch(seeded, batch_id).status == "rejected"


def test_audit_trail_review_goes_stale_after_new_rows(seeded: App) -> None:
    batch_id = fh.make_batch(seeded)  # complete and reviewed
    with seeded.uow() as uow:
        seeded.quality.records.open_deviation(
            uow, fh.actor(seeded, "qp"), batch_id, description="label printer jammed once"
        )
    with seeded.uow() as uow:
        state = seeded.quality.records.review_state(uow, seeded.production.get(uow, batch_id))
        assert not state.current and state.rows_since == 1
    with pytest.raises(Refused) as caught:
        _decide(seeded, batch_id, reason="deviation assessed")
    assert caught.value.code == "audit_trail_changed"
    assert "review it again" in caught.value.message
    fh.assert_refusal_audited(seeded, caught.value, "batch", batch_id)

    fh.review_audit_trail(seeded, batch_id)  # the QP looks again
    _decide(seeded, batch_id, reason="deviation assessed: no impact on the printlets")
    assert fh.batch(seeded, batch_id).status == "released"


def test_certification_controls_through_the_http_api(seeded: App, unready: str) -> None:
    from nearfab.web.server import create_web_app

    qp_two_id = fh.create_user(seeded, "qp-two", ["qp"], "CTRL").user_id
    # as if they had chosen their own password already (an admin sets a temporary one)
    fh.edit(seeded, User, qp_two_id, must_change_password=False)
    batch_id = unready
    fh.complete_record(seeded, batch_id)
    client = TestClient(create_web_app(seeded))

    def auth(username: str) -> dict[str, str]:
        answer = client.post(
            "/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD}
        )
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    qp, qp_two, admin = auth("qp"), auth("qp-two"), auth("admin")
    decision = {
        "decision": "release",
        "password": fh.TEST_PASSWORD,
        "username": "qp",
        "meaning": "QP certification",
    }
    url = f"/api/v1/batches/{batch_id}"

    answer = client.post(f"{url}/decision", json=decision, headers=qp)
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "audit_trail_not_reviewed"

    trail = client.get(f"{url}/audit-trail", headers=qp).json()
    assert trail["review_current"] is False and len(trail["rows"]) > 5
    answer = client.post(
        f"{url}/audit-trail-review",
        json={"password": fh.TEST_PASSWORD, "username": "qp"},
        headers=qp,
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["trail_hash"] == trail["trail_hash"]
    assert answer.json()["rows"] == len(trail["rows"])

    answer = client.post(f"{url}/decision", json={**decision, "username": "qp-two"}, headers=qp_two)
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "not_qp_for_master_file"

    code = fh.batch(seeded, batch_id).master_file_code
    answer = client.post(
        f"/api/v1/master-files/{code}/qps", json={"user": "qp-two", "reason": "x"}, headers=qp
    )
    assert answer.status_code == 403  # only an administrator assigns
    answer = client.post(
        f"/api/v1/master-files/{code}/qps",
        json={"user": "qp-two", "reason": "second QP for the product"},
        headers=admin,
    )
    assert answer.status_code == 201, answer.text
    # pending until a second administrator of the control site approves
    answer = client.post(
        f"/api/v1/approvals/{answer.json()['id']}/approve",
        json={"reason": "licence checked"},
        headers=auth("admin-two"),
    )
    assert answer.status_code == 200, answer.text
    listed = client.get(f"/api/v1/master-files/{code}/qps?active=true", headers=qp).json()
    assert fh.actor(seeded, "qp-two").user_id in {r["user_id"] for r in listed}

    view = client.get(f"{url}/steps", headers=qp_two).json()
    assert view["release_blockers"] == [] and view["may_certify"] is True
    answer = client.post(f"{url}/decision", json={**decision, "username": "qp-two"}, headers=qp_two)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "released"


def test_qp_assignment_and_review_from_the_cli(
    seeded: App, monkeypatch: pytest.MonkeyPatch, unready: str
) -> None:
    import json

    from typer.testing import CliRunner

    from nearfab.cli.main import app as cli

    monkeypatch.setenv(
        "NEARFAB_DATABASE_URL", str(seeded.engine.url.render_as_string(hide_password=False))
    )
    # the CLI runs on the real clock; the seeded world set its passwords on the test's clock
    monkeypatch.setenv("NEARFAB_PASSWORD_MAX_AGE_DAYS", "3650")
    runner = CliRunner()
    base = ["--data-dir", str(seeded.settings.data_dir)]
    fh.create_user(seeded, "qp-two", ["qp"], "CTRL")
    batch_id = unready
    fh.complete_record(seeded, batch_id)

    admin = ["--user", "admin", "--password", fh.TEST_PASSWORD]
    args = [*base, "batches", "assign-qp", HYDROCORTISONE, "qp-two"]
    refused = runner.invoke(cli, [*args, "--reason", " ", *admin, "--json"])
    assert refused.exit_code == 2
    assert json.loads(refused.stdout)["error"]["field"] == "reason"
    done = runner.invoke(cli, [*args, "--reason", "second QP", *admin, "--json"])
    assert done.exit_code == 0, done.output
    asked = json.loads(done.stdout)
    assert asked["status"] == "pending"  # applies when a second administrator approves
    second = ["--user", "admin-two", "--password", fh.TEST_PASSWORD]
    approve = [*base, "users", "approve", asked["id"], "--reason", "licence checked", *second]
    done = runner.invoke(cli, [*approve, "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["status"] == "approved"
    listed = runner.invoke(cli, [*base, "batches", "qps", HYDROCORTISONE, "--json"])
    assert fh.actor(seeded, "qp-two").user_id in {r["user_id"] for r in json.loads(listed.stdout)}

    steps = runner.invoke(cli, [*base, "batches", "steps", batch_id, "--json"])
    assert steps.exit_code == 0, steps.output
    blockers = {b["code"] for b in json.loads(steps.stdout)["release_blockers"]}
    assert blockers == {"audit_trail_not_reviewed"}
    qp = ["--user", "qp", "--password", fh.TEST_PASSWORD]
    review = runner.invoke(cli, [*base, "batches", "review-audit-trail", batch_id, *qp, "--json"])
    assert review.exit_code == 0, review.output
    assert json.loads(review.stdout)["rows"] > 5
    steps = runner.invoke(cli, [*base, "batches", "steps", batch_id])
    assert "audit trail reviewed by Quentin Parr (QP)" in steps.stdout
