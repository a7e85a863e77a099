"""The demo does what the README promises: orders flow, the RTRT 'release' proposals are signed
by the QP autopilot, and the batch spoiled by the injected fault waits for a person."""

from __future__ import annotations

import random
from datetime import date

from sqlalchemy import select

from nearfab.bootstrap import App
from nearfab.demo import CAR_T, cell_therapy_bundle, prescription_bundle
from nearfab.demo_loop import DemoLoop
from nearfab.identity import Signature
from nearfab.quality import ReleaseReview

from . import flow_helpers as fh
from .conftest import TEST_PASSWORD
from .families.cell_therapy.collect import record_collection


def test_demo_loop_releases_good_batches_and_holds_the_faulty_one(seeded: App) -> None:
    loop = DemoLoop(seeded, qp_password=TEST_PASSWORD, seed=11)
    loop.inject_fault()
    for _ in range(6):
        loop.tick(submit=True)
    loop.tick(submit=False)

    with seeded.uow() as uow:
        reviews = list(uow.session.query(ReleaseReview).all())
        faulty = []
        for review in reviews:
            batch = seeded.production.get(uow, review.batch_id)
            machine = seeded.network.get_machine(uow, batch.machine_id)
            if machine.name == "GSTT printer A" and review.proposed_decision == "reject":
                faulty.append(review)
        auto = [r for r in reviews if r.status == "released"]
        sigs = [s for r in auto for s in seeded.signatures.signatures_for(uow, "batch", r.batch_id)]
        # every signature of those batches (steps, verifications, audit-trail reviews) is by an
        # account that says it is automated, never by a person's
        signers = {
            s.signer_name
            for s in uow.session.scalars(select(Signature))
            if s.record_type in ("batch_step", "audit_trail_review", "batch")
        }
    assert len(reviews) == 6
    # the clog under-fills tablets from the fifth on: rejected by the rule, left for the QP
    assert len(faulty) == 1 and faulty[0].status == "pending"
    # the fault is cleared after its first victim
    assert not [r for r in reviews if r.proposed_decision == "reject" and r is not faulty[0]]
    # RTRT 'release' proposals were signed by the autopilot QP, and nothing else was
    assert auto and all(r.proposed_decision == "release" for r in auto)
    assert all("autopilot" in s.meaning for s in sigs)
    assert {s.signer_name for s in sigs} == {"QP autopilot (demo only, not a person)"}
    assert signers == {"QP autopilot (demo only, not a person)", "Demo operator (automated)"}
    assert all(r.status == "pending" for r in reviews if r.proposed_decision != "release")


def test_demo_qualifies_monitoring_models_from_released_runs(seeded: App) -> None:
    loop = DemoLoop(seeded, qp_password=TEST_PASSWORD, seed=5)
    for _ in range(10):
        loop.tick(submit=True)
    loop.tick(submit=False)

    with seeded.uow() as uow:
        models = seeded.monitoring.active_models(uow)
        valid = [seeded.monitoring.approval_valid(uow, m) for m in models]
        approvers = {m.approved_by for m in models}
        trainers = {m.created_by for m in models}
    hydro = {m.kind for m in models if m.master_file_code == "MF-HC-PRINTLET"}
    assert hydro == {"spc", "mspc"}  # 3+ released hydrocortisone runs: both models in force
    assert all(valid) and approvers.isdisjoint(trainers)  # four eyes, signature intact
    assert all(len(m.training["runs"]) >= 3 for m in models)


def test_the_autopilot_leaves_a_cell_product_to_the_qp(seeded: App) -> None:
    """The demo's cell product (MF-CART-CMF) is proposed for release with sterility pending;
    the autopilot signs nothing of it: not its steps, not its audit-trail review, not its
    release."""
    with seeded.uow() as uow:
        bundle = cell_therapy_bundle(random.Random(1), today=seeded.clock.now().date())
        [order] = seeded.orders.submit(uow, fh.actor(seeded, "clinician"), bundle)
        order_id = order.id
    record_collection(seeded, order_id)  # consent, eligibility, the collection: then the run
    batch_id = fh.start(seeded, fh.ticketed_job(seeded, order_id))
    fh.finish(seeded, batch_id)
    DemoLoop(seeded, qp_password=TEST_PASSWORD, seed=1).autopilot()

    with seeded.uow() as uow:
        batch = seeded.production.get(uow, batch_id)
        assert batch.master_file_code == CAR_T
        (review,) = [r for r in seeded.quality.pending(uow) if r.batch_id == batch_id]
        assert review.proposed_decision == "release" and review.status == "pending"
        manual = [s for s in seeded.production.step_states(uow, batch) if s.manual]
        assert manual and all(s.signoff is None for s in manual)
        assert not seeded.quality.records.review_state(uow, batch).current
        assert seeded.signatures.signatures_for(uow, "batch", batch_id) == []


def _nhs_check_digit_by_hand(nine: str) -> int | None:
    # NHS Data Dictionary, "NHS number": weights 10..2 on the first nine digits, 11 minus the
    # remainder mod 11; 11 gives 0, 10 means no valid number. 943 476 591: 9×10 + 4×9 + 3×8 +
    # 4×7 + 7×6 + 6×5 + 5×4 + 9×3 + 1×2 = 299, 299 mod 11 = 2, 11 - 2 = 9 -> 9434765919
    check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(nine)) % 11
    return 0 if check == 11 else None if check == 10 else check


def test_demo_patients_carry_nhs_numbers_that_pass_the_check_digit() -> None:
    assert _nhs_check_digit_by_hand("943476591") == 9
    for seed in range(300):
        bundle = prescription_bundle(random.Random(seed), today=date(2026, 12, 7))
        (number,) = [
            i["value"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Patient"
            for i in e["resource"]["identifier"]
            if i["system"] == "https://fhir.nhs.uk/Id/nhs-number"
        ]
        assert len(number) == 10 and number.isascii() and number.isdigit(), number
        assert _nhs_check_digit_by_hand(number[:9]) == int(number[9]), number
