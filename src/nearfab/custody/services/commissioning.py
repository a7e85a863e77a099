"""Commissioning: every pack of a made batch gets its identity under its family's rule (GS1:
GTIN, a random serial, batch, expiry), quarantined until the QP decides; EPCIS records the
transformation of material into packs and their commissioning."""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import TYPE_CHECKING

from nearfab.common.ids import new_id
from nearfab.custody.enums import BizStep, Disposition, UnitStatus
from nearfab.custody.logic import epcis as ev
from nearfab.custody.models import SerialUnit
from nearfab.custody.services.packs import Packs
from nearfab.identity import Actor, AuditAction, audit
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.production import BatchRecord


class Commissioning:
    def __init__(self, packs: Packs) -> None:
        self._packs = packs

    def commission(self, uow: UnitOfWork, actor: Actor, batch_id: str) -> list[SerialUnit]:
        """Give every pack of a made batch its GS1 identity (quarantined until release)."""
        batch = self._packs.production.get(uow, batch_id)
        existing = self._packs.units_of_batch(uow, batch.id)
        if existing:
            return existing
        mf = self._packs.master_files.get(uow, batch.master_file_id)
        order = self._packs.orders.get(uow, batch.order_id)
        kit = self._packs.labels_kit(mf)
        made = batch.units_made or 0
        packs = max(1, math.ceil(made / mf.units_per_pack))
        finished = batch.finished_at or uow.clock.now()
        expiry = (finished + timedelta(days=mf.shelf_life_days)).date()
        units = []
        for index in range(packs):
            quantity = min(mf.units_per_pack, made - index * mf.units_per_pack)
            ident = kit.new_identity(mf.gtin, batch.batch_number, expiry)
            unit = SerialUnit(
                id=new_id("unit"),
                batch_id=batch.id,
                order_id=order.id,
                patient_id=order.patient_id,
                pack_index=index + 1,
                quantity=quantity,
                gtin=ident.gtin,
                serial=ident.serial,
                batch_number=ident.batch,
                expiry=ident.expiry,
                status=UnitStatus.QUARANTINE.value,
                created_at=uow.clock.now(),
            )
            uow.session.add(unit)
            uow.flush()
            audit(
                uow,
                actor,
                AuditAction.CREATE,
                "unit",
                unit.id,
                new={
                    "element_string": ident.element_string(),
                    "batch_id": batch.id,
                    "quantity": quantity,
                    "status": unit.status,
                },
                site_id=batch.site_id,
            )
            units.append(unit)
        self._record_commissioning(uow, batch, units, expiry)
        self._packs.production.add_step(
            uow, actor, batch, "serialised", {"packs": packs, "expiry": expiry.isoformat()}
        )
        uow.commit()
        return units

    def _record_commissioning(
        self, uow: UnitOfWork, batch: BatchRecord, units: list[SerialUnit], expiry: date
    ) -> None:
        when = batch.finished_at or uow.clock.now()
        where = self._packs.epcis.sgln(uow, batch.site_id)
        epcs = [ev.sgtin_dl(u.gtin, u.serial) for u in units]
        ilmd = {
            "cbvmda:lotNumber": batch.batch_number,
            "cbvmda:itemExpirationDate": expiry.isoformat(),
        }
        batch_ref = [("prodorder", ev.batch_uri(batch.batch_number))]
        made = ev.transformation_event(
            when=when,
            inputs=[
                (ev.lot_uri(batch.material_lot_number), round(batch.material_used_g, 6), "GRM")
            ],
            outputs=epcs,
            transformation_id=ev.batch_uri(batch.batch_number),
            biz_step=BizStep.CREATING_CLASS_INSTANCE,
            disposition=Disposition.ACTIVE,
            read_point=where,
            biz_location=where,
            ilmd=ilmd,
            biz_transactions=batch_ref,
        )
        commissioned = ev.object_event(
            when=when,
            epcs=epcs,
            action="ADD",
            biz_step=BizStep.COMMISSIONING,
            disposition=Disposition.ACTIVE,
            read_point=where,
            biz_location=where,
            ilmd=ilmd,
            biz_transactions=batch_ref,
        )
        self._packs.epcis.record(uow, made, site_id=batch.site_id)
        self._packs.epcis.record(uow, commissioned, site_id=batch.site_id)
