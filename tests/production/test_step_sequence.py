"""Manual batch-record steps, signed in master-file order (21 CFR 11.10(f) operational system
checks: "to enforce permitted sequencing of steps and events"), critical entries verified by a
second person (EU GMP Annex 11 §6), on SQLite and PostgreSQL; through the services and through
the HTTP API.

The demo master files list: line_clearance (manual), filament_loaded (manual, critical entry:
filament lot and mass), run_finished (machine), visual_inspection (manual)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    Refused,
    Unauthenticated,
    ValidationFailed,
)
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import AuditEntry, Signature
from nearfab.production import StepSignoff

FILAMENT = {"filament_lot": "HC-FIL-2.5-GSTT-PH-001", "mass_loaded_g": 12.5}


def _sign(
    app: App,
    batch_id: str,
    code: str,
    username: str = "operator",
    entry: dict[str, Any] | None = None,
    password: str = fh.TEST_PASSWORD,
) -> StepSignoff:
    with app.uow() as uow:
        signoff: StepSignoff = app.quality.records.sign_step(
            uow, fh.actor(app, username), batch_id, code, entry=entry or {}, password=password
        )
        return signoff


def _verify(app: App, batch_id: str, code: str, username: str = "pharmacist") -> StepSignoff:
    with app.uow() as uow:
        signoff: StepSignoff = app.quality.records.verify_step(
            uow, fh.actor(app, username), batch_id, code, password=fh.TEST_PASSWORD
        )
        return signoff


def _status(app: App, batch_id: str) -> dict[str, str]:
    with app.uow() as uow:
        batch = app.production.get(uow, batch_id)
        return {s.code: s.status for s in app.production.step_states(uow, batch)}


def _signoffs(app: App, batch_id: str) -> list[StepSignoff]:
    with app.uow() as uow:
        rows = app.production.signoffs(uow, batch_id)
        uow.session.expunge_all()
        return rows


def _release(app: App, batch_id: str, reason: str | None = None) -> None:
    with app.uow() as uow:
        app.quality.decide(
            uow,
            fh.actor(app, "qp"),
            batch_id,
            decision="release",
            password=fh.TEST_PASSWORD,
            meaning="QP certification",
            reason=reason,
        )


def _batch_at_gstt(app: App) -> str:
    """A made batch at St Thomas' (where the operator and the pharmacist work), steps pending."""
    for _ in range(6):
        batch_id = fh.make_batch(app, ready=False)
        if fh.batch(app, batch_id).site_id == fh.site_id(app, "GSTT-PH"):
            return batch_id
    pytest.fail("the planner never chose St Thomas' for a batch")


# a test asking for `gstt_batch` gets a copy of a world where that batch is already made
# (built once per backend and worker: tests/flow_helpers.py), every other test the seeded network
seeded = fh.seeded_or_world({"gstt_batch": _batch_at_gstt})


@pytest.fixture
def gstt_batch(request: pytest.FixtureRequest, seeded: App) -> str:
    """The id of `_batch_at_gstt`'s batch in the test's copy of its world."""
    batch_id: str = fh.built_data(request)
    return batch_id


def test_11_10_f_steps_out_of_sequence_refused(seeded: App, gstt_batch: str) -> None:
    batch_id = gstt_batch
    assert _status(seeded, batch_id) == {
        "line_clearance": "pending",
        "filament_loaded": "pending",
        "run_finished": "recorded",  # the machine's step, recorded by the platform
        "visual_inspection": "pending",
    }
    with pytest.raises(Refused) as caught:
        _sign(seeded, batch_id, "visual_inspection", entry={"units_rejected": 0})
    exc = caught.value
    assert exc.code == "out_of_sequence" and exc.field == "code"
    assert "line_clearance" in exc.message  # names the step that must come first
    fh.assert_refusal_audited(seeded, exc, "batch", batch_id)
    assert _signoffs(seeded, batch_id) == []  # nothing half-written

    # in order, each step is signed; the one after a critical entry waits for its verifier
    _sign(seeded, batch_id, "line_clearance")
    with pytest.raises(Refused) as skipped:
        _sign(seeded, batch_id, "visual_inspection", entry={"units_rejected": 0})
    assert skipped.value.code == "out_of_sequence" and "filament_loaded" in skipped.value.message
    _sign(seeded, batch_id, "filament_loaded", entry=FILAMENT)
    _verify(seeded, batch_id, "filament_loaded")
    _sign(seeded, batch_id, "visual_inspection", entry={"units_rejected": "0"})
    assert _status(seeded, batch_id) == {
        "line_clearance": "performed",
        "filament_loaded": "verified",
        "run_finished": "recorded",
        "visual_inspection": "performed",
    }
    with pytest.raises(Conflict) as again:
        _sign(seeded, batch_id, "line_clearance")
    assert again.value.code == "already_performed"


def test_11_10_f_out_of_sequence_allowed_with_open_deviation(seeded: App, gstt_batch: str) -> None:
    batch_id = gstt_batch
    with seeded.uow() as uow, pytest.raises(ValidationFailed) as unknown:
        seeded.quality.records.open_deviation(
            uow, fh.actor(seeded, "operator"), batch_id, description="x", step="no_such_step"
        )
    assert unknown.value.field == "step"
    with seeded.uow() as uow, pytest.raises(ValidationFailed) as blank:
        seeded.quality.records.open_deviation(
            uow, fh.actor(seeded, "operator"), batch_id, description="  ", step="line_clearance"
        )
    assert blank.value.field == "description"
    # a deviation that names another step does not let this one be skipped
    with seeded.uow() as uow:
        seeded.quality.records.open_deviation(
            uow, fh.actor(seeded, "operator"), batch_id, description="balance drift noted"
        )
    with pytest.raises(Refused) as still:
        _sign(seeded, batch_id, "filament_loaded", entry=FILAMENT)
    assert still.value.code == "out_of_sequence"

    with seeded.uow() as uow:
        dev = seeded.quality.records.open_deviation(
            uow,
            fh.actor(seeded, "operator"),
            batch_id,
            description="line clearance form mislaid; clearance checked by CCTV review",
            step="line_clearance",
        )
    signoff = _sign(seeded, batch_id, "filament_loaded", entry=FILAMENT)
    assert signoff.deviation_id == dev.id  # the record says why the order was broken
    with seeded.uow() as uow:
        rows = seeded.quality.records.trail(uow, seeded.production.get(uow, batch_id))
        assert any(r.entity_type == "deviation" and r.entity_id == dev.id for r in rows)
    _verify(seeded, batch_id, "filament_loaded")
    _sign(seeded, batch_id, "visual_inspection", entry={"units_rejected": 0})
    fh.review_audit_trail(seeded, batch_id)
    # the step named by the open deviation does not block release: the QP dispositions it
    _release(seeded, batch_id, reason="line clearance deviation reviewed; CCTV confirms")
    with seeded.uow() as uow:
        (closed,) = [d for d in seeded.quality.deviations(uow, batch_id) if d.id == dev.id]
        assert closed.status == "closed"
        (line,) = [
            s
            for s in seeded.production.step_states(uow, seeded.production.get(uow, batch_id))
            if s.code == "line_clearance"
        ]
        assert line.signoff is None  # skipped under the deviation, never back-filled


def test_annex11_s6_critical_entry_needs_second_person(seeded: App, gstt_batch: str) -> None:
    batch_id = gstt_batch
    _sign(seeded, batch_id, "line_clearance")
    _sign(seeded, batch_id, "filament_loaded", entry=FILAMENT)
    assert _status(seeded, batch_id)["filament_loaded"] == "awaiting_verification"

    with pytest.raises(Refused) as same:
        _verify(seeded, batch_id, "filament_loaded", username="operator")
    assert same.value.code == "same_person"
    fh.assert_refusal_audited(seeded, same.value, "batch", batch_id)

    with pytest.raises(Refused) as blocked:
        _sign(seeded, batch_id, "visual_inspection", entry={"units_rejected": 0})
    assert blocked.value.code == "unverified_entry" and "filament_loaded" in blocked.value.message

    # release is blocked while the entry waits (the audit trail reviewed, the QP assigned)
    fh.review_audit_trail(seeded, batch_id)
    with seeded.uow() as uow, pytest.raises(Refused) as not_ready:
        seeded.quality.decide(
            uow,
            fh.actor(seeded, "qp"),
            batch_id,
            decision="release",
            password=fh.TEST_PASSWORD,
            meaning="QP certification",
        )
    assert not_ready.value.code == "not_ready" and "not verified" in not_ready.value.message
    assert fh.batch(seeded, batch_id).status == "completed"

    # a verification is an e-signature: the password again
    with seeded.uow() as uow, pytest.raises(Unauthenticated):
        seeded.quality.records.verify_step(
            uow, fh.actor(seeded, "pharmacist"), batch_id, "filament_loaded", password="no"
        )
    verified = _verify(seeded, batch_id, "filament_loaded")
    assert verified.verified_by == fh.actor(seeded, "pharmacist").user_id
    assert verified.verified_meaning == "verified by"
    with pytest.raises(Conflict):
        _verify(seeded, batch_id, "filament_loaded", username="qp")
    with seeded.uow() as uow:
        sigs = seeded.signatures.signatures_for(uow, "batch_step", verified.id)
        assert [s.meaning for s in sigs] == ["performed by", "verified by"]
        assert [s.signer_name for s in sigs] == ["Olu Operator", "Phil Harmon"]
        assert all(seeded.quality.records.signature_checks(uow, batch_id).values())
    _sign(seeded, batch_id, "visual_inspection", entry={"units_rejected": 1})
    fh.review_audit_trail(seeded, batch_id)  # rows were added since the first review
    _release(seeded, batch_id)
    assert fh.batch(seeded, batch_id).status == "released"


def test_a_changed_entry_breaks_its_signatures(seeded: App, gstt_batch: str) -> None:
    batch_id = gstt_batch
    _sign(seeded, batch_id, "line_clearance")
    signoff = _sign(seeded, batch_id, "filament_loaded", entry=FILAMENT)
    _verify(seeded, batch_id, "filament_loaded")
    fh.edit(seeded, StepSignoff, signoff.id, entry={**FILAMENT, "mass_loaded_g": 99.0})
    with seeded.uow() as uow:
        checks = seeded.quality.records.signature_checks(uow, batch_id)
    assert list(checks.values()).count(False) == 2  # performer's and verifier's


def test_entries_and_signers_are_checked(seeded: App, gstt_batch: str) -> None:
    batch_id = gstt_batch
    _sign(seeded, batch_id, "line_clearance")
    for entry, field in (
        ({"filament_lot": "L1"}, "entry.mass_loaded_g"),
        ({"filament_lot": "L1", "mass_loaded_g": "twelve"}, "entry.mass_loaded_g"),
        ({"filament_lot": " ", "mass_loaded_g": 12}, "entry.filament_lot"),
        ({**FILAMENT, "colour": "white"}, "entry.colour"),
        ({"filament_lot": "L1", "mass_loaded_g": -1}, "entry.mass_loaded_g"),
    ):
        with pytest.raises(ValidationFailed) as bad:
            _sign(seeded, batch_id, "filament_loaded", entry=entry)
        assert bad.value.field == field, entry
    with pytest.raises(NotFound):
        _sign(seeded, batch_id, "no_such_step")
    with pytest.raises(Refused) as machine:
        _sign(seeded, batch_id, "run_finished")
    assert machine.value.code == "machine_step"
    with pytest.raises(Unauthenticated):
        _sign(seeded, batch_id, "filament_loaded", entry=FILAMENT, password="wrong-password")
    with pytest.raises(Forbidden) as elsewhere:  # an operator of another site
        _sign(seeded, batch_id, "filament_loaded", username="operator-man", entry=FILAMENT)
    assert elsewhere.value.code == "other_site"
    with pytest.raises(Forbidden):  # planners do not sign batch records
        _sign(seeded, batch_id, "filament_loaded", username="planner", entry=FILAMENT)
    refused = fh.refusals(seeded, "batch", batch_id)
    assert {r.new["code"] for r in refused if r.new} >= {
        "validation_failed",
        "not_found",
        "machine_step",
        "unauthenticated",
        "other_site",
        "forbidden",
    }
    assert [s.code for s in _signoffs(seeded, batch_id)] == ["line_clearance"]


def test_steps_close_with_the_batch(seeded: App, gstt_batch: str) -> None:
    batch_id = gstt_batch
    fh.reject(seeded, batch_id)
    with pytest.raises(Refused) as closed:
        _sign(seeded, batch_id, "line_clearance")
    assert closed.value.code == "batch_closed"


def test_master_file_steps_are_validated_and_old_approvals_stay_valid(seeded: App) -> None:
    qp = fh.actor(seeded, "qp")
    with seeded.uow() as uow:
        mf = seeded.master_files.effective_for_code(uow, HYDROCORTISONE)
        data = mf.content()
        assert data["record_steps"][1]["critical"] is True
        assert seeded.master_files.approval_is_valid(uow, mf)
    data.pop("version")
    bad_lists: list[Any] = [
        [{"code": "x", "title": "X", "manual": False}],  # not a step the platform records
        [{"code": "x", "title": "X", "critical": True}],  # critical without an entry
        [{"code": "x", "title": "X"}, {"code": "x", "title": "Y"}],  # repeated code
        [{"code": "Bad Code", "title": "X"}],
        [{"code": "x", "title": "X", "entry": {"mass": "stones"}}],
    ]
    for steps in bad_lists:
        with seeded.uow() as uow, pytest.raises(ValidationFailed) as bad:
            seeded.master_files.draft(uow, qp, {**data, "record_steps": steps})
        assert bad.value.field is not None and bad.value.field.startswith(
            "master_file.record_steps"
        ), steps
    # a master file without steps hashes as before steps existed: its approval stays valid
    data.pop("record_steps")
    with seeded.uow() as uow:
        draft = seeded.master_files.draft(uow, qp, data)
        assert "record_steps" not in draft.content()
        assert draft.record_steps is None


def test_steps_through_the_http_api(seeded: App, gstt_batch: str) -> None:
    from nearfab.web.server import create_web_app

    batch_id = gstt_batch
    client = TestClient(create_web_app(seeded))

    def auth(username: str) -> dict[str, str]:
        answer = client.post(
            "/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD}
        )
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    operator, pharmacist = auth("operator"), auth("pharmacist")
    sign = {"password": fh.TEST_PASSWORD, "username": "operator"}
    url = f"/api/v1/batches/{batch_id}"

    answer = client.post(f"{url}/steps/visual_inspection/sign", json=sign, headers=operator)
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "out_of_sequence"
    assert "line_clearance" in answer.json()["error"]["message"]

    answer = client.post(
        f"{url}/deviations",
        json={"description": "line clearance done on paper", "step": "line_clearance"},
        headers=operator,
    )
    assert answer.status_code == 201, answer.text
    dev_id = answer.json()["id"]
    answer = client.post(
        f"{url}/steps/filament_loaded/sign", json={**sign, "entry": FILAMENT}, headers=operator
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["deviation_id"] == dev_id

    answer = client.post(f"{url}/steps/filament_loaded/verify", json=sign, headers=operator)
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "same_person"
    answer = client.post(
        f"{url}/steps/filament_loaded/verify",
        json={"password": fh.TEST_PASSWORD, "username": "pharmacist"},
        headers=pharmacist,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["verified_by"] == "Phil Harmon"

    # a planner holds no batch-record permission: refused before the body is read
    answer = client.post(
        f"{url}/steps/visual_inspection/sign", json={**sign}, headers=auth("planner")
    )
    assert answer.status_code == 403

    view = client.get(f"{url}/steps", headers=operator).json()
    assert [(s["code"], s["status"]) for s in view["steps"]] == [
        ("line_clearance", "pending"),
        ("filament_loaded", "verified"),
        ("run_finished", "recorded"),
        ("visual_inspection", "pending"),
    ]
    assert view["steps"][0]["excused_by_deviation"] == dev_id
    performed = view["steps"][1]["performed"]
    assert performed["by"] == "Olu Operator" and performed["meaning"] == "performed by"
    assert performed["at"].endswith("+00:00") and performed["signature_valid"] is True
    assert {b["code"] for b in view["release_blockers"]} == {
        "not_ready",
        "audit_trail_not_reviewed",
    }
    with seeded.uow() as uow:
        sig_ids = {
            s.id
            for s in uow.session.scalars(
                select(Signature).where(Signature.record_type == "batch_step")
            )
        }
        assert len(sig_ids) == 2
        refused = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "refuse", AuditEntry.entity_id == batch_id
            )
        ).all()
        assert {r.new["code"] for r in refused if r.new} == {"out_of_sequence", "same_person"}


def test_refusals_are_domain_errors(seeded: App, gstt_batch: str) -> None:
    """Every refusal above is a DomainError with a field (the API answers it as JSON)."""
    batch_id = gstt_batch
    with pytest.raises(DomainError) as caught:
        _sign(seeded, batch_id, "filament_loaded", entry=FILAMENT)
    assert caught.value.to_dict()["field"] == "code"
