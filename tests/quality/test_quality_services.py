"""Quality use cases on a database (SQLite and PostgreSQL): real-time release testing proposals,
deviations, and the QP's e-signed release or rejection (spec point 10)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import Forbidden, Refused, Unauthenticated, ValidationFailed
from nearfab.custody import SerialUnit
from nearfab.identity import Signature
from nearfab.production import BatchRecord, Fault
from nearfab.quality import Deviation

seeded = fh.seeded  # the demo network, seeded once and copied for each test

RELEASE_MEANING = "QP certification: batch released"


def _decide(
    app: App,
    batch_id: str,
    *,
    username: str = "qp",
    decision: str = "release",
    password: str = fh.TEST_PASSWORD,
    reason: str | None = None,
    meaning: str = RELEASE_MEANING,
) -> None:
    with app.uow() as uow:
        app.quality.decide(
            uow,
            fh.actor(app, username),
            batch_id,
            decision=decision,
            password=password,
            meaning=meaning,
            reason=reason,
        )


def _state(app: App, batch_id: str) -> dict[str, object]:
    """Everything a QP decision changes, to show that a refused one changed nothing."""
    with app.uow() as uow:
        batch = app.production.get(uow, batch_id)
        review = app.quality.get_review(uow, batch_id)
        return {
            "batch": batch.status,
            "order": app.orders.get(uow, batch.order_id).status,
            "review": (review.status, review.decision, review.signature_id, review.decided_by),
            "packs": sorted(u.status for u in app.custody.units_of_batch(uow, batch_id)),
            "signatures": len(app.signatures.signatures_for(uow, "batch", batch_id)),
            "deviations": sorted(d.status for d in app.quality.deviations(uow, batch_id)),
            "steps": len(app.production.steps(uow, batch_id)),
        }


def _faulty_batch(app: App, fault: Fault) -> str:
    job_id = fh.ticketed_job(app)
    app.fleet.inject_fault(fh.machine(app, fh.job(app, job_id).machine_id), fault)
    batch_id = fh.start(app, job_id)
    fh.finish(app, batch_id)
    fh.prepare_release(app, batch_id)  # manual steps signed, audit trail reviewed
    return batch_id


def test_healthy_run_is_proposed_for_release_and_released_by_qp(seeded: App) -> None:
    batch_id = fh.make_batch(seeded)
    with seeded.uow() as uow:
        review = seeded.quality.get_review(uow, batch_id)
        assert seeded.quality.evaluate(uow, fh.actor(seeded, "qp"), batch_id).id == review.id
        assert seeded.quality.pending(uow)[0].id == review.id
        assert seeded.quality.deviations(uow, batch_id) == []
        assert seeded.quality.signature_valid(uow, review) is None  # nothing signed yet
    assert review.proposed_decision == "release"
    assert review.status == "pending"
    checks = {c["name"]: c["passed"] for c in review.proposal["checks"]}
    assert checks == {
        "ph_eur_2_9_40": True,
        "ph_eur_2_9_5": True,
        "unit_mass": True,
        "cpp": True,
        "deviations": True,
        "alarms": True,
    }
    assert review.proposal["content_uniformity"]["stage"] == 1
    assert review.proposal["mass_uniformity"]["n"] == 20

    _decide(seeded, batch_id)

    qp = fh.actor(seeded, "qp")
    batch = fh.batch(seeded, batch_id)
    assert batch.status == "released"
    assert fh.order_status(seeded, batch.order_id) == "released"
    with seeded.uow() as uow:
        review = seeded.quality.get_review(uow, batch_id)
        assert (review.status, review.decision, review.decided_by) == (
            "released",
            "release",
            qp.user_id,
        )
        assert review.decided_at is not None
        assert {u.status for u in seeded.custody.units_of_batch(uow, batch_id)} == {"released"}
        signatures = seeded.signatures.signatures_for(uow, "batch", batch_id)
        assert [s.id for s in signatures] == [review.signature_id]
        sig = signatures[0]
        assert (sig.meaning, sig.signer_id, sig.signer_name) == (
            RELEASE_MEANING,
            qp.user_id,
            "Quentin Parr (QP)",
        )
        assert len(sig.record_hash) == 64
        assert seeded.quality.signature_valid(uow, review) is True
        last = seeded.production.steps(uow, batch_id)[-1]
        assert last.name == "qp_release"
        assert last.detail == {"signature_id": sig.id, "meaning": RELEASE_MEANING, "reason": None}

    # the record's evidence is changed in the database after signing: the signature says so
    masses = list((batch.measurements or {})["unit_masses_mg"])
    masses[0] = round(masses[0] + 0.5, 4)
    fh.edit(seeded, BatchRecord, batch_id, measurements={"unit_masses_mg": masses})
    with seeded.uow() as uow:
        review = seeded.quality.get_review(uow, batch_id)
        assert seeded.quality.signature_valid(uow, review) is False

    for decision in ("release", "reject"):
        with pytest.raises(Refused) as caught:
            _decide(seeded, batch_id, decision=decision, reason="second thoughts")
        assert caught.value.code == "not_pending"
    assert fh.batch(seeded, batch_id).status == "released"


def test_cpp_excursion_needs_qp_review_and_opens_deviations(seeded: App) -> None:
    batch_id = _faulty_batch(seeded, Fault("humidity_excursion", 30.0))
    batch = fh.batch(seeded, batch_id)
    humidity = (batch.telemetry_summary or {})["chamber_humidity_pct"]
    assert humidity["min"] > 50.0  # 35 %RH + 30: above the 50 %RH limit throughout
    assert humidity["outside"] == humidity["n"]
    assert len(batch.cpp_excursions or []) == 1
    assert (batch.cpp_excursions or [""])[0].startswith("chamber_humidity_pct:")

    with seeded.uow() as uow:
        review = seeded.quality.get_review(uow, batch_id)
        deviations = seeded.quality.deviations(uow, batch_id)
    assert review.proposed_decision == "needs_qp_review"
    checks = {c["name"]: c["passed"] for c in review.proposal["checks"]}
    assert checks["cpp"] is False and checks["deviations"] is False
    assert checks["ph_eur_2_9_40"] and checks["ph_eur_2_9_5"] and checks["unit_mass"]
    assert any("chamber_humidity_pct" in r for r in review.proposal["reasons"])
    assert [(d.kind, d.status) for d in deviations] == [("cpp_excursion", "open")]
    assert deviations[0].description == (batch.cpp_excursions or [""])[0]
    assert deviations[0].opened_by == "system:rtrt"

    before = _state(seeded, batch_id)
    for reason in (None, "   "):
        with pytest.raises(ValidationFailed) as caught:
            _decide(seeded, batch_id, reason=reason)
        assert caught.value.field == "reason"
        assert "needs_qp_review" in caught.value.message
    assert _state(seeded, batch_id) == before

    why = "humidity logger mis-calibrated; room RH 38 % on the calibrated probe"
    _decide(seeded, batch_id, reason=why)
    assert fh.batch(seeded, batch_id).status == "released"
    with seeded.uow() as uow:
        review = seeded.quality.get_review(uow, batch_id)
        assert review.reason == why
        assert seeded.quality.signature_valid(uow, review) is True
        closed = seeded.quality.deviations(uow, batch_id)
    assert [d.status for d in closed] == ["closed"]
    assert why in (closed[0].closure_note or "")
    assert closed[0].closed_by == fh.actor(seeded, "qp").user_id


def test_nozzle_clog_batch_cannot_be_released_without_reason(seeded: App) -> None:
    batch_id = _faulty_batch(seeded, Fault("nozzle_clog", 0.3, from_unit=4))
    with seeded.uow() as uow:
        assert seeded.quality.get_review(uow, batch_id).proposed_decision == "reject"
    with pytest.raises(ValidationFailed) as caught:
        _decide(seeded, batch_id)
    assert caught.value.field == "reason"
    assert "proposed reject" in caught.value.message
    assert fh.batch(seeded, batch_id).status == "completed"


def test_qp_decision_is_refused_for_the_wrong_person_password_or_reason(seeded: App) -> None:
    running = fh.start(seeded, fh.ticketed_job(seeded))
    with seeded.uow() as uow, pytest.raises(Refused) as not_made:
        seeded.quality.evaluate(uow, fh.actor(seeded, "qp"), running)
    assert not_made.value.code == "batch_not_completed"

    batch_id = fh.make_batch(seeded)
    before = _state(seeded, batch_id)
    assert before["review"] == ("pending", None, None, None)
    assert before["packs"] == ["quarantine"]

    for username in ("pharmacist", "operator", "auditor"):
        with pytest.raises(Forbidden):
            _decide(seeded, batch_id, username=username)
    with pytest.raises(Unauthenticated):
        _decide(seeded, batch_id, password="not-the-qp-password")
    with pytest.raises(ValidationFailed) as caught:
        _decide(seeded, batch_id, decision="approve")
    assert caught.value.field == "decision"
    for reason in (None, "", "  \t"):
        with pytest.raises(ValidationFailed) as caught:
            _decide(
                seeded, batch_id, decision="reject", reason=reason, meaning="QP rejection of batch"
            )
        assert caught.value.field == "reason"
    with pytest.raises(ValidationFailed) as caught:
        _decide(seeded, batch_id, meaning="  ")
    assert caught.value.field == "meaning"
    assert _state(seeded, batch_id) == before
    with seeded.uow() as uow:
        assert (
            uow.session.scalars(select(Signature).where(Signature.record_type == "batch")).all()
            == []
        )

    fh.reject(seeded, batch_id, reason="visual inspection: layer delamination")
    batch = fh.batch(seeded, batch_id)
    assert batch.status == "rejected"
    assert fh.order_status(seeded, batch.order_id) == "rejected"
    with seeded.uow() as uow:
        review = seeded.quality.get_review(uow, batch_id)
        assert (review.status, review.reason) == (
            "rejected",
            "visual inspection: layer delamination",
        )
        assert seeded.quality.signature_valid(uow, review) is True
        assert {
            u.status
            for u in uow.session.scalars(select(SerialUnit).where(SerialUnit.batch_id == batch_id))
        } == {"rejected"}
        assert uow.session.scalars(select(Deviation)).all() == []


def test_release_signature_covers_machine_events_telemetry_and_material(seeded: App) -> None:
    batch_id = fh.make_batch(seeded)
    _decide(seeded, batch_id)
    batch = fh.batch(seeded, batch_id)
    telemetry = [list(r) for r in batch.telemetry or []]
    telemetry[0][2] = 999.0
    tampered = {
        "machine_events": [e for e in batch.machine_events or [] if e != "ticket verified"],
        "telemetry": telemetry,
        "material_used_g": batch.material_used_g / 2,
        "material_lot_number": "HC-FIL-2.5-OTHER-001",
        "operator_id": fh.actor(seeded, "operator-man").user_id,
    }
    for column, value in tampered.items():
        original = getattr(batch, column)
        fh.edit(seeded, BatchRecord, batch_id, **{column: value})
        with seeded.uow() as uow:
            review = seeded.quality.get_review(uow, batch_id)
            assert seeded.quality.signature_valid(uow, review) is False, column
        fh.edit(seeded, BatchRecord, batch_id, **{column: original})
        with seeded.uow() as uow:
            review = seeded.quality.get_review(uow, batch_id)
            assert seeded.quality.signature_valid(uow, review) is True, column
