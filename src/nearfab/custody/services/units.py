"""Custody use cases: serialise packs, labels, and the check at dispense."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm.attributes import flag_modified

from nearfab.common.errors import DomainError, NotFound, Refused
from nearfab.common.ids import new_id
from nearfab.custody.enums import UNIT_TRANSITIONS, UnitStatus
from nearfab.custody.gs1 import make_identifier, new_serial, parse_scan
from nearfab.custody.labels import LabelContent
from nearfab.custody.models import Dispense, SerialUnit
from nearfab.identity import (
    Actor,
    AuditAction,
    Role,
    audit,
    audited_transition,
    refuse,
    require_role,
)
from nearfab.masterfiles import MasterFileService
from nearfab.orders import OrderService, OrderStatus
from nearfab.production import BatchRecord, ProductionService
from nearfab.quality import QualityService
from nearfab.uow import UnitOfWork


@dataclass(frozen=True)
class DispenseResult:
    unit: SerialUnit
    dispense: Dispense
    order_complete: bool


class CustodyService:
    def __init__(
        self,
        production: ProductionService,
        master_files: MasterFileService,
        orders: OrderService,
        quality: QualityService,
    ) -> None:
        self._production = production
        self._master_files = master_files
        self._orders = orders
        self._quality = quality

    def _check_release_signature(self, uow: UnitOfWork, unit: SerialUnit, field: str) -> None:
        """A pack leaves quarantine only while its batch record matches the QP's signature."""
        review = self._quality.review_for(uow, unit.batch_id)
        if review is None or self._quality.signature_valid(uow, review) is not True:
            raise Refused(
                f"pack {unit.serial}: its batch record no longer matches the QP's release "
                "signature; hold it and investigate",
                field=field,
                code="record_changed",
            )

    def commission(self, uow: UnitOfWork, actor: Actor, batch_id: str) -> list[SerialUnit]:
        """Give every pack of a made batch its GS1 identity (quarantined until release)."""
        batch = self._production.get(uow, batch_id)
        existing = self.units_of_batch(uow, batch.id)
        if existing:
            return existing
        mf = self._master_files.get(uow, batch.master_file_id)
        order = self._orders.get(uow, batch.order_id)
        made = len(batch.unit_masses_mg or [])
        packs = max(1, math.ceil(made / mf.units_per_pack))
        finished = batch.finished_at or uow.clock.now()
        expiry = (finished + timedelta(days=mf.shelf_life_days)).date()
        units = []
        for index in range(packs):
            tablets = min(mf.units_per_pack, made - index * mf.units_per_pack)
            ident = make_identifier(mf.gtin, new_serial(), batch.batch_number, expiry)
            unit = SerialUnit(
                id=new_id("unit"),
                batch_id=batch.id,
                order_id=order.id,
                patient_id=order.patient_id,
                pack_index=index + 1,
                tablets=tablets,
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
                    "tablets": tablets,
                    "status": unit.status,
                },
                site_id=batch.site_id,
            )
            units.append(unit)
        self._production.add_step(
            uow, actor, batch, "serialised", {"packs": packs, "expiry": expiry.isoformat()}
        )
        uow.commit()
        return units

    def apply_disposition(
        self, uow: UnitOfWork, actor: Actor, batch_id: str, decision: str
    ) -> list[SerialUnit]:
        """Follow the QP's decision: packs become released or rejected."""
        target = UnitStatus.RELEASED if decision == "release" else UnitStatus.REJECTED
        units = self.units_of_batch(uow, batch_id)
        if decision == "release":
            review = self._quality.review_for(uow, batch_id)
            if review is None or self._quality.signature_valid(uow, review) is not True:
                # the record changed after the QP signed: the packs stay in quarantine
                return units
        for unit in units:
            self._transition(uow, actor, unit, target, reason=f"batch {decision}d by QP")
        uow.commit()
        return units

    def _transition(
        self, uow: UnitOfWork, actor: Actor, unit: SerialUnit, target: UnitStatus, *, reason: str
    ) -> None:
        audited_transition(
            uow,
            actor,
            unit,
            target,
            UNIT_TRANSITIONS,
            entity_type="unit",
            label=f"pack {unit.serial}",
            reason=reason,
        )

    # --- labels ------------------------------------------------------------------------------
    def labels(self, uow: UnitOfWork, unit_or_batch_id: str) -> list[LabelContent]:
        """Label content for one released pack, or for every pack of a released batch."""
        unit = uow.session.get(SerialUnit, unit_or_batch_id)
        if unit is not None:
            units = [unit]
        else:
            try:
                batch = self._production.get(uow, unit_or_batch_id)
            except NotFound:
                raise NotFound(
                    f"no pack or batch {unit_or_batch_id!r}", field="unit_or_batch_id"
                ) from None
            units = self.units_of_batch(uow, batch.id)
            if not units:
                raise Refused(
                    f"batch {batch.batch_number} has no serialised packs",
                    field="unit_or_batch_id",
                    code="not_serialised",
                )
        for u in units:
            if u.status not in (UnitStatus.RELEASED.value, UnitStatus.DISPENSED.value):
                raise Refused(
                    f"pack {u.serial} is {u.status}; labels are printed only for released packs",
                    field="unit_or_batch_id",
                    code="not_released",
                )
            self._check_release_signature(uow, u, "unit_or_batch_id")
        return [self._label(uow, u) for u in units]

    def _label(self, uow: UnitOfWork, unit: SerialUnit) -> LabelContent:
        order = self._orders.get(uow, unit.order_id)
        mf = self._master_files.get(uow, order.master_file_id)
        patient = self._orders.patient(uow, unit.patient_id)
        per_day = order.doses_per_day
        how = f", {per_day:g} a day" if per_day else ""
        return LabelContent(
            identifier=make_identifier(unit.gtin, unit.serial, unit.batch_number, unit.expiry),
            product_name=f"{order.medication} {order.dose_mg:g} mg printlet",
            dose_text=f"{order.dose_mg:g} mg per tablet{how}; pack {unit.pack_index}, "
            f"{unit.tablets} tablets",
            patient_ref=patient.ref,
            storage=mf.storage,
        )

    # --- dispense ----------------------------------------------------------------------------
    def dispense(
        self, uow: UnitOfWork, actor: Actor, *, scan: str, patient_ref: str
    ) -> DispenseResult:
        """Check a scanned pack against the patient and its record, then record the hand-over."""
        require_role(actor, Role.PHARMACIST, action="dispensing")
        try:
            return self._dispense(uow, actor, scan, patient_ref)
        except DomainError as exc:
            refuse(uow, actor, exc, "dispense", scan or "(empty)", site_id=actor.site_id)

    def _dispense(
        self, uow: UnitOfWork, actor: Actor, scan: str, patient_ref: str
    ) -> DispenseResult:
        ident = parse_scan(scan)
        unit = uow.session.scalar(
            select(SerialUnit).where(
                SerialUnit.gtin == ident.gtin, SerialUnit.serial == ident.serial
            )
        )
        if unit is None:
            raise Refused(
                f"unknown pack: GTIN {ident.gtin} serial {ident.serial} was never "
                "made in this network",
                field="scan",
                code="unknown_unit",
            )
        if unit.batch_number != ident.batch or unit.expiry != ident.expiry:
            raise Refused(
                "the label's batch or expiry does not match the pack's record",
                field="scan",
                code="label_mismatch",
            )
        if unit.status == UnitStatus.DISPENSED.value:
            when = uow.session.scalar(
                select(Dispense.dispensed_at).where(Dispense.unit_id == unit.id)
            )
            raise Refused(
                f"pack {unit.serial} was already dispensed"
                + (f" on {when:%Y-%m-%d %H:%M %Z}" if when else ""),
                field="scan",
                code="already_dispensed",
            )
        if unit.status == UnitStatus.REJECTED.value:
            raise Refused(
                f"pack {unit.serial} belongs to a rejected batch", field="scan", code="rejected"
            )
        if unit.status == UnitStatus.RECALLED.value:
            raise Refused(f"pack {unit.serial} is recalled", field="scan", code="recalled")
        if unit.status != UnitStatus.RELEASED.value:
            raise Refused(
                f"pack {unit.serial} is {unit.status}, not released by a QP",
                field="scan",
                code="not_released",
            )
        self._check_release_signature(uow, unit, "scan")
        today = uow.clock.now().date()
        if unit.expiry < today:
            raise Refused(
                f"pack {unit.serial} expired on {unit.expiry}", field="scan", code="expired"
            )
        patient = self._orders.patient(uow, unit.patient_id)
        if patient.ref != patient_ref.strip():
            raise Refused(
                f"pack {unit.serial} is for another patient, not {patient_ref}",
                field="patient",
                code="wrong_patient",
            )
        self._transition(uow, actor, unit, UnitStatus.DISPENSED, reason="dispensed")
        record = Dispense(
            id=new_id("dsp"),
            unit_id=unit.id,
            patient_id=patient.id,
            dispensed_at=uow.clock.now(),
            dispensed_by=actor.user_id,
            site_id=actor.site_id,
        )
        uow.session.add(record)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "dispense",
            record.id,
            new={"unit_id": unit.id, "serial": unit.serial, "patient_ref": patient.ref},
            site_id=actor.site_id,
        )
        order = self._orders.get(uow, unit.order_id)
        # two last packs at once: each bumps the order's version, so one of them must conflict
        # (flag_modified: the UPDATE happens even when the time has not moved)
        order.updated_at = uow.clock.now()
        flag_modified(order, "updated_at")
        siblings = self.units_of_order(uow, unit.order_id)
        complete = all(u.status == UnitStatus.DISPENSED.value for u in siblings)
        if complete:
            self._orders.transition(
                uow, actor, order, OrderStatus.DISPENSED, reason="every pack dispensed"
            )
        uow.commit()
        return DispenseResult(unit=unit, dispense=record, order_complete=complete)

    # --- queries -----------------------------------------------------------------------------
    def lagging_dispositions(self, uow: UnitOfWork) -> list[tuple[str, str]]:
        """(batch id, QP decision) of dispositioned batches whose packs are still quarantined,
        e.g. because the reaction to the decision failed; the runner's sweep completes them."""
        rows = uow.session.execute(
            select(BatchRecord.id, BatchRecord.status)
            .join(SerialUnit, SerialUnit.batch_id == BatchRecord.id)
            .where(
                SerialUnit.status == UnitStatus.QUARANTINE.value,
                BatchRecord.status.in_(("released", "rejected")),
            )
            .distinct()
        )
        return [(b, "release" if s == "released" else "reject") for b, s in rows]

    def units_of_batch(self, uow: UnitOfWork, batch_id: str) -> list[SerialUnit]:
        return list(
            uow.session.scalars(
                select(SerialUnit)
                .where(SerialUnit.batch_id == batch_id)
                .order_by(SerialUnit.pack_index)
            )
        )

    def units_of_order(self, uow: UnitOfWork, order_id: str) -> list[SerialUnit]:
        return list(
            uow.session.scalars(
                select(SerialUnit)
                .where(SerialUnit.order_id == order_id)
                .order_by(SerialUnit.created_at, SerialUnit.pack_index)
            )
        )

    def get_unit(self, uow: UnitOfWork, unit_id: str) -> SerialUnit:
        unit = uow.session.get(SerialUnit, unit_id)
        if unit is None:
            raise NotFound(f"no pack {unit_id!r}", field="unit_id")
        return unit

    def batch_of(self, uow: UnitOfWork, unit: SerialUnit) -> BatchRecord:
        return self._production.get(uow, unit.batch_id)
