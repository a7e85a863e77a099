"""A QP signs exactly the record that was evaluated and shown; packs leave quarantine only while
the record still matches the signature; concurrent writers cannot overwrite each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from nearfab.bootstrap import App, build_app
from nearfab.common.errors import Conflict, Refused
from nearfab.config import Settings
from nearfab.custody import SerialUnit
from nearfab.identity import AuditEntry, KeyMismatch
from nearfab.orders import Order
from nearfab.production import BatchRecord

from .. import flow_helpers as fh
from ..conftest import TEST_PASSWORD

seeded = fh.seeded


def _decide(app: App, batch_id: str, **kw: object) -> None:
    with app.uow() as uow:
        app.quality.decide(
            uow,
            fh.actor(app, "qp"),
            batch_id,
            decision="release",
            password=TEST_PASSWORD,
            meaning="QP release",
            **kw,
        )  # type: ignore[arg-type]


def _halve_some_masses(app: App, batch_id: str) -> None:
    masses = list((fh.batch(app, batch_id).measurements or {})["unit_masses_mg"])
    changed = [m * 0.6 for m in masses[:5]] + masses[5:]
    fh.edit(app, BatchRecord, batch_id, measurements={"unit_masses_mg": changed})


def test_a_record_changed_after_evaluation_cannot_be_released(seeded: App) -> None:
    batch_id = fh.make_batch(seeded, days=10)
    _halve_some_masses(seeded, batch_id)
    with pytest.raises(Refused) as caught:
        _decide(seeded, batch_id)
    assert caught.value.code == "record_changed"
    assert fh.batch(seeded, batch_id).status == "completed"
    (row,) = fh.refusals(seeded, "batch", batch_id)
    assert "changed after the RTRT evaluation" in (row.reason or "")


def test_the_qp_signs_only_the_record_they_were_shown(seeded: App) -> None:
    batch_id = fh.make_batch(seeded, days=10)
    with pytest.raises(Refused) as caught:
        _decide(seeded, batch_id, record_hash="0" * 64)
    assert caught.value.code == "record_changed" and caught.value.field == "record_hash"
    with seeded.uow() as uow:
        batch = seeded.production.get(uow, batch_id)
        review = seeded.quality.review_for(uow, batch_id)
        assert review is not None
        shown = seeded.quality.shown_hash(uow, batch, review)
    _decide(seeded, batch_id, record_hash=shown)
    assert fh.batch(seeded, batch_id).status == "released"


def test_packs_of_a_record_changed_after_release_are_held(seeded: App) -> None:
    batch_id = fh.make_batch(seeded, days=10)
    fh.release(seeded, batch_id)
    with seeded.uow() as uow:
        (pack,) = seeded.custody.units_of_batch(uow, batch_id)
        assert seeded.custody.labels(uow, batch_id)  # fine while the record matches
    _halve_some_masses(seeded, batch_id)
    with seeded.uow() as uow, pytest.raises(Refused) as label_refused:
        seeded.custody.labels(uow, batch_id)
    assert label_refused.value.code == "record_changed"
    with seeded.uow() as uow:
        patient = seeded.orders.patient(uow, pack.patient_id).ref
    with seeded.uow() as uow, pytest.raises(Refused) as dispense_refused:
        seeded.custody.dispense(
            uow,
            fh.actor(seeded, "pharmacist"),
            patient_ref=patient,
            scan=f"(01){pack.gtin}(17){pack.expiry:%y%m%d}(10){pack.batch_number}(21){pack.serial}",
        )
    assert dispense_refused.value.code == "record_changed"
    with seeded.uow() as uow:
        assert seeded.custody.get_unit(uow, pack.id).status == "released"  # not dispensed


def test_a_lost_race_is_a_conflict_not_an_overwrite(seeded: App) -> None:
    order_id = fh.submit(seeded)
    clinician = fh.actor(seeded, "clinician")
    with pytest.raises(Conflict) as caught, seeded.uow() as slow:
        stale = slow.session.get(Order, order_id)
        assert stale is not None and stale.status == "designed"
        fh.schedule(seeded, order_id)  # another worker plans it meanwhile
        seeded.orders.cancel(slow, clinician, order_id, reason="duplicate prescription")
    assert caught.value.code == "concurrent_change"
    assert fh.order_status(seeded, order_id) == "scheduled"
    with seeded.uow() as uow:
        cancels = (
            uow.session.query(AuditEntry)
            .filter_by(entity_id=order_id, reason="duplicate prescription")
            .count()
        )
    assert cancels == 0  # the loser's audit row went with its change


def test_a_batch_is_serialised_once_even_if_two_workers_try(
    seeded: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = fh.make_batch(seeded, days=10)
    # a second worker that did not see the first one's packs
    monkeypatch.setattr(type(seeded.custody.packs), "units_of_batch", lambda self, uow, b: [])
    # the unit of work turns the unique-key clash into a Conflict as it closes
    with pytest.raises(Conflict), seeded.uow() as uow:
        seeded.custody.commission(uow, fh.actor(seeded, "admin"), batch_id)
    monkeypatch.undo()
    with seeded.uow() as uow:
        assert uow.session.query(SerialUnit).filter_by(batch_id=batch_id).count() == 1


def test_another_data_folders_keys_are_refused(seeded: App, tmp_path: Path) -> None:
    url = seeded.settings.resolved_database_url()
    with pytest.raises(KeyMismatch, match="copy the keys/ folder"):
        build_app(Settings(data_dir=tmp_path / "elsewhere", database_url=url), migrate=False)


def test_two_qps_deciding_at_once_one_wins_and_the_other_is_on_record(
    seeded: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = fh.make_batch(seeded, days=10)
    signatures = type(seeded.signatures)
    real_sign = signatures.sign
    raced = {"done": False}

    def sign_while_another_qp_decides(self: object, uow: object, actor: object, **kw: object):
        if not raced["done"]:  # the other QP's whole decision lands first
            raced["done"] = True
            fh.reject(seeded, batch_id, reason="unit masses out of specification")
        return real_sign(self, uow, actor, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(signatures, "sign", sign_while_another_qp_decides)
    with pytest.raises(Conflict) as caught:
        _decide(seeded, batch_id)
    assert caught.value.code == "concurrent_change"
    assert fh.batch(seeded, batch_id).status == "rejected"  # the first decision stands
    (row,) = fh.refusals(seeded, "batch", batch_id)
    assert row.new == {"code": "concurrent_change", "field": None}
    with seeded.uow() as uow:
        sigs = seeded.signatures.signatures_for(uow, "batch", batch_id)
    assert len(sigs) == 1  # the loser's signature went with its decision


def test_a_batch_from_a_recalled_lot_cannot_be_released(seeded: App) -> None:
    batch_id = fh.make_batch(seeded, days=10)
    lot_id = fh.batch(seeded, batch_id).material_lot_id
    with seeded.uow() as uow:
        seeded.materials.set_status(
            uow, fh.actor(seeded, "qp"), lot_id, "recalled", reason="supplier recall"
        )
    with pytest.raises(Refused) as caught:
        _decide(seeded, batch_id)
    assert caught.value.code == "lot_not_releasable"
    assert fh.batch(seeded, batch_id).status == "completed"
