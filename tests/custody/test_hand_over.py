"""The chain of identity (issue 15 part 2), on SQLite and PostgreSQL: every hand-over checks the
unit's identity on both sides and a mismatch stops the chain; the storage log is judged by the
unit's family and an excursion holds the unit; a prepared unit's in-use period limits its
administration; every refusal is audited.

The packs are made by the demo's solid_dose flow; a test-only family (`chained`) gives them the
cell_therapy family's custody rules (families/cell_therapy/labels.py): the chain collection ->
micro_factory -> cryostore -> infusion, storage at or below -150 °C, 180 minutes after thaw.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import Forbidden, Refused, ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.custody import HandOver, SerialUnit, StorageReading, UnitHold
from nearfab.families.cell_therapy.labels import CellTherapyLabels
from nearfab.families.solid_dose.labels import SolidDoseLabels
from nearfab.identity import AuditEntry

flushed_verification_log = ch.flushed_verification_log

# the cell family's chain, written out here (not read from the code): the four steps
CHAIN = ("collection", "micro_factory", "cryostore", "infusion")


class ChainLabels(SolidDoseLabels):
    """solid_dose's label text with the cell_therapy family's custody rules."""

    _cells = CellTherapyLabels()

    def hand_over_steps(self) -> tuple[str, ...]:
        return self._cells.hand_over_steps()

    def judge_storage(self, reading: Quantity) -> str | None:
        return self._cells.judge_storage(reading)

    def in_use_period(self, design: Mapping[str, Any]) -> timedelta | None:
        return self._cells.in_use_period(design)


def _packed(app: App) -> str:
    """The released batch the tests hand over: 11 days at 3 a day, 33 tablets, two packs of
    one batch (two units of one patient). Its id."""
    batch_id, units = ch.released_batch(app, dose_mg=2.5, days=11)
    assert len(units) == 2
    return batch_id


# a test asking for `packs` gets a copy of a world where `_packed` already ran (built once per
# backend and worker), any other a copy of the seeded network. One world for both kinds:
# the labels' custody rules (steps, storage, in-use period) are read only by hand-overs, storage
# logs and preparation (custody/services/handovers.py), never while the batch is made and
# released, so `chained` relabels the copy as it relabelled the seeded network before
seeded = fh.seeded_or_world({"packs": _packed})


@pytest.fixture
def chained(seeded: App) -> App:
    """solid_dose in every part but its labels."""
    return ch.relabel_solid_dose(seeded, ChainLabels())


@pytest.fixture
def packs(seeded: App, request: pytest.FixtureRequest) -> list[SerialUnit]:
    """The two packs of `_packed`'s batch, on the test's own copy."""
    units = ch.units(seeded, fh.built_data(request))
    assert len(units) == 2
    return units


def _hand_over(
    app: App, unit: SerialUnit, src: str, dst: str, received: SerialUnit | None = None
) -> HandOver:
    with app.uow() as uow:
        row = app.custody.hand_over(
            uow,
            fh.actor(app, "pharmacist"),
            scan=ch.scan(unit),
            from_step=src,
            to_step=dst,
            received_scan=ch.scan(received or unit),
        )
        uow.session.expunge(row)
        return row


def _refused_hand_over(
    app: App,
    unit: SerialUnit,
    src: str,
    dst: str,
    code: str,
    received: SerialUnit | None = None,
) -> Refused:
    with pytest.raises(Refused) as caught:
        _hand_over(app, unit, src, dst, received)
    assert caught.value.code == code, caught.value.message
    fh.assert_refusal_audited(app, caught.value, "hand_over", ch.scan(unit)[:64])
    return caught.value


def _holds(app: App, unit: SerialUnit) -> list[UnitHold]:
    with app.uow() as uow:
        rows = list(uow.session.scalars(select(UnitHold).where(UnitHold.unit_id == unit.id)))
        for r in rows:
            uow.session.expunge(r)
        return rows


def _dispense_refused(app: App, unit: SerialUnit, code: str) -> Refused:
    with pytest.raises(Refused) as caught:
        ch.dispense(app, unit)
    assert caught.value.code == code, caught.value.message
    fh.assert_refusal_audited(app, caught.value, "dispense", ch.scan(unit)[:64])
    return caught.value


def _judge(app: App, hold: UnitHold, decision: str, username: str = "qp") -> UnitHold:
    with app.uow() as uow:
        row = app.custody.judge_hold(
            uow, fh.actor(app, username), hold_id=hold.id, decision=decision, reason="checked"
        )
        uow.session.expunge(row)
        return row


def test_the_cell_family_names_its_chain_and_solid_dose_has_no_rule() -> None:
    cells, solid = CellTherapyLabels(), SolidDoseLabels()
    assert cells.hand_over_steps() == CHAIN
    # -150 °C is the limit: -150 is within it, -149.9 is an excursion
    assert cells.judge_storage(Quantity(-150.0, "Cel")) is None
    why = cells.judge_storage(Quantity(-149.9, "Cel"))
    assert why is not None and "-150" in why
    with pytest.raises(ValidationFailed) as caught:
        cells.judge_storage(Quantity(-160.0, "K"))
    assert caught.value.field == "unit"
    assert cells.in_use_period({}) == timedelta(minutes=180)
    assert cells.in_use_period({"thaw_shelf_life_min": 30}) == timedelta(minutes=30)
    assert solid.hand_over_steps() == ()
    assert solid.judge_storage(Quantity(40.0, "Cel")) is None
    assert solid.in_use_period({}) is None


def test_matching_hand_overs_pass_the_chain_in_order(chained: App, packs: list[SerialUnit]) -> None:
    unit, _ = packs
    for src, dst in itertools.pairwise(CHAIN):
        row = _hand_over(chained, unit, src, dst)
        assert (row.from_step, row.to_step, row.outcome) == (src, dst, "accepted")
    with chained.uow() as uow:
        created = list(
            uow.session.scalars(
                select(AuditEntry).where(
                    AuditEntry.entity_type == "hand_over", AuditEntry.action == "create"
                )
            )
        )
    assert len(created) == 3
    assert _holds(chained, unit) == []
    # the chain is complete: no hand-over after its last step
    exc = _refused_hand_over(chained, unit, "infusion", "collection", "wrong_step")
    assert exc.field == "to_step"
    assert len(_holds(chained, unit)) == 1


@pytest.mark.parametrize("at", [0, 1, 2])
def test_a_mismatch_at_any_hand_over_holds_the_unit_and_stops_the_chain(
    chained: App, at: int, packs: list[SerialUnit]
) -> None:
    unit, other = packs
    for i in range(at):
        _hand_over(chained, unit, CHAIN[i], CHAIN[i + 1])
    # the receiving side scans the patient's other bag: refused, the unit held
    exc = _refused_hand_over(chained, unit, CHAIN[at], CHAIN[at + 1], "identity_mismatch", other)
    assert exc.field == "received_scan"
    assert other.serial in exc.message and unit.serial in exc.message
    [hold] = _holds(chained, unit)
    assert hold.source == "hand_over" and hold.decision is None
    assert other.serial in hold.reason
    with chained.uow() as uow:
        rows = list(uow.session.scalars(select(HandOver).where(HandOver.unit_id == unit.id)))
        audited = uow.session.scalar(
            select(AuditEntry).where(
                AuditEntry.entity_type == "unit_hold", AuditEntry.entity_id == hold.id
            )
        )
    assert [r.outcome for r in rows] == ["accepted"] * at + ["refused"]
    assert audited is not None
    # the chain stops: the right hand-over now, and administration, are refused
    _refused_hand_over(chained, unit, CHAIN[at], CHAIN[at + 1], "held")
    answer = _verify(chained, unit)  # and "check only" says why, not "ok"
    assert answer.status == "held" and "QP" in answer.message
    _dispense_refused(chained, unit, "held")
    # a QP's judgement resumes it
    _judge(chained, hold, "resume")
    assert _hand_over(chained, unit, CHAIN[at], CHAIN[at + 1]).outcome == "accepted"


def test_a_wrong_step_or_a_label_that_disagrees_is_a_mismatch(
    chained: App, packs: list[SerialUnit]
) -> None:
    unit, other = packs
    exc = _refused_hand_over(chained, unit, "micro_factory", "cryostore", "wrong_step")
    assert exc.field == "from_step" and "collection" in exc.message
    # a reject keeps the chain stopped for good
    [hold] = _holds(chained, unit)
    _judge(chained, hold, "reject")
    _refused_hand_over(chained, unit, "collection", "micro_factory", "held")
    # the other unit: its giving side's label names another batch
    with pytest.raises(Refused) as caught, chained.uow() as uow:
        chained.custody.hand_over(
            uow,
            fh.actor(chained, "pharmacist"),
            scan=ch.scan(other, batch="WRONG1"),
            from_step="collection",
            to_step="micro_factory",
            received_scan=ch.scan(other, batch="WRONG1"),
        )
    assert caught.value.code == "identity_mismatch" and caught.value.field == "scan"
    assert len(_holds(chained, other)) == 1


def test_only_a_qp_judges_a_hold(chained: App, packs: list[SerialUnit]) -> None:
    unit, other = packs
    _refused_hand_over(chained, unit, "collection", "micro_factory", "identity_mismatch", other)
    [hold] = _holds(chained, unit)
    with pytest.raises(Forbidden):
        _judge(chained, hold, "resume", username="pharmacist")
    with pytest.raises(ValidationFailed) as caught:
        _judge(chained, hold, "maybe")
    assert caught.value.field == "decision"
    fh.assert_refusal_audited(chained, caught.value, "unit_hold", hold.id)
    _judge(chained, hold, "resume")
    with pytest.raises(Refused) as again:
        _judge(chained, hold, "reject")
    assert again.value.code == "already_judged"


def test_a_storage_excursion_is_recorded_and_holds_the_unit(
    chained: App, clock: ManualClock, packs: list[SerialUnit]
) -> None:
    unit, other = packs
    now = clock.now()
    with chained.uow() as uow:
        result = chained.custody.log_storage(
            uow,
            fh.actor(chained, "pharmacist"),
            unit_ids=[unit.id, other.id],
            readings=[(now - timedelta(minutes=10), -180.0), (now, -150.0)],
        )
    assert len(result.readings) == 4 and result.excursions == [] and result.holds == []
    # a reading above -150 °C on one unit's log
    with chained.uow() as uow:
        result = chained.custody.log_storage(
            uow,
            fh.actor(chained, "operator"),
            unit_ids=[unit.id],
            readings=[(now, -160.0), (now + timedelta(minutes=5), -120.0)],
        )
        [excursion] = result.excursions
        assert excursion.value == -120.0 and "-150" in (excursion.reason or "")
        [hold] = result.holds
        assert excursion.hold_id == hold.id
    with chained.uow() as uow:
        logged = list(
            uow.session.scalars(select(StorageReading).where(StorageReading.unit_id == unit.id))
        )
        audit_row = uow.session.scalar(
            select(AuditEntry).where(
                AuditEntry.entity_type == "storage_log",
                AuditEntry.new["excursions"].as_integer() == 1,
            )
        )
    assert sorted(r.excursion for r in logged) == [False, False, False, True]
    assert audit_row is not None
    [held] = _holds(chained, unit)
    assert held.source == "storage" and "-120" in held.reason
    _dispense_refused(chained, unit, "held")
    _refused_hand_over(chained, unit, "collection", "micro_factory", "held")
    assert _holds(chained, other) == []
    # a reading without a time zone is bad input, named
    with pytest.raises(ValidationFailed) as caught, chained.uow() as uow:
        chained.custody.log_storage(
            uow,
            fh.actor(chained, "pharmacist"),
            unit_ids=[other.id],
            readings=[(now.replace(tzinfo=None), -170.0)],
        )
    assert caught.value.field == "read_at"


def test_administration_after_the_in_use_period_is_refused(
    chained: App, clock: ManualClock, packs: list[SerialUnit]
) -> None:
    unit, other = packs
    for u in (unit, other):
        with chained.uow() as uow:
            period = chained.custody.prepare(uow, fh.actor(chained, "pharmacist"), scan=ch.scan(u))
            # 180 minutes after preparation (the family's default shelf life after thaw)
            assert period.use_by == period.prepared_at + timedelta(minutes=180)
    with pytest.raises(Refused) as twice, chained.uow() as uow:
        chained.custody.prepare(uow, fh.actor(chained, "pharmacist"), scan=ch.scan(unit))
    assert twice.value.code == "already_prepared"
    fh.assert_refusal_audited(chained, twice.value, "in_use", ch.scan(unit)[:64])
    clock.advance(179 * 60)
    assert ch.dispense(chained, other).unit.status == "dispensed"
    clock.advance(2 * 60)  # 181 minutes after preparation
    exc = _dispense_refused(chained, unit, "in_use_expired")
    assert "in-use period" in exc.message
    # "check only" answers what dispense would: not ok
    assert _verify(chained, unit).status == "in_use_expired"


def _verify(app: App, unit: SerialUnit) -> Any:
    with app.uow() as uow:
        return app.custody.verify(
            uow,
            fh.actor(app, "pharmacist"),
            scan=ch.scan(unit),
            patient_ref=ch.patient_ref(app, unit),
        )


def test_a_family_without_rules_checks_identity_only(seeded: App, packs: list[SerialUnit]) -> None:
    unit, other = packs
    # solid_dose: no chain of steps, no storage rule, no in-use period
    assert _hand_over(seeded, unit, "pharmacy", "ward").outcome == "accepted"
    _refused_hand_over(seeded, unit, "ward", "bedside", "identity_mismatch", other)
    with seeded.uow() as uow:
        result = seeded.custody.log_storage(
            uow,
            fh.actor(seeded, "pharmacist"),
            unit_ids=[other.id],
            readings=[(seeded.clock.now(), 40.0)],
        )
        assert result.excursions == []
    with seeded.uow() as uow:
        period = seeded.custody.prepare(uow, fh.actor(seeded, "pharmacist"), scan=ch.scan(other))
        assert period.use_by is None


def test_the_chain_over_http(chained: App, packs: list[SerialUnit]) -> None:
    from fastapi.testclient import TestClient

    from nearfab.web.server import create_web_app

    client = TestClient(create_web_app(chained))

    def auth(username: str) -> dict[str, str]:
        res = client.post(
            "/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD}
        )
        assert res.status_code == 200, res.text
        return {"Authorization": f"Bearer {res.json()['access_token']}"}

    ph, qp = auth("pharmacist"), auth("qp")
    unit, other = packs
    body = {
        "scan": ch.scan(unit),
        "from_step": "collection",
        "to_step": "micro_factory",
        "received_scan": ch.scan(unit),
    }
    ok = client.post("/api/v1/hand-overs", json=body, headers=ph)
    assert ok.status_code == 201, ok.text
    assert ok.json()["outcome"] == "accepted" and ok.json()["to_step"] == "micro_factory"
    wrong = body | {"from_step": "micro_factory", "to_step": "cryostore"}
    wrong["received_scan"] = ch.scan(other)
    refused = client.post("/api/v1/hand-overs", json=wrong, headers=ph)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["field"]) == ("identity_mismatch", "received_scan")
    chain = client.get(f"/api/v1/packs/{unit.id}/chain", headers=qp).json()
    assert [h["outcome"] for h in chain["hand_overs"]] == ["accepted", "refused"]
    [hold] = chain["holds"]
    assert hold["decision"] is None
    # a pharmacist may not judge it; a QP may
    judge = {"decision": "resume", "reason": "the other bag was scanned by mistake"}
    assert (
        client.post(f"/api/v1/holds/{hold['id']}/judge", json=judge, headers=ph).status_code == 403
    )
    judged = client.post(f"/api/v1/holds/{hold['id']}/judge", json=judge, headers=qp)
    assert judged.status_code == 200 and judged.json()["decision"] == "resume"
    log = client.post(
        f"/api/v1/packs/{unit.id}/storage-log",
        json={"readings": [{"read_at": chained.clock.now().isoformat(), "value": -100.0}]},
        headers=ph,
    )
    assert log.status_code == 201, log.text
    assert log.json()["readings"][0]["excursion"] is True and len(log.json()["holds"]) == 1
    bad = client.post(f"/api/v1/packs/{other.id}/prepare", json={"scan": ch.scan(unit)}, headers=ph)
    assert bad.status_code == 409 and bad.json()["error"]["code"] == "identity_mismatch"
    prepared = client.post(
        f"/api/v1/packs/{other.id}/prepare", json={"scan": ch.scan(other)}, headers=ph
    )
    assert prepared.status_code == 201, prepared.text
    assert prepared.json()["use_by"] is not None


def test_the_chain_from_the_command_line(seeded: App, packs: list[SerialUnit]) -> None:
    import json

    from tests import cli_helpers

    unit, other = packs
    env = {
        "NEARFAB_DATABASE_URL": seeded.engine.url.render_as_string(hide_password=False),
        "NEARFAB_PASSWORD_MAX_AGE_DAYS": "3650",  # the CLI runs on the real clock
    }

    def nearfab(*args: str, user: str = "pharmacist") -> Any:
        login = ["--user", user, "--password", fh.TEST_PASSWORD, "--json"]
        return cli_helpers.run(
            ["custody", *args, *login], env=env, data_dir=seeded.settings.data_dir
        )

    ok = nearfab("hand-over", "--scan", ch.scan(unit), "--from", "pharmacy", "--to", "ward",
                 "--received-scan", ch.scan(unit))  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["outcome"] == "accepted"
    refused = nearfab("hand-over", "--scan", ch.scan(unit), "--from", "ward", "--to", "bedside",
                      "--received-scan", ch.scan(other))  # fmt: skip
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["error"]["code"] == "identity_mismatch"
    [hold] = _holds(seeded, unit)
    bad = nearfab("storage-log", other.id, "--reading", "yesterday=cold")
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"]["field"] == "reading"
    logged = nearfab("storage-log", other.id, "--reading", f"{seeded.clock.now().isoformat()}=21.5")
    assert logged.returncode == 0, logged.stdout + logged.stderr
    assert json.loads(logged.stdout) == {"readings": 1, "excursions": [], "holds": []}
    not_qp = nearfab("judge-hold", hold.id, "--decision", "resume", "--reason", "x")
    assert not_qp.returncode == 2
    judged = nearfab("judge-hold", hold.id, "--decision", "resume", "--reason", "x", user="qp")
    assert judged.returncode == 0, judged.stdout + judged.stderr
    assert json.loads(judged.stdout)["decision"] == "resume"
    prepared = nearfab("prepare", "--scan", ch.scan(other))
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    assert json.loads(prepared.stdout)["use_by"] is None  # solid_dose: no in-use limit


def _holds_read(app: App, call: Any) -> tuple[Any, int]:
    """`call()`'s answer and how many statements of this thread read a hold's row."""
    import threading

    from sqlalchemy import event

    reads = [0]
    caller = threading.get_ident()

    def count(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        # the check's own statement selects the hold (the scan's only asks whether one exists)
        if threading.get_ident() == caller and sql.lstrip().startswith(
            "SELECT custody_unit_holds."
        ):
            reads[0] += 1

    event.listen(app.engine, "before_cursor_execute", count)
    try:
        return call(), reads[0]
    finally:
        event.remove(app.engine, "before_cursor_execute", count)


def test_verification_sees_a_hold_and_its_judgement_at_the_next_scan(
    chained: App, packs: list[SerialUnit]
) -> None:
    """Verification reads with the pack whether it has an open hold or an in-use period, and
    asks the chain-of-identity check (its own statement) only then: a pack with neither
    answers ok without it; a hold placed after a verification is seen by the next one; a
    resume lets it through again; a second hold judged reject keeps it held."""
    unit, other = packs
    answer, reads = _holds_read(chained, lambda: _verify(chained, unit))
    assert (answer.status, reads) == ("ok", 0)
    _refused_hand_over(chained, unit, CHAIN[0], CHAIN[1], "identity_mismatch", other)
    [hold] = _holds(chained, unit)
    answer, reads = _holds_read(chained, lambda: _verify(chained, unit))
    assert (answer.status, reads) == ("held", 1)
    _judge(chained, hold, "resume")
    answer, reads = _holds_read(chained, lambda: _verify(chained, unit))
    assert (answer.status, reads) == ("ok", 0)  # a judged resume is no open hold
    _refused_hand_over(chained, unit, CHAIN[0], CHAIN[1], "identity_mismatch", other)
    second = next(h for h in _holds(chained, unit) if h.id != hold.id)
    _judge(chained, second, "reject")
    answer, reads = _holds_read(chained, lambda: _verify(chained, unit))
    assert (answer.status, reads) == ("held", 1)  # rejected: stopped for good
    # a prepared pack: its in-use period is read, and within it the pack is fine
    with chained.uow() as uow:
        chained.custody.prepare(uow, fh.actor(chained, "pharmacist"), scan=ch.scan(other))
    answer, reads = _holds_read(chained, lambda: _verify(chained, other))
    assert (answer.status, reads) == ("ok", 1)
