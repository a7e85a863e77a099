"""Verification at dispense (one status per scan, every status), alerts on a second dispense and
on unknown packs, and undo of a dispense (10 days, never expired or recalled), on SQLite and
PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import Forbidden, Refused, ValidationFailed
from nearfab.custody import (
    CustodyAlert,
    CustodyChain,
    Dispense,
    EpcisEvent,
    SerialUnit,
    Verification,
    VerifyStatus,
    make_identifier,
)
from nearfab.identity import AuditEntry, User

Released = tuple[str, list[SerialUnit]]


def _one_released_batch(app: App) -> str:
    """The demo network with one made and released batch: most tests here start from one.
    Built once per backend; each test gets its own copy (tests/flow_helpers.py)."""
    batch_id, _ = ch.released_batch(app)
    return batch_id


world = fh.world_fixture(_one_released_batch)


@pytest.fixture
def seeded(world: fh.Built) -> App:
    """The test's copy of the demo network with `released`'s batch in it."""
    app: App = world.app
    return app


@pytest.fixture
def released(world: fh.Built) -> Released:
    """The released batch's id and its packs (what `ch.released_batch` returns)."""
    return world.data, ch.units(world.app, world.data)


flushed_verification_log = ch.flushed_verification_log
DAY = 86_400


@pytest.fixture
def chain(seeded: App) -> CustodyChain:
    return ch.chain(seeded)


def _verify(app: App, scan: str, patient_ref: str | None = None) -> Verification:
    with app.uow() as uow:
        return app.custody.verify(
            uow, fh.actor(app, "pharmacist"), scan=scan, patient_ref=patient_ref
        )


def _alerts(app: App) -> list[CustodyAlert]:
    with app.uow() as uow:
        rows = list(uow.session.scalars(select(CustodyAlert).order_by(CustodyAlert.raised_at)))
        for r in rows:
            uow.session.expunge(r)
        return rows


def test_ok_and_wrong_patient(seeded: App, released: Released, chain: CustodyChain) -> None:
    _, packs = released
    unit = packs[0]
    ok = _verify(seeded, ch.scan(unit), ch.patient_ref(seeded, unit))
    assert ok.status == VerifyStatus.OK
    assert (ok.unit_id, ok.serial, ok.unit_status) == (unit.id, unit.serial, "released")
    assert _verify(seeded, ch.scan(unit)).status == VerifyStatus.OK  # no patient given
    wrong = _verify(seeded, ch.scan(unit), "PT-SOMEONE-ELSE")
    assert wrong.status == VerifyStatus.WRONG_PATIENT
    assert "PT-SOMEONE-ELSE" in wrong.message
    seeded.custody.flush_verification_log()  # the log rows go through the group-commit writer
    with seeded.uow() as uow:
        audited = uow.session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action == "verify", AuditEntry.entity_id == unit.id)
            .order_by(AuditEntry.id)
        ).all()
    assert [a.new["status"] for a in audited] == ["ok", "ok", "wrong_patient"]  # type: ignore[index]


def test_not_released_rejected_and_record_changed(
    seeded: App, released: Released, chain: CustodyChain
) -> None:
    quarantined = ch.units(seeded, fh.make_batch(seeded))[0]
    assert _verify(seeded, ch.scan(quarantined)).status == VerifyStatus.NOT_RELEASED
    rejected_batch = fh.make_batch(seeded)
    fh.reject(seeded, rejected_batch)
    rejected = ch.units(seeded, rejected_batch)[0]
    assert _verify(seeded, ch.scan(rejected)).status == VerifyStatus.REJECTED
    batch_id, packs = released
    fh.edit(seeded, fh.BatchRecord, batch_id, material_used_g=99.0)  # the record moved
    changed = _verify(seeded, ch.scan(packs[0]))
    assert changed.status == VerifyStatus.NOT_RELEASED
    assert "signature" in changed.message


def _verify_log(app: App) -> list[tuple[str, str, str]]:
    with app.uow() as uow:
        rows = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "verify").order_by(AuditEntry.id)
        ).all()
        return [(r.entity_id, r.actor_id, r.new["status"]) for r in rows]  # type: ignore[index]


def test_every_verification_is_logged_by_the_group_commit_writer(
    seeded: App, released: Released, chain: CustodyChain
) -> None:
    """Concurrent verifications are read-only; their log rows are committed in batches by one
    writer, and `flush()` commits every row submitted before it: none is lost."""
    import threading

    _, packs = released
    vlog = seeded.custody.verification_log
    vlog.interval_s = 30.0  # the writer thread would wait long: only flush() writes them
    scans = [ch.scan(u) for u in packs]
    errors: list[BaseException] = []

    def verify_many(n: int) -> None:
        try:
            for i in range(n):
                _verify(seeded, scans[i % len(scans)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=verify_many, args=(10,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _verify_log(seeded) == []  # nothing committed yet: no commit per verification
    assert vlog.queued == 40
    assert seeded.custody.flush_verification_log() == 40
    logged = _verify_log(seeded)
    assert len(logged) == 40 and vlog.queued == 0
    pharmacist = fh.actor(seeded, "pharmacist").user_id
    assert {(actor, status) for _, actor, status in logged} == {(pharmacist, "ok")}
    assert sorted({e for e, _, _ in logged}) == sorted({u.id for u in packs})
    assert seeded.custody.flush_verification_log() == 0  # nothing is written twice


def test_the_writer_commits_on_its_own_and_keeps_rows_it_could_not_write(
    seeded: App, released: Released, chain: CustodyChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    _, packs = released
    vlog = seeded.custody.verification_log
    vlog.interval_s = 0.001
    _verify(seeded, ch.scan(packs[0]))
    deadline = time.monotonic() + 10
    while not _verify_log(seeded) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [s for _, _, s in _verify_log(seeded)] == ["ok"]  # without any flush
    # a failing database: the rows stay queued and flush() says so
    vlog.interval_s = 30.0
    _verify(seeded, ch.scan(packs[0]))
    engine = vlog._engine
    assert engine is not None

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("database gone")

    monkeypatch.setattr(engine, "begin", broken)
    with pytest.raises(RuntimeError):
        seeded.custody.flush_verification_log()
    assert vlog.queued == 1
    monkeypatch.undo()
    assert seeded.custody.flush_verification_log() == 1
    assert len(_verify_log(seeded)) == 2


def test_unknown_packs_are_alerted_and_logged_at_once(
    seeded: App, released: Released, chain: CustodyChain
) -> None:
    _, packs = released
    seeded.custody.verification_log.interval_s = 30.0
    never = make_identifier(packs[0].gtin, "ZZZZZZZZZZZZ", packs[0].batch_number, packs[0].expiry)
    answer = _verify(seeded, "]d2" + never.datamatrix_data())
    # no flush: the alert and its log row were committed by the verification itself
    assert [a.id for a in _alerts(seeded)] == [answer.alert_id]
    assert [s for _, _, s in _verify_log(seeded)] == ["unknown"]


def test_the_signature_check_is_remembered_per_record_version(
    seeded: App, released: Released, chain: CustodyChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id, packs = released
    calls: list[str] = []
    real = seeded.quality.signature_valid

    def counting(uow: object, review: object, **kw: Any) -> bool | None:
        calls.append("check")
        return real(uow, review, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(seeded.quality, "signature_valid", counting)
    for _ in range(3):
        assert _verify(seeded, ch.scan(packs[0])).status == VerifyStatus.OK
    assert calls == ["check"]  # the batch record was canonicalised once
    # a change through the application bumps the record's row_version: checked again
    fh.edit(seeded, fh.BatchRecord, batch_id, material_used_g=99.0)
    changed = _verify(seeded, ch.scan(packs[0]))
    assert changed.status == VerifyStatus.NOT_RELEASED and "signature" in changed.message
    assert calls == ["check", "check"]
    with pytest.raises(Refused) as exc:
        ch.dispense(seeded, packs[0])
    assert exc.value.code == "record_changed"


def test_expired(seeded: App, released: Released, chain: CustodyChain, clock: ManualClock) -> None:
    _, packs = released
    unit = packs[0]
    days = (unit.expiry - clock.now().date()).days
    clock.advance(days * DAY)  # on the expiry date: still fine
    assert _verify(seeded, ch.scan(unit), ch.patient_ref(seeded, unit)).status == VerifyStatus.OK
    clock.advance(DAY)
    assert _verify(seeded, ch.scan(unit)).status == VerifyStatus.EXPIRED


def test_already_dispensed_and_a_second_dispense_raises_an_alert(
    seeded: App, released: Released, chain: CustodyChain
) -> None:
    _, packs = released
    unit = packs[0]
    result = ch.dispense(seeded, unit)
    assert result.unit.status == "dispensed"
    again = _verify(seeded, ch.scan(unit), ch.patient_ref(seeded, unit))
    assert again.status == VerifyStatus.ALREADY_DISPENSED
    assert again.dispensed_at is not None
    assert _alerts(seeded) == []  # verifying is not dispensing
    with pytest.raises(Refused) as exc:
        ch.dispense(seeded, unit)
    assert exc.value.code == "already_dispensed"
    alerts = _alerts(seeded)
    assert [(a.kind, a.unit_id) for a in alerts] == [("second_dispense", unit.id)]
    fh.assert_refusal_audited(seeded, exc.value, "dispense", ch.scan(unit)[:64])
    # the dispense was decommissioned in EPCIS: a dispensing event for the pack
    with seeded.uow() as uow:
        steps = chain.epcis.query(uow, epc=f"https://id.gs1.org/01/{unit.gtin}/21/{unit.serial}")
    by_step = {e["bizStep"]: e for e in steps}
    assert set(by_step) == {
        "creating_class_instance",
        "commissioning",
        "inspecting",
        "dispensing",
    }
    assert by_step["dispensing"]["disposition"] == "dispensed"
    assert by_step["commissioning"]["action"] == "ADD"


def test_unknown_packs_are_suspected_falsified(
    seeded: App, released: Released, chain: CustodyChain
) -> None:
    _, packs = released
    unit = packs[0]
    never = make_identifier(unit.gtin, "ZZZZZZZZZZZZ", unit.batch_number, unit.expiry)
    answer = _verify(seeded, "]d2" + never.datamatrix_data())
    assert answer.status == VerifyStatus.UNKNOWN
    assert "falsified" in answer.message and answer.alert_id
    mismatch = _verify(seeded, ch.scan(unit, batch="OTHERBATCH1"))
    assert mismatch.status == VerifyStatus.UNKNOWN
    kinds = [(a.kind, a.unit_id) for a in _alerts(seeded)]
    assert kinds == [("suspected_falsified", None), ("suspected_falsified", unit.id)]
    with pytest.raises(ValidationFailed) as bad:
        _verify(seeded, "not a GS1 scan")
    assert bad.value.field == "scan"
    with seeded.uow() as uow, pytest.raises(Forbidden):
        seeded.custody.verify(uow, fh.actor(seeded, "operator"), scan=ch.scan(unit))


def test_recalled(seeded: App, released: Released, chain: CustodyChain) -> None:
    batch_id, packs = released
    lot = fh.batch(seeded, batch_id).material_lot_number
    with seeded.uow() as uow:
        chain.recalls.create(uow, fh.actor(seeded, "qp"), lot=lot, reason="assay out of spec")
    assert _verify(seeded, ch.scan(packs[0])).status == VerifyStatus.RECALLED
    with pytest.raises(Refused) as exc:
        ch.dispense(seeded, packs[0])
    assert exc.value.code == "recalled"


def _undo(app: App, unit: SerialUnit, reason: str = "handed back unopened") -> SerialUnit:
    with app.uow() as uow:
        return app.custody.undo_dispense(
            uow, fh.actor(app, "pharmacist"), unit_id=unit.id, reason=reason
        )


def test_undo_within_ten_days_recommissions_with_an_error_declaration(
    seeded: App, released: Released, chain: CustodyChain, clock: ManualClock
) -> None:
    _, packs = released
    unit = packs[0]
    ch.dispense(seeded, unit)
    clock.advance(9 * DAY)
    with pytest.raises(ValidationFailed):
        _undo(seeded, unit, reason="  ")
    assert _undo(seeded, unit).status == "released"
    assert fh.count(seeded, Dispense) == 0
    assert _verify(seeded, ch.scan(unit), ch.patient_ref(seeded, unit)).status == VerifyStatus.OK
    with seeded.uow() as uow:
        dispensing = uow.session.scalars(
            select(EpcisEvent).where(EpcisEvent.biz_step == "dispensing")
        ).one()
        declared = dispensing.body["errorDeclaration"]
        assert declared["reason"] == "incorrect_data"
        corrective = uow.session.get(EpcisEvent, declared["correctiveEventIDs"][0])
        assert corrective is not None and corrective.disposition == "sellable_accessible"
        assert chain.ledger.verify(uow).ok
    ch.dispense(seeded, unit)  # and it can be handed over again


def test_undo_is_refused_after_ten_days_for_expired_and_for_recalled_packs(
    seeded: App, released: Released, chain: CustodyChain, clock: ManualClock
) -> None:
    batch_id, packs = released
    late, expired, recalled = packs[0], packs[1] if len(packs) > 1 else None, None
    ch.dispense(seeded, late)
    clock.advance(10 * DAY + 60)
    with pytest.raises(Refused) as exc:
        _undo(seeded, late)
    assert exc.value.code == "undo_window_passed"
    fh.assert_refusal_audited(seeded, exc.value, "dispense", late.id)
    # expired: dispensed on its expiry date, undone the next day
    _, more = ch.released_batch(seeded)
    expired = more[0]
    clock.advance((expired.expiry - clock.now().date()).days * DAY)
    ch.dispense(seeded, expired)
    clock.advance(DAY)
    with pytest.raises(Refused) as exc:
        _undo(seeded, expired)
    assert exc.value.code == "expired"
    # recalled after the dispense
    _, fresh = ch.released_batch(seeded)
    recalled = fresh[0]
    ch.dispense(seeded, recalled)
    lot = fh.batch(seeded, recalled.batch_id).material_lot_number
    with seeded.uow() as uow:
        chain.recalls.create(uow, fh.actor(seeded, "qp"), lot=lot, reason="contamination")
    with pytest.raises(Refused) as exc:
        _undo(seeded, recalled)
    assert exc.value.code == "recalled"
    del batch_id


# --- issue 12 item 6: /verify is no oracle for other sites' patients ---------------------------
def _probe_site(app: App, unit: SerialUnit) -> str:
    """A site that neither made the pack nor ordered it."""
    with app.uow() as uow:
        served = {
            app.production.get(uow, unit.batch_id).site_id,
            app.orders.get(uow, unit.order_id).site_id,
        }
        others = [
            s.code
            for s in app.network.list_sites(uow)
            if s.id not in served and s.kind != "control"
        ]
    assert others, "the demo network has a site that neither made nor ordered the pack"
    return others[0]


def test_a_pharmacist_of_another_site_learns_nothing_about_the_patient(
    seeded: App, released: Released, chain: CustodyChain
) -> None:
    """A pharmacist at site A probes packs of site B with the right and a wrong patient
    reference: both answers are the answer for an unknown pack (same status and message), the
    pack's own details are not returned, and every probe is on the audit trail."""
    from fastapi.testclient import TestClient

    from nearfab.web.server import create_web_app

    _, packs = released
    unit = packs[0]
    code = _probe_site(seeded, unit)
    prober = fh.create_user(seeded, "probe-pharmacist", ["pharmacist"], code)
    fh.edit(seeded, User, prober.user_id, must_change_password=False)  # chose their own
    right, wrong = ch.patient_ref(seeded, unit), "PT-SOMEONE-ELSE"
    with seeded.uow() as uow:
        a = seeded.custody.verify(uow, prober, scan=ch.scan(unit), patient_ref=right)
    with seeded.uow() as uow:
        b = seeded.custody.verify(uow, prober, scan=ch.scan(unit), patient_ref=wrong)
    never = make_identifier(unit.gtin, "ZZZZZZZZZZZZ", unit.batch_number, unit.expiry)
    with seeded.uow() as uow:
        c = seeded.custody.verify(
            uow, prober, scan="]d2" + never.datamatrix_data(), patient_ref=right
        )
    assert a.status == b.status == c.status == VerifyStatus.UNKNOWN

    def shown(v: Verification) -> dict[str, object]:
        return {k: x for k, x in v.to_dict().items() if k not in ("alert_id", "serial")}

    assert shown(a) == shown(b)
    assert a.unit_id is None and a.unit_status is None
    assert a.message.replace(unit.serial, "S") == c.message.replace("ZZZZZZZZZZZZ", "S")
    # the site's own pharmacist still gets the real answers
    assert _verify(seeded, ch.scan(unit), wrong).status == VerifyStatus.WRONG_PATIENT
    assert _verify(seeded, ch.scan(unit), right).status == VerifyStatus.OK
    # through the API and the web dispense check too
    client = TestClient(create_web_app(seeded))
    got = client.post(
        "/api/v1/auth/token",
        json={"username": "probe-pharmacist", "password": fh.TEST_PASSWORD},
    )
    assert got.status_code == 200, got.text
    token = got.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    answers = [
        client.post(
            "/api/v1/verify", json={"scan": ch.scan(unit), "patient_ref": ref}, headers=headers
        ).json()
        for ref in (right, wrong)
    ]
    assert [x["status"] for x in answers] == ["unknown", "unknown"]
    assert answers[0]["message"] == answers[1]["message"]
    assert answers[0]["unit_id"] is None
    web = TestClient(create_web_app(seeded))
    page = web.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    login = {"username": "probe-pharmacist", "password": fh.TEST_PASSWORD}
    web.post("/login", data=login | ({"csrf_token": csrf.group(1)} if csrf else {}))
    form_csrf = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/dispense").text)
    assert form_csrf
    pages = [
        web.post(
            "/dispense",
            data={
                "scan": ch.scan(unit),
                "patient_ref": ref,
                "csrf_token": form_csrf.group(1),
                "action": "verify",
            },
        ).text
        for ref in (right, wrong)
    ]
    for text in pages:
        assert '<span id="status" class="status">unknown</span>' in text
    # every probe is audited, marked as out of scope
    seeded.custody.flush_verification_log()
    with seeded.uow() as uow:
        probes = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "verify", AuditEntry.actor_id == prober.user_id
            )
        ).all()
    assert len(probes) == 7  # 3 service calls, 2 API calls, 2 page checks
    assert all(p.new["status"] == "unknown" for p in probes)  # type: ignore[index]
    assert sum(bool(p.new.get("out_of_scope")) for p in probes) == 6  # type: ignore[union-attr]
