"""Trace backward from a pack and forward from a lot, a machine and window, or a master-file
version; recall to the patient with its CSV and PDF report (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.common.errors import Forbidden, NotFound, ValidationFailed
from nearfab.custody import CustodyChain, RecallUnit

seeded = fh.seeded
flushed_verification_log = ch.flushed_verification_log


@pytest.fixture
def chain(seeded: App) -> CustodyChain:
    return ch.chain(seeded)


def test_backward_trace_names_everything_a_pack_came_from(seeded: App, chain: CustodyChain) -> None:
    batch_id, packs = ch.released_batch(seeded)
    ch.dispense(seeded, packs[0])
    batch = fh.batch(seeded, batch_id)
    with seeded.uow() as uow:
        found = chain.trace.unit(uow, fh.actor(seeded, "qp"), ch.scan(packs[0]))
    assert found["unit"]["serial"] == packs[0].serial
    assert found["material_lots"][0]["lot_number"] == batch.material_lot_number
    assert found["machine"]["id"] == batch.machine_id
    assert found["machine"]["firmware"] == batch.machine_firmware
    assert found["job_ticket"] == {"job_id": batch.job_id, "ticket_hash": batch.ticket_hash}
    assert found["batch_record"]["batch_number"] == batch.batch_number
    assert found["operator"]["id"] == batch.operator_id and found["operator"]["name"]
    assert found["site"]["id"] == batch.site_id and len(found["site"]["gln"]) == 13
    assert found["master_file"] == {
        "id": batch.master_file_id,
        "code": batch.master_file_code,
        "version": batch.master_file_version,
    }
    assert found["release"]["decision"] == "release" and found["release"]["signature_id"]
    assert found["dispense"] is not None
    assert found["patient_ref"] == ch.patient_ref(seeded, packs[0])
    assert {e["bizStep"] for e in found["events"]} >= {"commissioning", "dispensing"}
    with seeded.uow() as uow, pytest.raises(NotFound):
        chain.trace.unit(uow, fh.actor(seeded, "qp"), "unit_nope")
    with seeded.uow() as uow, pytest.raises(Forbidden):
        chain.trace.unit(uow, fh.actor(seeded, "operator"), packs[0].id)


def test_forward_traces_reach_every_pack_and_patient(seeded: App, chain: CustodyChain) -> None:
    first, packs1 = ch.released_batch(seeded)
    second, packs2 = ch.released_batch(seeded)
    b1, b2 = fh.batch(seeded, first), fh.batch(seeded, second)
    qp = fh.actor(seeded, "qp")
    with seeded.uow() as uow:
        by_lot = chain.trace.lot(uow, qp, b1.material_lot_number)
    expected = {u.serial for u in packs1} | (
        {u.serial for u in packs2} if b2.material_lot_number == b1.material_lot_number else set()
    )
    assert {u["serial"] for u in by_lot["units"]} == expected
    assert ch.patient_ref(seeded, packs1[0]) in by_lot["patients"]
    with seeded.uow() as uow:
        by_machine = chain.trace.machine(
            uow,
            qp,
            b1.machine_id,
            b1.started_at - timedelta(minutes=1),
            b1.started_at + timedelta(minutes=1),
        )
    assert packs1[0].serial in {u["serial"] for u in by_machine["units"]}
    with seeded.uow() as uow:
        by_mf = chain.trace.master_file(uow, qp, b1.master_file_code, b1.master_file_version)
    assert {u.serial for u in packs1} <= {u["serial"] for u in by_mf["units"]}
    with seeded.uow() as uow:
        assert chain.trace.master_file(uow, qp, b1.master_file_code, 999)["units"] == []
        with pytest.raises(ValidationFailed) as exc:
            chain.trace.machine(uow, qp, b1.machine_id, b1.started_at, b1.started_at)
        assert exc.value.field == "end"


def test_recall_marks_packs_and_reports_patients_by_site(seeded: App, chain: CustodyChain) -> None:
    batch_id, packs = ch.released_batch(seeded)
    ch.dispense(seeded, packs[0])
    lot = fh.batch(seeded, batch_id).material_lot_number
    qp = fh.actor(seeded, "qp")
    with seeded.uow() as uow, pytest.raises(ValidationFailed):
        chain.recalls.create(uow, qp, lot=lot, reason=" ")
    with seeded.uow() as uow, pytest.raises(NotFound):
        chain.recalls.create(uow, qp, lot="NO-SUCH-LOT", reason="x")
    with seeded.uow() as uow, pytest.raises(Forbidden):
        chain.recalls.create(uow, fh.actor(seeded, "pharmacist"), lot=lot, reason="x")
    with seeded.uow() as uow:
        recall = chain.recalls.create(uow, qp, lot=lot, reason="assay out of specification")
    assert all(u.status == "recalled" for u in ch.units(seeded, batch_id))
    assert fh.count(seeded, RecallUnit) >= len(packs)
    with seeded.uow() as uow:
        rows = list(csv.DictReader(io.StringIO(chain.recalls.report_csv(uow, qp, recall.id))))
        pdf = chain.recalls.report_pdf(uow, qp, recall.id)
        events = chain.epcis.query(uow, disposition="recalled")
        assert chain.ledger.verify(uow).ok
    mine = [r for r in rows if r["batch"] == packs[0].batch_number]
    assert {r["serial"] for r in mine} == {u.serial for u in packs}
    dispensed = {r["serial"]: r["dispensed"] for r in mine}
    assert dispensed[packs[0].serial] == "yes"
    assert all(r["patient_ref"].startswith("PT-") and r["site"] for r in rows)
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000
    assert events and events[0]["bizStep"] == "holding"
