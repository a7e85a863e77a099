"""Before and at the collection (issue 15, the cell family's chain of identity), on SQLite and
PostgreSQL: the clinician's e-signed eligibility and consent, the collection recorded with the
patient's identifier and the collection bag's DIN, and production refusing a run before it.

The demo's cell product (MF-CART-CMF at GSTT-PH) and its clinician of GSTT-PH. Each refusal is
tested and found in the audit trail; nothing of a refused attempt is kept.

DINs from ICCBBA ST-001 v6.2.2: G1234 17 654321 has K = A (Appendix A.1), A9998 18 123456 has
K = N (§7.5.1.1). NHS numbers from the NHS Data Dictionary's modulus 11 example: 943 476 5919
is valid (check digit 9), 943 476 5918 is not.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.conftest import TEST_PASSWORD
from tests.families.cell_therapy.collect import patient_ref, sign_pre_collection

from nearfab.bootstrap import App
from nearfab.common.errors import DomainError, Forbidden, Refused, Unauthenticated, ValidationFailed
from nearfab.demo import cell_therapy_bundle
from nearfab.scheduling.models import CollectionAppointment, PreCollectionRecord

seeded = fh.seeded
DIN_G1234 = "=G12341765432100"
G1234_TYPED = "G1234 17 654321 [A]"
A9998_TYPED = "A9998 18 123456 N"
A9998_SCANNED = "=A99981812345600"
OTHER_NHS_NUMBER = "943 476 5919"  # valid, another patient's
BAD_NHS_NUMBER = "943 476 5918"  # wrong check digit


def _order(app: App, din: str | None = DIN_G1234, seed: int = 1) -> str:
    bundle = cell_therapy_bundle(random.Random(seed), today=app.clock.now().date(), din=din)
    with app.uow() as uow:
        [order] = app.orders.submit(uow, fh.actor(app, "clinician"), bundle)
        assert order.status == "designed"
        return order.id


def _collect(app: App, order_id: str, **kwargs: Any) -> CollectionAppointment:
    body: dict[str, Any] = {"identifier": G1234_TYPED, "patient": patient_ref(app, order_id)}
    body.update(kwargs)
    with app.uow() as uow:
        row = app.scheduling.record_collected(
            uow, fh.actor(app, str(body.pop("username", "clinician"))), order_id, **body
        )
        uow.session.expunge(row)
        return row


def _refused(app: App, order_id: str, code: str, field: str, **kwargs: Any) -> DomainError:
    with pytest.raises(DomainError) as caught:
        _collect(app, order_id, **kwargs)
    assert (caught.value.code, caught.value.field) == (code, field), caught.value.message
    fh.assert_refusal_audited(app, caught.value, "collection", order_id)
    with app.uow() as uow:  # nothing kept
        rows = uow.session.scalars(
            select(CollectionAppointment).where(CollectionAppointment.order_id == order_id)
        )
        assert all(r.collected_at is None for r in rows)
    return caught.value


def _pre(app: App, order_id: str, kind: str, username: str = "clinician", **kw: str) -> None:
    with app.uow() as uow:
        app.scheduling.record_pre_collection(
            uow,
            fh.actor(app, username),
            order_id,
            kind=kind,
            reference=kw.get("reference", "CAR-T consent form v3.1"),
            statement=kw.get("statement", f"{kind} confirmed"),
            password=kw.get("password", TEST_PASSWORD),
            username=username,
        )


def test_no_collection_before_eligibility_and_consent_are_signed(seeded: App) -> None:
    order = _order(seeded)
    _refused(seeded, order, "pre_collection_missing", "eligibility")
    _pre(seeded, order, "eligibility", reference="apheresis eligibility EA-117")
    _refused(seeded, order, "pre_collection_missing", "consent")
    _pre(seeded, order, "consent")
    row = _collect(seeded, order)
    assert row.chain_identifier == DIN_G1234 and row.collected_at == seeded.clock.now()
    with seeded.uow() as uow:
        view = seeded.scheduling.pre_collection_view(uow, fh.actor(seeded, "clinician"), order)
        records = uow.session.scalars(select(PreCollectionRecord)).all()
        signatures = {
            r.kind: seeded.signatures.signatures_for(uow, "pre_collection", r.id) for r in records
        }
    assert view["required"] == ["eligibility", "consent"] and view["missing"] == []
    assert [r["reference"] for r in view["records"]] == [
        "apheresis eligibility EA-117",
        "CAR-T consent form v3.1",
    ]
    # each record e-signed by the clinician (printed name, meaning), its signature valid
    for kind, rows in signatures.items():
        [sig] = rows
        assert sig.signer_name == "Dr Clare Nice" and kind in sig.meaning
    with seeded.uow() as uow:
        for r in records:
            [sig] = seeded.signatures.signatures_for(uow, "pre_collection", r.id)
            assert seeded.signatures.is_valid(sig, r.signed_content())
    # recorded once; a collection once; its date no longer moves
    with pytest.raises(Refused) as again:
        _pre(seeded, order, "consent")
    assert again.value.code == "already_recorded"
    fh.assert_refusal_audited(seeded, again.value, "pre_collection", order)
    with pytest.raises(Refused) as twice:
        _collect(seeded, order)
    assert twice.value.code == "already_collected"
    with pytest.raises(Refused) as moved, seeded.uow() as uow:
        seeded.scheduling.record_collection(
            uow,
            fh.actor(seeded, "planner"),
            order,
            seeded.clock.now() + timedelta(days=2),
            reason="slipped",
        )
    assert moved.value.code == "already_collected"


def test_who_may_sign_before_the_collection(seeded: App) -> None:
    order = _order(seeded)
    # the matrix: clinicians only (a pharmacist may record the collection, not sign consent)
    with pytest.raises(Forbidden):
        _pre(seeded, order, "consent", username="pharmacist")
    # a clinician of another site: refused by the site scope
    fh.create_user(seeded, "clinician-man", ["clinician"], "MAN-PH")
    with pytest.raises(Forbidden) as other:
        _pre(seeded, order, "consent", username="clinician-man")
    assert other.value.code == "other_site"
    # bad input: named, nothing kept
    for kw, field in (
        ({"reference": ""}, "reference"),
        ({"statement": "  "}, "statement"),
    ):
        with pytest.raises(ValidationFailed) as bad:
            _pre(seeded, order, "consent", **kw)
        assert bad.value.field == field
    with pytest.raises(ValidationFailed) as bad:
        _pre(seeded, order, "blood_group")
    assert bad.value.field == "kind" and "eligibility, consent" in bad.value.message
    # a wrong password signs nothing
    with pytest.raises(Unauthenticated):
        _pre(seeded, order, "consent", password="not-the-password-1")
    with seeded.uow() as uow:
        assert uow.session.scalars(select(PreCollectionRecord)).all() == []


def test_the_collection_checks_the_patient_and_the_din(seeded: App) -> None:
    order = _order(seeded)
    sign_pre_collection(seeded, order)
    # the patient: another pseudonym, another patient's NHS number, a mistyped one
    _refused(seeded, order, "wrong_patient", "patient", patient="PT-NOT-THIS-ONE")
    _refused(seeded, order, "wrong_patient", "patient", patient=OTHER_NHS_NUMBER)
    _refused(seeded, order, "validation_failed", "patient", patient=BAD_NHS_NUMBER)
    _refused(seeded, order, "validation_failed", "patient", patient="")
    # the DIN: another collection's, a wrong check character, none
    _refused(seeded, order, "identity_mismatch", "identifier", identifier=A9998_TYPED)
    _refused(
        seeded,
        order,
        "isbt128_invalid",
        "identifier.check_character",
        identifier="G1234 17 654321 [B]",
    )
    _refused(seeded, order, "validation_failed", "identifier", identifier=None)
    # not in the future; recorded by a pharmacist of the site is allowed (the matrix)
    _refused(
        seeded,
        order,
        "validation_failed",
        "collected_at",
        collected_at=seeded.clock.now() + timedelta(hours=1),
    )
    row = _collect(seeded, order, identifier=DIN_G1234, username="pharmacist")
    assert row.chain_identifier == DIN_G1234


def test_a_prescription_without_a_din_binds_the_collection_s(seeded: App) -> None:
    order = _order(seeded, din=None, seed=2)
    sign_pre_collection(seeded, order)
    row = _collect(seeded, order, identifier=A9998_TYPED)
    assert row.chain_identifier == A9998_SCANNED
    with seeded.uow() as uow:
        assert seeded.scheduling.chain_identifier(uow, order) == A9998_SCANNED


def test_no_run_before_the_collection(seeded: App) -> None:
    order = _order(seeded)
    job_id = fh.schedule(seeded, order)
    fh.issue_ticket(seeded, job_id)
    with pytest.raises(Refused) as caught:
        fh.start(seeded, job_id)
    assert (caught.value.code, caught.value.field) == ("collection_not_recorded", "collection")
    fh.assert_refusal_audited(seeded, caught.value, "job", job_id)
    assert fh.job(seeded, job_id).status == "ticket_issued"
    sign_pre_collection(seeded, order)
    _collect(seeded, order)
    batch_id = fh.start(seeded, job_id)
    assert fh.batch(seeded, batch_id).status == "in_progress"
    # after the run started, nothing more is recorded before a collection
    with pytest.raises(Refused) as late:
        _pre(seeded, order, "eligibility")
    assert late.value.code == "collection_closed"
    with pytest.raises(Refused) as closed:
        _collect(seeded, order)
    assert closed.value.code == "collection_closed"


def test_a_new_collection_after_a_failed_run_binds_its_own_din(seeded: App) -> None:
    order = _order(seeded)  # the prescription names G1234 17 654321
    job_id = fh.schedule(seeded, order)
    sign_pre_collection(seeded, order)
    _collect(seeded, order)
    fh.issue_ticket(seeded, job_id)
    batch_id = fh.start(seeded, job_id)
    seeded.clock.advance(2 * 86_400)  # type: ignore[attr-defined]
    fh.record(seeded, batch_id, DomainError("equipment fault on day 2", code="machine_fault"))
    with seeded.uow() as uow:
        seeded.scheduling.rebook_after_failure(
            uow, fh.actor(seeded, "planner"), order, reason="run failed"
        )
    with seeded.uow() as uow:  # the new run waits for the new collection
        [job] = [j for j in seeded.scheduling.jobs(uow) if j.order_id == order and j.id != job_id]
        new_job = job.id
    fh.issue_ticket(seeded, new_job)
    with pytest.raises(Refused) as waiting:
        fh.start(seeded, new_job)
    assert waiting.value.code == "collection_not_recorded"
    # the new donation has its own DIN (A9998 18 123456): bound, and the chain's from now on
    row = _collect(seeded, order, identifier=A9998_TYPED)
    assert row.chain_identifier == A9998_SCANNED
    with seeded.uow() as uow:
        assert seeded.scheduling.chain_identifier(uow, order) == A9998_SCANNED
    assert fh.batch(seeded, fh.start(seeded, new_job)).status == "in_progress"


def test_a_product_without_a_collection_runs_as_before(seeded: App) -> None:
    # solid_dose needs no collection: nothing to record, and its run starts
    batch_id = fh.make_batch(seeded)
    assert fh.batch(seeded, batch_id).status in ("completed", "in_progress")
    with pytest.raises(Refused) as caught, seeded.uow() as uow:
        seeded.scheduling.record_collected(
            uow,
            fh.actor(seeded, "pharmacist"),
            fh.batch(seeded, batch_id).order_id,
            identifier=None,
            patient="PT-X",
        )
    assert caught.value.code == "no_collection"


def test_another_sites_attempts_are_on_record(seeded: App) -> None:
    """A clinician or pharmacist of another site who tries to sign consent or record the
    collection (with the patient's identifier) is refused by the site scope, and the attempt
    is kept in the trail against the order at its own site (it was refused before the audited
    part, and left no trace); the refusal names no patient."""
    order = _order(seeded)
    fh.create_user(seeded, "clinician-man", ["clinician"], "MAN-PH")
    fh.create_user(seeded, "pharmacist-man", ["pharmacist"], "MAN-PH")
    with pytest.raises(Forbidden) as pre:
        _pre(seeded, order, "consent", username="clinician-man")
    assert pre.value.code == "other_site"
    fh.assert_refusal_audited(seeded, pre.value, "pre_collection", order)
    for who in ("clinician-man", "pharmacist-man"):
        with pytest.raises(Forbidden) as other:
            _collect(seeded, order, username=who, patient=OTHER_NHS_NUMBER)
        assert other.value.code == "other_site"
        assert "5919" not in other.value.message
        fh.assert_refusal_audited(seeded, other.value, "collection", order)
    with seeded.uow() as uow:
        assert uow.session.scalars(select(PreCollectionRecord)).all() == []
        rows = uow.session.scalars(
            select(CollectionAppointment).where(CollectionAppointment.order_id == order)
        )
        assert all(r.collected_at is None for r in rows)
