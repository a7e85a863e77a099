"""Issue 13 item 3: the worklist (nearfab/worklist.py), on SQLite and PostgreSQL.

Expectations are built by hand from the demo master file's steps (nearfab/demo.py
RECORD_STEPS): 1 line_clearance, 2 filament_loaded (critical: a second person verifies it),
3 run_finished (the machine), 4 visual_inspection. So steps 1 and 2 are done "before the
machine starts", step 4 "after the run"; step 4 waits for the machine's step 3 and for the
verification of step 2; the performer of step 2 never sees it to verify, the site's
pharmacist and the network's QP do; an operator of another site sees none of it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import Forbidden
from nearfab.worklist import worklist_view

BEFORE, AFTER = "before the machine starts", "after the run"
FILAMENT = {"filament_lot": "text", "mass_loaded_g": "g"}


def _at_gstt(app: App, *, run: bool) -> str:
    """A batch made at St Thomas' (the planner chooses the site): run by the machine or only
    started (in progress)."""
    for _ in range(6):
        job_id = fh.ticketed_job(app)
        if fh.job(app, job_id).site_id != fh.site_id(app, "GSTT-PH"):
            continue
        batch_id = fh.start(app, job_id)
        if run:
            fh.finish(app, batch_id)
        return batch_id
    pytest.fail("the planner never chose St Thomas' for a batch")


def _run_at_gstt(app: App) -> str:
    return _at_gstt(app, run=True)


def _started_at_gstt(app: App) -> str:
    return _at_gstt(app, run=False)


# a test asking for `run_at_gstt` (`started_at_gstt`) gets a copy of a world where that batch
# is already made (started), built once per backend and worker (tests/flow_helpers.py); every
# other test a copy of the seeded network
seeded = fh.seeded_or_world({"run_at_gstt": _run_at_gstt, "started_at_gstt": _started_at_gstt})


@pytest.fixture
def run_at_gstt(request: pytest.FixtureRequest, seeded: App) -> str:
    """The id of `_at_gstt(run=True)`'s batch in the test's copy of its world."""
    batch_id: str = fh.built_data(request)
    return batch_id


@pytest.fixture
def started_at_gstt(request: pytest.FixtureRequest, seeded: App) -> str:
    """The id of `_at_gstt(run=False)`'s batch in the test's copy of its world."""
    batch_id: str = fh.built_data(request)
    return batch_id


def _work(app: App, username: str) -> dict[str, Any]:
    with app.uow() as uow:
        return worklist_view(app, uow, fh.actor(app, username))


def _mine(items: list[dict[str, Any]], batch_id: str) -> list[tuple[Any, ...]]:
    """The (code, phase or performer) of the items about `batch_id`."""
    return [
        (i["code"], i.get("phase", i.get("performed_by")))
        for i in items
        if i["batch_id"] == batch_id
    ]


def _sign(app: App, username: str, batch_id: str, code: str, **entry: Any) -> None:
    with app.uow() as uow:
        app.quality.records.sign_step(
            uow, fh.actor(app, username), batch_id, code, entry=entry, password=fh.TEST_PASSWORD
        )


def _verify(app: App, username: str, batch_id: str, code: str) -> None:
    with app.uow() as uow:
        app.quality.records.verify_step(
            uow, fh.actor(app, username), batch_id, code, password=fh.TEST_PASSWORD
        )


def test_the_next_step_due_follows_each_signature_and_verification(
    seeded: App, run_at_gstt: str
) -> None:
    batch_id = run_at_gstt

    work = _work(seeded, "operator")
    assert work["may_sign"] and work["may_verify"] and not work["may_review"]
    assert work["sites"] == ["GSTT-PH"] and not work["network"]
    assert _mine(work["steps"], batch_id) == [("line_clearance", BEFORE)]
    (due,) = [s for s in work["steps"] if s["batch_id"] == batch_id]
    assert (due["position"], due["critical"], due["entry_fields"]) == (1, False, {})
    assert due["site"] == "GSTT-PH"
    assert _mine(_work(seeded, "pharmacist")["steps"], batch_id) == [("line_clearance", BEFORE)]

    _sign(seeded, "operator", batch_id, "line_clearance")
    (due,) = [s for s in _work(seeded, "operator")["steps"] if s["batch_id"] == batch_id]
    assert (due["code"], due["phase"], due["critical"]) == ("filament_loaded", BEFORE, True)
    assert due["entry_fields"] == FILAMENT

    _sign(seeded, "operator", batch_id, "filament_loaded", filament_lot="L-1", mass_loaded_g="12.5")
    work = _work(seeded, "operator")
    # nothing due: step 4 waits for the second person; never offered to its performer
    assert _mine(work["steps"], batch_id) == []
    (wait,) = [w for w in work["waiting"] if w["batch_id"] == batch_id]
    assert wait["code"] == "visual_inspection" and wait["phase"] == AFTER
    assert "step 2" in wait["reason"] and "second person" in wait["reason"]
    assert _mine(work["verifications"], batch_id) == []
    # the site's pharmacist and the network's QP are offered the verification, with the entry
    for second in ("pharmacist", "qp"):
        items = _work(seeded, second)["verifications"]
        assert _mine(items, batch_id) == [("filament_loaded", "Olu Operator")], second
    (item,) = [v for v in _work(seeded, "pharmacist")["verifications"]]
    assert item["entry"] == {"filament_lot": "L-1", "mass_loaded_g": 12.5}

    _verify(seeded, "pharmacist", batch_id, "filament_loaded")
    assert _mine(_work(seeded, "pharmacist")["verifications"], batch_id) == []
    work = _work(seeded, "operator")
    assert _mine(work["steps"], batch_id) == [("visual_inspection", AFTER)]
    assert [w for w in work["waiting"] if w["batch_id"] == batch_id] == []

    _sign(seeded, "operator", batch_id, "visual_inspection", units_rejected="0")
    work = _work(seeded, "operator")
    assert _mine(work["steps"], batch_id) == [] and _mine(work["waiting"], batch_id) == []


def test_a_step_after_the_run_waits_for_the_machine(seeded: App, started_at_gstt: str) -> None:
    batch_id = started_at_gstt  # started: the machine has not recorded step 3
    assert fh.batch(seeded, batch_id).status == "in_progress"
    assert _mine(_work(seeded, "operator")["steps"], batch_id) == [("line_clearance", BEFORE)]
    _sign(seeded, "operator", batch_id, "line_clearance")
    _sign(seeded, "operator", batch_id, "filament_loaded", filament_lot="L", mass_loaded_g=3)
    _verify(seeded, "pharmacist", batch_id, "filament_loaded")
    work = _work(seeded, "operator")
    assert _mine(work["steps"], batch_id) == []
    (wait,) = [w for w in work["waiting"] if w["batch_id"] == batch_id]
    assert wait["code"] == "visual_inspection"
    assert wait["reason"] == (
        "waits for the machine: Printing with in-line weighing of every unit (machine)"
    )


def test_the_qp_reviews_then_certifies_and_another_site_sees_nothing(
    seeded: App, run_at_gstt: str
) -> None:
    batch_id = run_at_gstt
    qp = _work(seeded, "qp")
    assert qp["network"] and qp["may_review"] and qp["steps"] == []  # a QP signs no step
    # the record is not complete: not the QP's work yet
    assert _mine(qp["reviews"], batch_id) == [] and _mine(qp["certify"], batch_id) == []

    fh.complete_record(seeded, batch_id)
    qp = _work(seeded, "qp")
    (review,) = [r for r in qp["reviews"] if r["batch_id"] == batch_id]
    assert "audit trail" in review["reason"]
    assert [r for r in qp["certify"] if r["batch_id"] == batch_id] == []

    fh.review_audit_trail(seeded, batch_id)
    qp = _work(seeded, "qp")
    assert [r["batch_id"] for r in qp["reviews"]] == []
    assert [r["batch_id"] for r in qp["certify"]] == [batch_id]

    # the operator of Manchester: none of St Thomas' work, at any stage
    other = _work(seeded, "operator-man")
    assert other["sites"] == ["MAN-PH"]
    every = other["steps"] + other["waiting"] + other["verifications"]
    assert [i for i in every if i["site"] != "MAN-PH"] == []
    assert other["reviews"] == [] and other["certify"] == []


def test_another_sites_operator_never_sees_the_batch(seeded: App, run_at_gstt: str) -> None:
    batch_id = run_at_gstt
    _sign(seeded, "operator", batch_id, "line_clearance")
    _sign(seeded, "operator", batch_id, "filament_loaded", filament_lot="L", mass_loaded_g=3)
    # awaiting verification, which an operator may give at their own site only
    assert _mine(_work(seeded, "pharmacist")["verifications"], batch_id)
    other = _work(seeded, "operator-man")
    seen = {i["batch_id"] for k in ("steps", "waiting", "verifications") for i in other[k]}
    assert batch_id not in seen


@pytest.mark.parametrize("username", ["auditor", "planner", "admin"])
def test_roles_that_sign_nothing_have_nothing_on_it(
    seeded: App, run_at_gstt: str, username: str
) -> None:
    batch_id = run_at_gstt
    fh.complete_record(seeded, batch_id)  # awaiting the QP's review of its audit trail
    work = _work(seeded, username)
    assert not (work["may_sign"] or work["may_verify"] or work["may_review"])
    lists = ("steps", "waiting", "verifications", "reviews", "certify")
    assert {k: work[k] for k in lists} == {k: [] for k in lists}


def test_a_prescriber_reads_no_worklist(seeded: App) -> None:
    with pytest.raises(Forbidden):
        _work(seeded, "clinician")


def test_the_command_line_prints_the_same_worklist(seeded: App, run_at_gstt: str) -> None:
    from tests import cli_helpers

    batch_id = run_at_gstt
    env = {
        "NEARFAB_DATABASE_URL": seeded.engine.url.render_as_string(hide_password=False),
        # the CLI runs on the wall clock, years after the seeded accounts' passwords were set
        "NEARFAB_PASSWORD_MAX_AGE_DAYS": "36500",
    }
    who = ["--user", "operator", "--password", fh.TEST_PASSWORD]
    data = seeded.settings.data_dir
    shown = cli_helpers.run(["worklist", *who, "--json"], env=env, data_dir=data)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert _mine(json.loads(shown.stdout)["steps"], batch_id) == [("line_clearance", BEFORE)]
    text = cli_helpers.run(["worklist", *who], env=env, data_dir=data).stdout
    number = fh.batch(seeded, batch_id).batch_number
    assert f"sign  {number} line_clearance (before the machine starts)" in text
    refused = cli_helpers.run(
        ["worklist", "--user", "clinician", "--password", fh.TEST_PASSWORD, "--json"],
        env=env,
        data_dir=data,
    )
    assert refused.returncode == 2 and json.loads(refused.stdout)["error"]["code"] == "forbidden"
