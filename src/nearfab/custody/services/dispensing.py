"""Dispense: a scanned pack checked against the patient and its record, then handed over (the
order completes with its last pack); the undo of a dispense within its window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import NoReturn

from sqlalchemy import select

from nearfab.common.errors import DomainError, Refused, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.custody.enums import AlertKind, BizStep, Disposition, UnitStatus
from nearfab.custody.gs1 import parse_scan
from nearfab.custody.logic import epcis as ev
from nearfab.custody.models import (
    Container,
    ContainerUnit,
    Dispense,
    EpcisEpc,
    EpcisEvent,
    SerialUnit,
)
from nearfab.custody.services.packs import Packs
from nearfab.custody.services.releasecheck import ReleaseCheck
from nearfab.identity import Actor, AuditAction, Permission, audit, authorize, refuse
from nearfab.orders import OrderStatus, PatientMatch, PresentedIdentifiers
from nearfab.uow import UnitOfWork

UNDO_WINDOW = timedelta(days=10)

# refusal code -> alert (FMD: a second decommission, a suspected falsified pack)
_ALERTING = {
    "already_dispensed": AlertKind.SECOND_DISPENSE,
    "unknown_unit": AlertKind.SUSPECTED_FALSIFIED,
    "label_mismatch": AlertKind.SUSPECTED_FALSIFIED,
    "destroyed": AlertKind.SUSPECTED_FALSIFIED,
    "integrity_failure": AlertKind.INTEGRITY_FAILURE,
}


@dataclass(frozen=True)
class DispenseResult:
    unit: SerialUnit
    dispense: Dispense
    order_complete: bool
    # how the patient was identified; name and birth date for a role that may see identity
    patient_match: PatientMatch | None = None


class Dispensing:
    def __init__(
        self,
        packs: Packs,
        release: ReleaseCheck,
        usable: Callable[[UnitOfWork, SerialUnit, str], None] | None = None,
    ) -> None:
        self._packs = packs
        self._release = release
        # the chain-of-identity check before administration (HandOvers.check_usable): a held
        # unit, or one whose in-use period ended, is refused
        self._usable = usable

    def dispense(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        scan: str,
        patient_ref: str | None = None,
        patient: PresentedIdentifiers | None = None,
    ) -> DispenseResult:
        """Check a scanned pack against the patient and its record, then record the hand-over.

        The patient is identified as the hospital knows them (`patient`: NHS number, MRN,
        wristband, prescription ID, birth date; docs/patient-identification.md) or by
        nearfab's pseudonym (`patient_ref`); a refusal names the identifier that did not
        match (field), never whose it is."""
        authorize(actor, Permission.DISPENSE)
        presented = patient or PresentedIdentifiers()
        if patient_ref is not None and patient_ref.strip() and not presented.patient_ref:
            presented = replace(presented, patient_ref=patient_ref)
        try:
            return self._dispense(uow, actor, scan, presented)
        except DomainError as exc:
            self._refuse_dispense(uow, actor, exc, scan)

    def _refuse_dispense(
        self, uow: UnitOfWork, actor: Actor, exc: DomainError, scan: str
    ) -> NoReturn:
        """Like `identity.refuse`, plus an alert row in the same commit when the refusal means
        a second hand-over of one identifier or a pack this network never made."""
        kind = _ALERTING.get(exc.code or "")
        if kind is None:
            refuse(uow, actor, exc, "dispense", scan or "(empty)", site_id=actor.site_id)
        uow.session.rollback()
        self._packs.raise_alert(uow, actor, kind, scan, exc.message)
        audit(
            uow,
            actor,
            AuditAction.REFUSE,
            "dispense",
            (scan or "(empty)")[:64],
            new={"code": exc.code, "field": exc.field},
            reason=exc.message,
            site_id=actor.site_id,
        )
        uow.commit()
        raise exc

    def _dispense(
        self, uow: UnitOfWork, actor: Actor, scan: str, presented: PresentedIdentifiers
    ) -> DispenseResult:
        ident = parse_scan(scan)
        unit = self._packs.unit_by_identity(uow, ident.gtin, ident.serial)
        if unit is None:
            raise Refused(
                f"unknown pack: GTIN {ident.gtin} serial {ident.serial} was never "
                "made in this network",
                field="scan",
                code="unknown_unit",
            )
        # a pharmacy hands over its own patients' packs: the ordering site's (an order
        # without one is no site's to hand over)
        order = self._packs.orders.get(uow, unit.order_id)
        ordering = order.site_id
        authorize(actor, Permission.DISPENSE, one_of=[ordering] if ordering else [])
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
        if unit.status == UnitStatus.DESTROYED.value:
            raise Refused(
                f"pack {unit.serial} was destroyed: this pack should not exist; suspected "
                "falsified or diverted, do not hand over",
                field="scan",
                code="destroyed",
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
        self._release.require(uow, unit, "scan")
        if self._usable is not None:
            self._usable(uow, unit, "scan")
        today = uow.clock.now().date()
        if unit.expiry < today:
            raise Refused(
                f"pack {unit.serial} expired on {unit.expiry}", field="scan", code="expired"
            )
        sealed = uow.session.scalar(
            select(Container.sscc)
            .join(ContainerUnit, ContainerUnit.sscc == Container.sscc)
            .where(ContainerUnit.unit_id == unit.id, Container.status == "packed")
        )
        if sealed is not None:
            # its custody says it is still on the way: receive (unpack) the container first
            raise Refused(
                f"pack {unit.serial} is still in shipping container {sealed}, which has not "
                "been received; unpack the container at this site first",
                field="scan",
                code="in_container",
            )
        patient = self._packs.orders.patient(uow, unit.patient_id)
        match = self._packs.orders.match_patient(
            uow, actor, order, presented, purpose="dispense", permission=Permission.DISPENSE
        )
        if not match.matched or unit.patient_id != order.patient_id:
            raise Refused(
                f"pack {unit.serial}: {match.message}"
                if match.code == "birth_date_required"
                else f"pack {unit.serial} is for another patient: {match.message}",
                field=match.failed or "patient",
                code=match.code or "wrong_patient",
            )
        self._packs.transition(uow, actor, unit, UnitStatus.DISPENSED, reason="dispensed")
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
        self._packs.unit_event(
            uow,
            [unit],
            actor.site_id or self._packs.production.get(uow, unit.batch_id).site_id,
            action="OBSERVE",
            biz_step=BizStep.DISPENSING,
            disposition=Disposition.DISPENSED,
        )
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "dispense",
            record.id,
            new={
                "unit_id": unit.id,
                "serial": unit.serial,
                "patient_ref": patient.ref,
                "identified_by": list(match.checked),
            },
            site_id=actor.site_id,
        )
        # two last packs at once: each bumps the order's version, so one of them must conflict
        self._packs.orders.touch(uow, order)
        siblings = self._packs.units_of_order(uow, unit.order_id)
        complete = all(u.status == UnitStatus.DISPENSED.value for u in siblings)
        # (an order already dispensed stays so when a pack is handed over again after an undo)
        if complete and order.status != OrderStatus.DISPENSED.value:
            self._packs.orders.transition(
                uow, actor, order, OrderStatus.DISPENSED, reason="every pack dispensed"
            )
        uow.commit()
        return DispenseResult(
            unit=unit, dispense=record, order_complete=complete, patient_match=match
        )

    def undo_dispense(
        self, uow: UnitOfWork, actor: Actor, *, unit_id: str, reason: str
    ) -> SerialUnit:
        """Re-commission a dispensed pack (handed back unopened, or dispensed in error): only
        within 10 days of the dispense, never for an expired or recalled pack. The dispensing
        event gets an EPCIS error declaration and a corrective event."""
        authorize(actor, Permission.DISPENSE_UNDO)
        try:
            return self._undo(uow, actor, unit_id, reason)
        except DomainError as exc:
            refuse(uow, actor, exc, "dispense", unit_id or "(empty)", site_id=actor.site_id)

    def _undo(self, uow: UnitOfWork, actor: Actor, unit_id: str, reason: str) -> SerialUnit:
        if not reason.strip():
            raise ValidationFailed("give the reason for undoing the dispense", field="reason")
        unit = self._packs.get_unit(uow, unit_id)
        authorize(
            actor,
            Permission.DISPENSE_UNDO,
            site_id=self._packs.orders.get(uow, unit.order_id).site_id,
        )
        if unit.status == UnitStatus.RECALLED.value:
            raise Refused(
                f"pack {unit.serial} is recalled: a recalled pack is never put back",
                field="unit_id",
                code="recalled",
            )
        if unit.status != UnitStatus.DISPENSED.value:
            raise Refused(
                f"pack {unit.serial} is {unit.status}, not dispensed",
                field="unit_id",
                code="not_dispensed",
            )
        now = uow.clock.now()
        if unit.expiry < now.date():
            raise Refused(
                f"pack {unit.serial} expired on {unit.expiry}: an expired pack is never put back",
                field="unit_id",
                code="expired",
            )
        record = uow.session.scalar(select(Dispense).where(Dispense.unit_id == unit.id))
        if record is None or now - record.dispensed_at > UNDO_WINDOW:
            raise Refused(
                f"pack {unit.serial} was dispensed more than 10 days ago; it cannot be put back",
                field="unit_id",
                code="undo_window_passed",
            )
        site_id = (
            actor.site_id
            or record.site_id
            or self._packs.production.get(uow, unit.batch_id).site_id
        )
        dispensed = self._dispensing_event(uow, unit)
        self._packs.transition(
            uow, actor, unit, UnitStatus.RELEASED, reason=f"dispense undone: {reason}"
        )
        audit(
            uow,
            actor,
            "delete",
            "dispense",
            record.id,
            old={
                "unit_id": record.unit_id,
                "patient_id": record.patient_id,
                "dispensed_at": record.dispensed_at,
                "dispensed_by": record.dispensed_by,
                "site_id": record.site_id,
            },
            reason=reason,
            site_id=actor.site_id,
        )
        uow.session.delete(record)
        corrective = self._packs.unit_event(
            uow,
            [unit],
            site_id,
            action="OBSERVE",
            biz_step=BizStep.INSPECTING,
            disposition=Disposition.SELLABLE_ACCESSIBLE,
        )
        if dispensed is not None:
            self._packs.epcis.declare_error(
                uow,
                dispensed,
                reason="incorrect_data",
                corrective=[corrective.event_hash],
                site_id=site_id,
            )
        uow.commit()
        return unit

    def _dispensing_event(self, uow: UnitOfWork, unit: SerialUnit) -> str | None:
        return uow.session.scalar(
            select(EpcisEvent.event_hash)
            .join(EpcisEpc, EpcisEpc.event_hash == EpcisEvent.event_hash)
            .where(
                EpcisEpc.epc == ev.sgtin_dl(unit.gtin, unit.serial),
                EpcisEvent.biz_step == BizStep.DISPENSING.value,
            )
            .order_by(EpcisEvent.event_time.desc())
            .limit(1)
        )
