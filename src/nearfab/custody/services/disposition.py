"""Disposition: packs follow the QP's decision (released or rejected), and a release puts the
signed facts of every pack into the custody ledger (what verification checks them against)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from nearfab.custody.enums import AlertKind, BizStep, Disposition, LedgerKind, UnitStatus
from nearfab.custody.logic import epcis as ev
from nearfab.custody.models import SerialUnit
from nearfab.custody.services.packs import Packs
from nearfab.custody.services.signedfacts import pack_facts, release_ref
from nearfab.identity import Actor
from nearfab.identity.reads import signature
from nearfab.production.reads import batch_view
from nearfab.uow import UnitOfWork


class Dispositions:
    def __init__(self, packs: Packs) -> None:
        self._packs = packs

    def apply_disposition(
        self, uow: UnitOfWork, actor: Actor, batch_id: str, decision: str
    ) -> list[SerialUnit]:
        """Follow the QP's decision: packs become released or rejected."""
        target = UnitStatus.RELEASED if decision == "release" else UnitStatus.REJECTED
        units = self._packs.units_of_batch(uow, batch_id)
        if decision == "release":
            review = self._packs.quality.review_for(uow, batch_id)
            if (
                review is None
                or review.decision != "release"
                or self._packs.quality.signature_valid(uow, review) is not True
            ):
                # the record changed after the QP signed: the packs stay in quarantine
                return units
        moved = [u for u in units if u.status == UnitStatus.QUARANTINE.value]
        if decision == "release":
            # a pack whose row no longer agrees with the signed batch record is not released:
            # it stays in quarantine with an integrity alert for QA
            unsound = self._unsound_packs(uow, batch_id, moved)
            for unit in moved:
                if unit.serial in unsound:
                    why = f"pack {unit.serial}: {unsound[unit.serial]}; not released"
                    self._packs.raise_alert(
                        uow,
                        actor,
                        AlertKind.INTEGRITY_FAILURE,
                        f"(01){unit.gtin}(21){unit.serial}",
                        why,
                        unit=unit,
                    )
            moved = [u for u in moved if u.serial not in unsound]
        for unit in moved:
            self._packs.transition(uow, actor, unit, target, reason=f"batch {decision}d by QP")
        if moved:
            self._record_disposition(uow, batch_id, decision, moved)
        uow.commit()
        return units

    def lagging_dispositions(self, uow: UnitOfWork) -> list[tuple[str, str]]:
        """(batch id, QP decision) of dispositioned batches whose packs are still quarantined,
        e.g. because the reaction to the decision failed; the runner's sweep completes them."""
        batch = batch_view()
        rows = uow.session.execute(
            select(batch.c.id, batch.c.status)
            .join(SerialUnit, SerialUnit.batch_id == batch.c.id)
            .where(
                SerialUnit.status == UnitStatus.QUARANTINE.value,
                batch.c.status.in_(("released", "rejected")),
            )
            .distinct()
        )
        return [(b, "release" if s == "released" else "reject") for b, s in rows]

    def _unsound_packs(
        self, uow: UnitOfWork, batch_id: str, units: list[SerialUnit]
    ) -> dict[str, str]:
        """serial -> what differs between a pack's row and the facts it was made from: the
        QP-signed batch record (order, lot, finish time), the order's patient and the master
        file's GTIN and shelf life."""
        batch = self._packs.production.get(uow, batch_id)
        order = self._packs.orders.get(uow, batch.order_id)
        mf = self._packs.master_files.get(uow, batch.master_file_id)
        product_code = self._packs.labels_kit(mf).product_code(mf.gtin)
        expiry = (
            (batch.finished_at + timedelta(days=mf.shelf_life_days)).date()
            if batch.finished_at is not None
            else None
        )
        out: dict[str, str] = {}
        for u in units:
            wrong = [
                name
                for name, ok in (
                    ("gtin", u.gtin == product_code),
                    ("lot", u.batch_number == batch.batch_number),
                    ("expiry", expiry is None or u.expiry == expiry),
                    ("patient_id", u.patient_id == order.patient_id),
                    ("order_id", u.order_id == batch.order_id),
                )
                if not ok
            ]
            if wrong:
                out[u.serial] = f"{', '.join(wrong)} differ from the batch record"
        return out

    def _record_disposition(
        self, uow: UnitOfWork, batch_id: str, decision: str, units: list[SerialUnit]
    ) -> None:
        batch = self._packs.production.get(uow, batch_id)
        review = self._packs.quality.review_for(uow, batch_id)
        where = self._packs.epcis.sgln(uow, batch.site_id)
        event = ev.object_event(
            when=uow.clock.now(),
            epcs=[ev.sgtin_dl(u.gtin, u.serial) for u in units],
            action="OBSERVE",
            biz_step=BizStep.INSPECTING,
            disposition=(
                Disposition.SELLABLE_ACCESSIBLE
                if decision == "release"
                else Disposition.NON_SELLABLE_OTHER
            ),
            read_point=where,
            biz_location=where,
            biz_transactions=[("prodorder", ev.batch_uri(batch.batch_number))],
        )
        self._packs.epcis.record(uow, event, site_id=batch.site_id)
        if self._packs.ledger is not None:
            sig = (
                signature(uow.session, review.signature_id)
                if review is not None and review.signature_id
                else None
            )
            # the signed facts a dispense is checked against (custody/services/signedfacts.py):
            # the decision, the QP signature's own hashes, and every pack's identity and patient
            self._packs.ledger.append(
                uow,
                batch.site_id,
                LedgerKind.RELEASE,
                release_ref(batch.id),
                {
                    "batch_id": batch.id,
                    "batch_number": batch.batch_number,
                    "decision": decision,
                    "decided_by": review.decided_by if review else None,
                    "signature_id": review.signature_id if review else None,
                    "signature_hash": sig.signature_hash if sig is not None else None,
                    "signed_record_hash": sig.record_hash if sig is not None else None,
                    "record_hash": review.record_hash if review else None,
                    "units": [u.serial for u in units],
                    "packs": [pack_facts(u) for u in units],
                },
            )
