"""Custody use cases on a database (SQLite and PostgreSQL): serialised packs, labels, and the
checks at dispense (spec point 11)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import DomainError, Forbidden, Refused, ValidationFailed
from nearfab.custody import (
    Dispense,
    DispenseResult,
    SerialUnit,
    UnitIdentifier,
    decode_datamatrix,
    make_identifier,
    new_serial,
    parse_scan,
    render_label,
)
from nearfab.custody.gs1 import SERIAL_ALPHABET
from nearfab.identity import AuditEntry

seeded = fh.seeded  # the demo network, seeded once and copied for each test

GTIN = "09506000134352"  # the hydrocortisone master file's GTIN


def _units(app: App, batch_id: str) -> list[SerialUnit]:
    with app.uow() as uow:
        units = app.custody.units_of_batch(uow, batch_id)
        for unit in units:
            uow.session.expunge(unit)
        return units


def _ident(unit: SerialUnit) -> UnitIdentifier:
    return make_identifier(unit.gtin, unit.serial, unit.batch_number, unit.expiry)


def _scan(unit: SerialUnit) -> str:
    """What a scanner reports for the pack's GS1 DataMatrix."""
    return "]d2" + _ident(unit).datamatrix_data()


def _patient_ref(app: App, order_id: str) -> str:
    with app.uow() as uow:
        return app.orders.patient(uow, app.orders.get(uow, order_id).patient_id).ref


def _dispense(app: App, scan: str, patient_ref: str, username: str = "pharmacist") -> Any:
    with app.uow() as uow:
        return app.custody.dispense(
            uow, fh.actor(app, username), scan=scan, patient_ref=patient_ref
        )


def _refused(
    app: App, scan: str, patient_ref: str, code: str, error: type[DomainError] = Refused
) -> DomainError:
    """Dispense is refused with `code`, and the refusal is committed to the audit trail."""
    with pytest.raises(error) as caught:
        _dispense(app, scan, patient_ref)
    exc = caught.value
    assert exc.code == code, exc.message
    row = fh.assert_refusal_audited(app, exc, "dispense", scan[:64])
    assert row.actor_name == "Phil Harmon"
    assert row.site_id == fh.site_id(app, "GSTT-PH")
    return exc


def test_packs_get_a_gs1_identity_and_labels_that_scan_back(seeded: App) -> None:
    # 11 days at 3 a day: 33 tablets, two packs of at most 30
    batch_id = fh.make_batch(seeded, dose_mg=2.5, days=11)
    batch = fh.batch(seeded, batch_id)
    units = _units(seeded, batch_id)
    assert [(u.pack_index, u.quantity) for u in units] == [(1, 30), (2, 3)]
    assert batch.finished_at is not None
    expiry = (batch.finished_at + timedelta(days=90)).date()  # the master file's shelf life
    with seeded.uow() as uow:
        patient_id = seeded.orders.get(uow, batch.order_id).patient_id
    for unit in units:
        assert unit.gtin == GTIN and len(unit.gtin) == 14 and unit.gtin.isdigit()
        assert 8 <= len(unit.serial) <= 20 and set(unit.serial) <= set(SERIAL_ALPHABET)
        assert unit.batch_number == batch.batch_number
        assert unit.expiry == expiry
        assert (unit.status, unit.order_id, unit.patient_id) == (
            "quarantine",
            batch.order_id,
            patient_id,
        )
        assert _ident(unit).element_string() == (
            f"(01){GTIN}(17){expiry:%y%m%d}(10){batch.batch_number}(21){unit.serial}"
        )
    with seeded.uow() as uow:
        commissioned = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_type == "unit", AuditEntry.action == "create"
            )
        ).all()
    assert sorted(a.new["element_string"] for a in commissioned if a.new) == sorted(
        _ident(u).element_string() for u in units
    )
    other = _units(seeded, fh.make_batch(seeded))
    serials = [u.serial for u in units + other]
    assert len(set(serials)) == len(serials) == 3

    for ref in (batch_id, units[0].id):  # a quarantined pack has no label yet
        with seeded.uow() as uow, pytest.raises(Refused) as caught:
            seeded.custody.labels(uow, ref)
        assert caught.value.code == "not_released"
        assert units[0].serial in caught.value.message

    fh.release(seeded, batch_id)
    with seeded.uow() as uow:
        labels = seeded.custody.labels(uow, batch_id)
        assert [lbl.identifier for lbl in seeded.custody.labels(uow, units[1].id)] == [
            _ident(units[1])
        ]
    patient_ref = _patient_ref(seeded, batch.order_id)
    assert [lbl.identifier for lbl in labels] == [_ident(u) for u in units]
    for label in labels:
        assert label.patient_ref == patient_ref
        assert label.product_name == "Hydrocortisone 2.5 mg printlet"
        assert label.storage == "Store below 25 °C in the original container. Keep dry."
        png = render_label(label, "png")
        assert png.startswith(b"\x89PNG")
        scanned = decode_datamatrix(png)
        assert scanned.startswith("]d2")
        assert parse_scan(scanned) == label.identifier
    assert render_label(labels[0], "pdf").startswith(b"%PDF")
    # docs/custody.md, Labels: "<dose> mg per tablet, <n> a day; pack <i>, <n> tablets"
    assert [lbl.dose_text for lbl in labels] == [
        "2.5 mg per tablet, 3 a day; pack 1, 30 tablets",
        "2.5 mg per tablet, 3 a day; pack 2, 3 tablets",
    ]


def test_dispense_checks_every_pack_and_completes_the_order(seeded: App) -> None:
    batch_id = fh.make_batch(seeded, days=11)
    batch = fh.batch(seeded, batch_id)
    first, second = _units(seeded, batch_id)
    patient = _patient_ref(seeded, batch.order_id)
    someone_else = _patient_ref(seeded, fh.submit(seeded))

    exc = _refused(seeded, _scan(first), patient, "not_released")
    assert exc.field == "scan"
    assert "quarantine" in exc.message
    for username in ("operator", "clinician", "qp"):
        with pytest.raises(Forbidden):
            _dispense(seeded, _scan(first), patient, username)

    fh.release(seeded, batch_id)
    for garbage in ("hello world", "(01)09506000134353(21)X", "]d2"):
        exc = _refused(seeded, garbage, patient, "validation_failed", ValidationFailed)
        assert exc.field == "scan"
    unknown = make_identifier(GTIN, new_serial(), batch.batch_number, first.expiry)
    exc = _refused(seeded, unknown.element_string(), patient, "unknown_unit")
    assert unknown.serial in exc.message
    for forged in (
        make_identifier(GTIN, first.serial, "HCPR999999XXXXXX", first.expiry),
        make_identifier(GTIN, first.serial, first.batch_number, first.expiry + timedelta(days=30)),
    ):
        _refused(seeded, forged.digital_link(), patient, "label_mismatch")
    exc = _refused(seeded, _scan(first), someone_else, "wrong_patient")
    assert exc.field == "patient"
    assert fh.count(seeded, Dispense) == 0
    assert {u.status for u in _units(seeded, batch_id)} == {"released"}

    pharmacist = fh.actor(seeded, "pharmacist")
    result: DispenseResult = _dispense(seeded, _scan(first), f" {patient} ")
    assert result.order_complete is False
    assert (result.unit.serial, result.unit.status) == (first.serial, "dispensed")
    assert result.dispense.dispensed_by == pharmacist.user_id
    assert result.dispense.site_id == fh.site_id(seeded, "GSTT-PH")
    assert fh.order_status(seeded, batch.order_id) == "released"

    exc = _refused(seeded, _scan(first), patient, "already_dispensed")
    assert first.serial in exc.message

    result = _dispense(seeded, _ident(second).element_string(), patient)
    assert result.order_complete is True
    assert fh.order_status(seeded, batch.order_id) == "dispensed"
    assert {u.status for u in _units(seeded, batch_id)} == {"dispensed"}
    assert fh.count(seeded, Dispense) == 2


def test_dispense_refuses_rejected_and_expired_packs(seeded: App, clock: ManualClock) -> None:
    rejected = fh.make_batch(seeded)
    fh.reject(seeded, rejected)
    (pack,) = _units(seeded, rejected)
    exc = _refused(seeded, _scan(pack), _patient_ref(seeded, pack.order_id), "rejected")
    assert "rejected batch" in exc.message

    released = fh.make_batch(seeded, days=11)
    fh.release(seeded, released)
    first, second = _units(seeded, released)
    patient = _patient_ref(seeded, first.order_id)
    # on its expiry date a pack may still be handed over; the day after, it may not
    clock.advance((first.expiry - clock.now().date()).days * 86400)
    assert clock.now().date() == first.expiry
    _dispense(seeded, _scan(first), patient)
    clock.advance(86400)
    exc = _refused(seeded, _scan(second), patient, "expired")
    assert f"expired on {second.expiry}" in exc.message
    assert [u.status for u in _units(seeded, released)] == ["dispensed", "released"]
    assert fh.order_status(seeded, first.order_id) == "released"


def test_dispense_refuses_a_recalled_pack(seeded: App) -> None:
    released = fh.make_batch(seeded, days=10)
    fh.release(seeded, released)
    (pack,) = _units(seeded, released)
    fh.edit(seeded, SerialUnit, pack.id, status="recalled")  # recall itself comes with issue 4
    exc = _refused(seeded, _scan(pack), _patient_ref(seeded, pack.order_id), "recalled")
    assert "recalled" in exc.message
