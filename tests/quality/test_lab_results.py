"""A batch's laboratory results (quality/labresults.py), on SQLite and PostgreSQL, through the
services, with the demo's cell product (tests/quality/lab_helpers.py).

The QC laboratory's results are entered, e-signed by the analyst, as rows of their own (the
batch record's measurement document is never rewritten); the family validates keys and values
(a refusal names `lab_results.<key>`); the QP's review is evaluated again with the results in
force, so identity/purity, endotoxin and mycoplasma go from "no result" to pass or fail; a
correction is a new signed row with its reason; after the QP's decision the results are closed
and a result pending at release goes through its follow-up (one source of it).

Expected values by hand (lab_helpers.py gives the specifications and the design):
- endotoxin 0.5 EU/mL × 70 mL ÷ 70 kg = 0.5 EU/kg ≤ 5 EU/kg (Ph. Eur. 5.1.10, K) -> pass;
  6 EU/mL × 70 mL ÷ 70 kg = 6 EU/kg > 5 EU/kg -> fail;
- CD3+ 0.92 ≥ 0.80 -> pass ("92.0 % ≥ 80.0 %"); 0.75 < 0.80 -> fail;
- mycoplasma "negative" -> pass, "positive" -> fail (Ph. Eur. 2.6.7).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.quality import lab_helpers as lab
from tests.quality.release_helpers import user

from nearfab.bootstrap import App
from nearfab.common.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Refused,
    Unauthenticated,
    ValidationFailed,
)
from nearfab.identity import AuditEntry
from nearfab.quality.labresults import LabResults
from nearfab.quality.models import LabResult

# a test asking for `batch`: a copy of `lab.lab_batch`'s world (built once per backend and worker)
seeded = fh.seeded_or_world({"batch": lab.lab_batch})

GOOD = {"markers": {"CD3+": 0.92}, "endotoxin_eu_per_ml": 0.5, "mycoplasma": "negative"}


@pytest.fixture
def batch(seeded: App, request: pytest.FixtureRequest) -> str:
    """`lab.lab_batch`'s cell batch, on the test's own copy of its world."""
    batch_id: str = fh.built_data(request)
    return batch_id


def _rows(app: App, batch_id: str) -> list[LabResult]:
    with app.uow() as uow:
        rows = app.quality.lab_results.rows(uow, batch_id)
        for row in rows:
            uow.session.expunge(row)
        return rows


def _audit(app: App, entity_type: str) -> list[AuditEntry]:
    with app.uow() as uow:
        rows = list(
            uow.session.scalars(
                select(AuditEntry)
                .where(AuditEntry.entity_type == entity_type)
                .order_by(AuditEntry.id)
            )
        )
        for row in rows:
            uow.session.expunge(row)
        return rows


def test_lab_results_turn_the_laboratory_tests_from_not_evaluated_to_pass(
    seeded: App, batch: str
) -> None:
    before = lab.checks(seeded, batch)
    for name in ("identity_purity", "endotoxin", "mycoplasma"):
        assert before[name][0] is None, (name, before[name])
    assert lab.review(seeded, batch)["proposed_decision"] == "needs_qp_review"
    measurements = fh.batch(seeded, batch).measurements

    entry = lab.enter(seeded, "pharmacist", batch, GOOD)

    after = lab.checks(seeded, batch)
    assert after["identity_purity"] == (True, "identity and purity: CD3+ 92.0% ≥ 80.0%")
    passed, detail = after["endotoxin"]
    assert passed is True
    assert "0.5 EU/mL × 70 mL ÷ 70 kg = 0.500 EU/kg ≤ 5 EU/kg" in detail
    assert after["mycoplasma"] == (True, "mycoplasma: negative")
    # sterility was not entered: still pending, followed up after release
    assert after["sterility"][0] is None
    assert lab.review(seeded, batch) == {
        "proposed_decision": "release",
        "pending": ["sterility"],
        "status": "pending",
    }
    # stored as rows of their own; the signed batch record is not rewritten
    assert fh.batch(seeded, batch).measurements == measurements
    rows = _rows(seeded, batch)
    assert {(r.key, r.version, r.entry_id) for r in rows} == {
        ("endotoxin_eu_per_ml", 1, entry),
        ("markers", 1, entry),
        ("mycoplasma", 1, entry),
    }
    assert {r.entered_by_name for r in rows} == {"Phil Harmon"}
    assert {r.method for r in rows} == {lab.METHOD}
    with seeded.uow() as uow:
        view = seeded.quality.lab_results.view(uow, seeded.production.get(uow, batch))
    assert view["in_force"] == GOOD
    assert all(r["signature_valid"] and r["in_force"] for r in view["results"])
    # audited in the same transaction: one row per result, and the review evaluated again
    created = [a for a in _audit(seeded, "lab_result") if a.action == "create"]
    assert sorted((a.new or {})["key"] for a in created) == sorted(GOOD)
    updates = [a for a in _audit(seeded, "release_review") if a.action == "update"]
    assert updates and (updates[-1].new or {})["proposed_decision"] == "release"
    assert (updates[-1].old or {})["proposed_decision"] == "needs_qp_review"


def test_results_entered_while_the_batch_is_made_are_evaluated_at_its_end(seeded: App) -> None:
    lab.with_lab_tests(seeded)
    batch = lab.cell_batch(seeded, finish=False)
    assert fh.batch(seeded, batch).status == "in_progress"
    lab.enter(seeded, "pharmacist", batch, {"mycoplasma": "negative"})
    with seeded.uow() as uow:
        assert seeded.quality.review_for(uow, batch) is None  # nothing evaluated yet
    fh.finish(seeded, batch)
    assert lab.checks(seeded, batch)["mycoplasma"] == (True, "mycoplasma: negative")
    assert lab.checks(seeded, batch)["endotoxin"][0] is None  # not entered


def test_results_out_of_specification_fail_their_tests(seeded: App, batch: str) -> None:
    lab.enter(
        seeded,
        "pharmacist",
        batch,
        {"markers": {"CD3+": 0.75}, "endotoxin_eu_per_ml": 6, "mycoplasma": "positive"},
    )
    after = lab.checks(seeded, batch)
    assert after["identity_purity"][0] is False and "CD3+ 75.0%" in after["identity_purity"][1]
    passed, detail = after["endotoxin"]
    assert passed is False and "= 6.000 EU/kg > 5 EU/kg" in detail
    assert after["mycoplasma"] == (False, "mycoplasma: positive")
    assert lab.review(seeded, batch)["proposed_decision"] == "reject"


def test_the_laboratory_count_replaces_the_in_process_one(seeded: App, batch: str) -> None:
    # the rule lets dose and viability come from in-process data only while the laboratory
    # has not reported: 1.3e8 viable cells ÷ 70 kg = 1.857e6 cells/kg, 92.9 % of 2e6
    lab.enter(seeded, "pharmacist", batch, {"viable_cells": 1.3e8, "viability": 0.65})
    after = lab.checks(seeded, batch)
    passed, detail = after["viable_cell_dose"]
    assert passed is True and "in-process" not in detail and "92.9 %" in detail
    # 0.65 < 0.70 minimum
    assert after["viability"] == (False, "viability: 65.0% < 70.0% minimum")


def test_a_correction_supersedes_with_its_reason_and_keeps_both(seeded: App, batch: str) -> None:
    first = lab.enter(seeded, "pharmacist", batch, {"endotoxin_eu_per_ml": 6})
    assert lab.checks(seeded, batch)["endotoxin"][0] is False
    with pytest.raises(Refused) as again:
        lab.enter(seeded, "pharmacist", batch, {"endotoxin_eu_per_ml": 0.5})
    assert again.value.code == "result_already_entered" and again.value.field == "reason"
    fh.assert_refusal_audited(seeded, again.value, "batch", batch)
    with pytest.raises(Refused) as same:
        lab.enter(seeded, "pharmacist", batch, {"endotoxin_eu_per_ml": 6}, reason="typo")
    assert same.value.code == "nothing_to_correct"

    fixed = lab.enter(
        seeded, "qp", batch, {"endotoxin_eu_per_ml": 0.5}, reason="sample diluted 1:10 twice"
    )
    rows = _rows(seeded, batch)
    assert [(r.entry_id, r.version, r.value) for r in rows] == [(first, 1, 6), (fixed, 2, 0.5)]
    assert rows[1].supersedes_id == rows[0].id and rows[1].reason == "sample diluted 1:10 twice"
    assert rows[1].entered_by_name == "Quentin Parr (QP)"
    assert lab.checks(seeded, batch)["endotoxin"][0] is True
    with seeded.uow() as uow:
        view = seeded.quality.lab_results.view(uow, seeded.production.get(uow, batch))
    assert [r["in_force"] for r in view["results"]] == [False, True]
    assert all(r["signature_valid"] for r in view["results"])
    audited = [a for a in _audit(seeded, "lab_result") if a.action == "create"]
    assert [(a.new or {})["value"] for a in audited] == [6, 0.5]
    assert audited[1].reason == "sample diluted 1:10 twice"
    assert (audited[1].old or {})["value"] == 6


@pytest.mark.parametrize(
    ("results", "field"),
    [
        ({"endotoxin": 0.5}, "lab_results.endotoxin"),
        ({"viability": 1.5}, "lab_results.viability"),
        ({"viable_cells": -1}, "lab_results.viable_cells"),
        ({"endotoxin_eu_per_ml": "low"}, "lab_results.endotoxin_eu_per_ml"),
        ({"mycoplasma": "pending"}, "lab_results.mycoplasma"),
        ({"sterility": "clear"}, "lab_results.sterility"),
        ({"markers": {"CD3+": "high"}}, "lab_results.markers.CD3+"),
        ({"markers": {"CD3+": 1.2}}, "lab_results.markers.CD3+"),
        ({"markers": []}, "lab_results.markers"),
        ({"markers": {"": 0.9}}, "lab_results.markers"),
        ({"markers": {f"CD{n}+": 0.5 for n in range(41)}}, "lab_results.markers"),
    ],
)
def test_a_bad_key_or_value_is_refused_naming_the_field(
    seeded: App, batch: str, results: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        lab.enter(seeded, "pharmacist", batch, {"mycoplasma": "negative", **results})
    assert refused.value.field == field, refused.value.message
    assert _rows(seeded, batch) == []  # nothing half-written: the good result neither
    fh.assert_refusal_audited(seeded, refused.value, "batch", batch)


def test_an_entry_needs_a_result_and_its_method(seeded: App, batch: str) -> None:
    with pytest.raises(ValidationFailed) as empty:
        lab.enter(seeded, "pharmacist", batch, {})
    assert empty.value.field == "lab_results" and "endotoxin_eu_per_ml" in empty.value.message
    with pytest.raises(ValidationFailed) as refused:
        lab.enter(seeded, "pharmacist", batch, GOOD, method="  ")
    assert refused.value.field == "method"
    assert _rows(seeded, batch) == []


def test_who_may_enter_each_role_from_each_site_and_without_a_signature(
    seeded: App, batch: str
) -> None:
    site, other = "GSTT-PH", "MAN-PH"
    assert fh.batch(seeded, batch).site_id == fh.site_id(seeded, site)
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
            lab.enter(seeded, username, batch, GOOD)
        assert refused.value.code == expected, username
    audited = {e.actor_name for e in fh.refusals(seeded, "batch", batch)}
    assert {u.title() for u in attackers} <= audited
    # the right person without the right signature: nothing kept
    with pytest.raises(Unauthenticated):
        lab.enter(seeded, "pharmacist", batch, GOOD, password="not my password")
    assert _rows(seeded, batch) == []
    assert lab.checks(seeded, batch)["endotoxin"][0] is None
    # QA of the batch's own site may; so may a QP of the control site
    lab.enter(seeded, "pharmacist", batch, {"mycoplasma": "negative"})
    lab.enter(seeded, "qp", batch, {"endotoxin_eu_per_ml": 0.5})
    assert {r.key for r in _rows(seeded, batch)} == {"mycoplasma", "endotoxin_eu_per_ml"}


def test_sterility_entered_before_release_is_not_pending_and_closes_with_the_decision(
    seeded: App, batch: str
) -> None:
    lab.enter(seeded, "pharmacist", batch, {**GOOD, "sterility": "negative"})
    assert lab.checks(seeded, batch)["sterility"] == (True, "sterility: negative")
    assert lab.review(seeded, batch) == {
        "proposed_decision": "release",
        "pending": [],
        "status": "pending",
    }
    fh.release(seeded, batch)
    with seeded.uow() as uow:
        assert seeded.quality.followups.for_batch(uow, batch) == []
    # released: the laboratory's results are closed, and no follow-up exists to take one
    with pytest.raises(Refused) as closed:
        lab.enter(seeded, "pharmacist", batch, {"sterility": "positive"}, reason="re-read")
    assert closed.value.code == "batch_dispositioned"
    qa = fh.actor(seeded, "pharmacist")
    with seeded.uow() as uow, pytest.raises(NotFound):
        seeded.quality.followups.enter_result(
            uow,
            qa,
            batch,
            "sterility",
            outcome="fail",
            detail="turbid",
            password=fh.TEST_PASSWORD,
            meaning="result entered by",
            username="pharmacist",
        )


def test_sterility_pending_at_release_goes_through_its_follow_up_only(
    seeded: App, batch: str
) -> None:
    lab.enter(seeded, "pharmacist", batch, GOOD)
    fh.release(seeded, batch)
    with seeded.uow() as uow:
        (fu,) = seeded.quality.followups.for_batch(uow, batch)
        assert (fu.test, fu.status) == ("sterility", "pending")
    with pytest.raises(Refused) as closed:
        lab.enter(seeded, "pharmacist", batch, {"sterility": "negative"})
    assert closed.value.code == "batch_dispositioned" and "follow-up" in closed.value.message
    fh.assert_refusal_audited(seeded, closed.value, "batch", batch)
    qa = fh.actor(seeded, "pharmacist")
    with seeded.uow() as uow:
        seeded.quality.followups.enter_result(
            uow,
            qa,
            batch,
            "sterility",
            outcome="pass",
            detail="no growth at 14 days",
            password=fh.TEST_PASSWORD,
            meaning="result entered by",
            username="pharmacist",
        )
    with seeded.uow() as uow:
        (fu,) = seeded.quality.followups.for_batch(uow, batch)
        assert fu.status == "passed"
    assert "sterility" not in {r.key for r in _rows(seeded, batch)}


def test_the_qps_signature_is_bound_to_the_results_in_force(seeded: App, batch: str) -> None:
    lab.enter(seeded, "pharmacist", batch, GOOD)
    fh.release(seeded, batch)
    with seeded.uow() as uow:
        review = seeded.quality.get_review(uow, batch)
        assert seeded.quality.signature_valid(uow, review) is True
    (row,) = [r for r in _rows(seeded, batch) if r.key == "endotoxin_eu_per_ml"]
    fh.edit(seeded, LabResult, row.id, value=0.05)  # changed behind the services' back
    with seeded.uow() as uow:
        review = seeded.quality.get_review(uow, batch)
        assert seeded.quality.signature_valid(uow, review) is False
        assert not seeded.quality.lab_results.row_valid(uow, uow.session.get(LabResult, row.id))


def test_a_decision_on_the_proposal_shown_before_new_results_is_refused(
    seeded: App, batch: str
) -> None:
    fh.prepare_release(seeded, batch)
    with seeded.uow() as uow:
        b = seeded.production.get(uow, batch)
        shown = seeded.quality.shown_hash(uow, b, seeded.quality.get_review(uow, batch))
    lab.enter(seeded, "pharmacist", batch, GOOD)
    fh.prepare_release(seeded, batch)  # the new rows make the audit-trail review stale
    qp = fh.actor(seeded, "qp")
    with seeded.uow() as uow, pytest.raises(Refused) as stale:
        seeded.quality.decide(
            uow,
            qp,
            batch,
            decision="release",
            password=fh.TEST_PASSWORD,
            meaning="QP release",
            record_hash=shown,
            username="qp",
        )
    assert stale.value.code == "record_changed" and stale.value.field == "record_hash"


def test_the_audit_trail_review_goes_stale_with_a_new_result(seeded: App, batch: str) -> None:
    fh.prepare_release(seeded, batch)
    lab.enter(seeded, "pharmacist", batch, {"mycoplasma": "negative"})
    with seeded.uow() as uow:
        state = seeded.quality.records.review_state(uow, seeded.production.get(uow, batch))
    assert not state.current and state.rows_since >= 2  # the result and the review's update


def test_a_product_without_laboratory_results_refuses_them(seeded: App) -> None:
    solid = fh.make_batch(seeded, ready=False)
    with pytest.raises(ValidationFailed) as refused:
        lab.enter(seeded, "pharmacist", solid, {"assay": 99.0})
    assert refused.value.field == "lab_results"
    with seeded.uow() as uow:
        n = uow.session.scalar(select(func.count()).select_from(LabResult))
    assert n == 0


def test_two_entries_of_a_result_at_once_one_wins_and_the_other_is_on_record(
    seeded: App, batch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = LabResults.in_force_rows
    raced = {"done": False}

    def read_before_the_other_lands(self: LabResults, uow: Any, batch_id: str) -> Any:
        if not raced["done"]:  # the other analyst's whole entry lands after this read
            raced["done"] = True
            lab.enter(seeded, "qp", batch_id, {"endotoxin_eu_per_ml": 0.5})
            return {}
        return real(self, uow, batch_id)

    monkeypatch.setattr(LabResults, "in_force_rows", read_before_the_other_lands)
    with pytest.raises(Conflict) as caught:
        lab.enter(seeded, "pharmacist", batch, {"endotoxin_eu_per_ml": 6})
    assert caught.value.code == "concurrent_change"
    monkeypatch.undo()
    rows = _rows(seeded, batch)
    assert [(r.version, r.value, r.entered_by_name) for r in rows] == [
        (1, 0.5, "Quentin Parr (QP)")
    ]
    (row,) = [r for r in fh.refusals(seeded, "batch", batch) if r.actor_name == "Phil Harmon"]
    assert row.new == {"code": "concurrent_change", "field": None}
    assert lab.checks(seeded, batch)["endotoxin"][0] is True  # the winner's 0.5 EU/kg
