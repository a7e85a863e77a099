"""Hand-overs check the family's chain identifier on both sides and the patient at the bedside
(issue 15, the cell family's ISBT 128 DIN), on SQLite and PostgreSQL; every hand-over is an
EPCIS ObjectEvent of the unit.

The packs are made by the demo's solid_dose flow (fast); a test-only family (`dinned`) gives
them the cell_therapy family's custody rules *and* its chain identifier rules
(families/cell_therapy/labels.py: `check_chain_identifier`, `hand_over_biz_step`). The design
names no DIN unless the test says so; the DIN bound to the order at its collection is what the
chain carries then.

DINs from ICCBBA ST-001 v6.2.2: G1234 17 654321 has K = A (Appendix A.1); A9998 18 123456 has
K = N (§7.5.1.1). CBV 2.0 business steps: receiving, storing, picking, holding.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.custody import HandOver, SerialUnit, UnitHold
from nearfab.families.cell_therapy.labels import CellTherapyLabels
from nearfab.families.solid_dose.labels import SolidDoseLabels

flushed_verification_log = ch.flushed_verification_log

CHAIN = ("collection", "micro_factory", "cryostore", "infusion")
DIN = "=G12341765432100"
DIN_TYPED = "G1234 17 654321 [A]"
OTHER_DIN = "A9998 18 123456 N"  # another patient's collection
WRONG_K = "G1234 17 654321 [B]"  # K of G1234 17 654321 is A


class DinLabels(SolidDoseLabels):
    """solid_dose's label text with the cell_therapy family's custody and identity rules; the
    design's DIN is `named` (None: the one bound at the collection)."""

    _cells = CellTherapyLabels()
    named: str | None = None

    def hand_over_steps(self) -> tuple[str, ...]:
        return self._cells.hand_over_steps()

    def judge_storage(self, reading: Quantity) -> str | None:
        return self._cells.judge_storage(reading)

    def in_use_period(self, design: Mapping[str, Any]) -> timedelta | None:
        return self._cells.in_use_period(design)

    def chain_identifier(self, design: Mapping[str, Any]) -> str | None:
        return self._cells.chain_identifier({"din": self.named} if self.named else {})

    def check_chain_identifier(self, expected: str, presented: str) -> str | None:
        return self._cells.check_chain_identifier(expected, presented)

    def hand_over_biz_step(self, from_step: str, to_step: str) -> str:
        return self._cells.hand_over_biz_step(from_step, to_step)

    def label_details(
        self, design: Mapping[str, Any], chain_identifier: str | None = None
    ) -> tuple[str, ...]:
        named = {"din": self.named} if self.named else {}
        return self._cells.label_details(named, chain_identifier)


@pytest.fixture
def dinned(seeded: App) -> App:
    DinLabels.named = DIN
    return ch.relabel_solid_dose(seeded, DinLabels())


def _unit(app: App) -> SerialUnit:
    _, units = ch.released_batch(app, dose_mg=2.5, days=11)
    return units[0]


def _dinned_batch(app: App) -> str:
    """`dinned`, then `_unit`'s released batch: built once per backend and worker
    (flow_helpers.world_copy) for the tests that ask for `din_unit`, each on its own copy."""
    DinLabels.named = DIN
    batch_id, _ = ch.released_batch(ch.relabel_solid_dose(app, DinLabels()), dose_mg=2.5, days=11)
    return batch_id


_DIN_BATCH = pytest.StashKey[str]()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def seeded(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> Iterator[App]:
    """flow_helpers.seeded; for a test that asks for `din_unit`, a copy of the seeded network
    on which `_dinned_batch` has already run (the same database `_unit(dinned)` would leave)."""
    if "din_unit" not in request.fixturenames:
        with fh.seeded_copy(request, request.param, tmp_path, clock) as application:
            yield application
        return
    with fh.world_copy(request, request.param, _dinned_batch, tmp_path, clock) as built:
        request.node.stash[_DIN_BATCH] = built.data
        yield built.app


@pytest.fixture
def din_unit(dinned: App, request: pytest.FixtureRequest) -> SerialUnit:
    """`_unit(dinned)`: the first pack of the released batch of the DIN-labelled family."""
    return ch.units(dinned, request.node.stash[_DIN_BATCH])[0]


def _hand_over(
    app: App,
    unit: SerialUnit,
    src: str,
    dst: str,
    *,
    identifier: str | None = DIN,
    received_identifier: str | None = DIN_TYPED,
    patient: str | None = None,
) -> HandOver:
    app.clock.advance(600)  # type: ignore[attr-defined]  # each hand-over takes its time
    with app.uow() as uow:
        row = app.custody.hand_over(
            uow,
            fh.actor(app, "pharmacist"),
            scan=ch.scan(unit),
            from_step=src,
            to_step=dst,
            received_scan=ch.scan(unit),
            identifier=identifier,
            received_identifier=received_identifier,
            patient=patient,
        )
        uow.session.expunge(row)
        return row


def _refused(
    app: App, unit: SerialUnit, src: str, dst: str, code: str, field: str, **kw: Any
) -> Refused:
    with pytest.raises(Refused) as caught:
        _hand_over(app, unit, src, dst, **kw)
    assert (caught.value.code, caught.value.field) == (code, field), caught.value.message
    fh.assert_refusal_audited(app, caught.value, "hand_over", ch.scan(unit)[:64])
    return caught.value


def _holds(app: App, unit: SerialUnit) -> list[UnitHold]:
    with app.uow() as uow:
        rows = list(uow.session.scalars(select(UnitHold).where(UnitHold.unit_id == unit.id)))
        for r in rows:
            uow.session.expunge(r)
        return rows


def _resume(app: App, unit: SerialUnit) -> None:
    [hold] = [h for h in _holds(app, unit) if h.decision is None]
    with app.uow() as uow:
        app.custody.judge_hold(
            uow, fh.actor(app, "qp"), hold_id=hold.id, decision="resume", reason="checked again"
        )


def _to(app: App, unit: SerialUnit, at: int) -> None:
    """Hand the unit along the chain up to step `at`, right each time."""
    for i in range(at):
        patient = ch.patient_ref(app, unit) if CHAIN[i + 1] == "infusion" else None
        _hand_over(app, unit, CHAIN[i], CHAIN[i + 1], patient=patient)


def _biz_steps(app: App, unit: SerialUnit) -> list[str]:
    with app.uow() as uow:
        events = app.custody.epcis.query(
            uow, epc=f"https://id.gs1.org/01/{unit.gtin}/21/{unit.serial}"
        )
    return [str(e["bizStep"]).rsplit("/", 1)[-1] for e in events]


@pytest.mark.parametrize("at", [0, 1, 2])
@pytest.mark.parametrize(
    ("wrong", "field"),
    [
        ({"identifier": OTHER_DIN}, "identifier"),
        ({"received_identifier": OTHER_DIN}, "received_identifier"),
        ({"received_identifier": WRONG_K}, "received_identifier"),
        ({"identifier": "=G12341765432171"}, "identifier"),  # Type 3 flags 71: 70 is right
    ],
)
def test_a_wrong_din_or_check_character_at_any_hand_over_holds_the_unit(
    dinned: App, din_unit: SerialUnit, at: int, wrong: dict[str, str], field: str
) -> None:
    unit = din_unit
    _to(dinned, unit, at)
    patient = ch.patient_ref(dinned, unit) if CHAIN[at + 1] == "infusion" else None
    exc = _refused(
        dinned, unit, CHAIN[at], CHAIN[at + 1], "identity_mismatch", field,
        patient=patient, **wrong,
    )  # fmt: skip
    assert "G1234 17 654321 [A]" in exc.message or "not a valid DIN" in exc.message
    [hold] = _holds(dinned, unit)
    assert hold.source == "hand_over" and hold.decision is None and field in hold.reason
    # the chain stops: the right hand-over is refused while held, then goes on when judged
    _refused(dinned, unit, CHAIN[at], CHAIN[at + 1], "held", "scan", patient=patient)
    _resume(dinned, unit)
    row = _hand_over(dinned, unit, CHAIN[at], CHAIN[at + 1], patient=patient)
    assert row.outcome == "accepted" and row.giver_identifier == DIN
    assert row.receiver_identifier == DIN_TYPED


def test_the_bedside_hand_over_checks_the_patient(dinned: App, din_unit: SerialUnit) -> None:
    unit = din_unit
    _to(dinned, unit, 2)
    # no patient: bad input, nothing held
    with pytest.raises(ValidationFailed) as missing:
        _hand_over(dinned, unit, "cryostore", "infusion")
    assert missing.value.field == "patient"
    assert _holds(dinned, unit) == []
    # another patient: refused, held
    _refused(dinned, unit, "cryostore", "infusion", "wrong_patient", "patient", patient="PT-NOPE")
    assert len(_holds(dinned, unit)) == 1
    _resume(dinned, unit)
    row = _hand_over(dinned, unit, "cryostore", "infusion", patient=ch.patient_ref(dinned, unit))
    assert row.outcome == "accepted" and row.patient_checked is True


def test_the_identifier_is_required_on_both_sides(dinned: App, din_unit: SerialUnit) -> None:
    unit = din_unit
    for kw, field in (
        ({"identifier": None}, "identifier"),
        ({"received_identifier": ""}, "received_identifier"),
    ):
        with pytest.raises(ValidationFailed) as caught:
            _hand_over(dinned, unit, "collection", "micro_factory", **kw)
        assert caught.value.field == field
    assert _holds(dinned, unit) == []


def test_the_din_bound_at_the_collection_is_the_chain_s(dinned: App) -> None:
    DinLabels.named = None  # the prescription named no DIN
    unit = _unit(dinned)
    # nothing bound: the chain has no identity to check against, and stops
    exc = _refused(dinned, unit, "collection", "micro_factory", "identity_mismatch", "identifier")
    assert "no chain identifier is bound" in exc.message
    _resume(dinned, unit)
    # bound at the collection (scheduling keeps it): A9998 18 123456
    with dinned.uow() as uow:
        order = dinned.orders.get(uow, unit.order_id)
        dinned.scheduling.collections.collected(
            uow, fh.actor(dinned, "clinician"), order, dinned.clock.now(), "=A99981812345600",
            reason="collected",
        )  # fmt: skip
        uow.commit()
    _refused(dinned, unit, "collection", "micro_factory", "identity_mismatch", "identifier")
    _resume(dinned, unit)
    row = _hand_over(
        dinned, unit, "collection", "micro_factory", identifier=OTHER_DIN,
        received_identifier="=A99981812345600",
    )  # fmt: skip
    assert row.outcome == "accepted"


def _din_lines(app: App, unit: SerialUnit) -> list[str]:
    with app.uow() as uow:
        (label,) = app.custody.labels(uow, unit.id)
    return [line for line in label.details if line.startswith("DIN ")]


def test_the_label_prints_the_din_the_hand_overs_check(dinned: App, din_unit: SerialUnit) -> None:
    # the prescription's DIN (ST-001 Appendix A: G1234 17 654321, K = A)
    unit = din_unit
    assert _din_lines(dinned, unit) == ["DIN G1234 17 654321 [A]"]
    # a prescription without one: no DIN on the label until the collection binds one, then the
    # bound DIN (ST-001 §7.5.1.1: A9998 18 123456, K = N), the one every hand-over checks
    DinLabels.named = None
    unit = _unit(dinned)
    assert _din_lines(dinned, unit) == []
    with dinned.uow() as uow:
        order = dinned.orders.get(uow, unit.order_id)
        dinned.scheduling.collections.collected(
            uow, fh.actor(dinned, "clinician"), order, dinned.clock.now(), "=A99981812345600",
            reason="collected",
        )  # fmt: skip
        uow.commit()
    assert _din_lines(dinned, unit) == ["DIN A9998 18 123456 [N]"]


def test_every_hand_over_is_an_epcis_object_event(dinned: App, din_unit: SerialUnit) -> None:
    unit = din_unit
    before = _biz_steps(dinned, unit)
    _refused(
        dinned, unit, "collection", "micro_factory", "identity_mismatch", "identifier",
        identifier=OTHER_DIN,
    )  # fmt: skip
    _resume(dinned, unit)
    _to(dinned, unit, 3)
    after = _biz_steps(dinned, unit)
    assert after[: len(before)] == before
    assert after[len(before) :] == ["holding", "receiving", "storing", "picking"]
    with dinned.uow() as uow:
        [event] = dinned.custody.epcis.query(uow, biz_step="picking")
    assert event["type"] == "ObjectEvent" and event["action"] == "OBSERVE"
    assert event["epcList"] == [f"https://id.gs1.org/01/{unit.gtin}/21/{unit.serial}"]
    assert str(event["disposition"]).endswith("in_progress")
    assert str(event["readPoint"]["id"]).startswith("urn:epc:id:sgln:")
    # the events are chained in the site's ledger: it still verifies
    with dinned.uow() as uow:
        assert dinned.custody.ledger is not None
        report = dinned.custody.ledger.verify(uow)
    assert report.ok, report


def test_a_family_without_a_chain_identifier_hands_over_as_before(seeded: App) -> None:
    unit = _unit(seeded)  # solid_dose: no chain, no identifier, no patient asked
    for src, dst in itertools.pairwise(CHAIN):
        row = _hand_over(seeded, unit, src, dst, identifier=None, received_identifier=None)
        assert row.outcome == "accepted" and row.patient_checked is False


def test_two_hand_overs_from_the_same_step_at_once_one_wins(
    dinned: App, din_unit: SerialUnit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two people hand the same bag on from the collection at once: each read the chain before
    the other's hand-over landed (check-then-insert), so both were accepted and the chain
    forked. The hand-over now bumps the unit's row version, so the second is a lost race:
    refused (concurrent_change) on record, nothing of it kept, one accepted hand-over."""
    from nearfab.common.errors import Conflict
    from nearfab.custody.services.handovers import HandOvers

    app = dinned
    unit = din_unit
    real = HandOvers.hand_overs
    raced = {"done": False}

    def read_before_the_other_lands(self: HandOvers, uow: Any, unit_id: str) -> Any:
        if not raced["done"]:  # the other side's whole hand-over lands after this read
            raced["done"] = True
            _hand_over(app, unit, CHAIN[0], CHAIN[1])
            return []
        return real(self, uow, unit_id)

    monkeypatch.setattr(HandOvers, "hand_overs", read_before_the_other_lands)
    with pytest.raises(Conflict) as caught:
        _hand_over(app, unit, CHAIN[0], CHAIN[1])
    monkeypatch.undo()
    assert caught.value.code == "concurrent_change"
    fh.assert_refusal_audited(app, caught.value, "hand_over", ch.scan(unit)[:64])
    with app.uow() as uow:
        rows = list(uow.session.scalars(select(HandOver).where(HandOver.unit_id == unit.id)))
    assert [(r.from_step, r.to_step, r.outcome) for r in rows] == [(CHAIN[0], CHAIN[1], "accepted")]
    assert _biz_steps(app, unit).count("receiving") == 1


def test_the_making_site_cannot_check_the_patient_at_the_bedside(
    dinned: App, din_unit: SerialUnit
) -> None:
    """A bag made at GSTT-PH for an order of MAN-PH: the bedside check of MAN-PH's patient is
    MAN-PH's. The making site's staff may hand the bag along the chain, but trying the bedside
    hand-over with a patient identifier is refused before any look-up (403 other_site, field
    patient; it would answer yes/no to another site's patients), on record, nothing held."""
    from nearfab.common.errors import Forbidden
    from nearfab.identity import AuditEntry
    from nearfab.orders import Order

    app = dinned
    unit = din_unit
    _to(app, unit, 2)
    with app.uow() as uow:
        order = uow.session.get(Order, unit.order_id)
        assert order is not None
        order.site_id = app.network.get_site(uow, "MAN-PH").id
        uow.commit()
    fh.create_user(app, "pharmacist-ordering", ["pharmacist"], "MAN-PH")
    with app.uow() as uow:
        start = uow.session.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()))

    def bedside(username: str) -> HandOver:
        with app.uow() as uow:
            row = app.custody.hand_over(
                uow,
                fh.actor(app, username),
                scan=ch.scan(unit),
                from_step="cryostore",
                to_step="infusion",
                received_scan=ch.scan(unit),
                identifier=DIN,
                received_identifier=DIN_TYPED,
                patient=ch.patient_ref(app, unit),
            )
            uow.session.expunge(row)
            return row

    with pytest.raises(Forbidden) as caught:
        bedside("pharmacist")  # GSTT-PH: made the bag
    assert (caught.value.code, caught.value.field) == ("other_site", "patient")
    fh.assert_refusal_audited(app, caught.value, "hand_over", ch.scan(unit)[:64])
    assert _holds(app, unit) == []
    with app.uow() as uow:
        actions = uow.session.scalars(select(AuditEntry.action).where(AuditEntry.seq > start))
        assert "identify_patient" not in list(actions)
    row = bedside("pharmacist-ordering")
    assert row.outcome == "accepted" and row.patient_checked is True
