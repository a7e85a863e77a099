"""The chain of identity of a unit: hand-overs checked on both sides, the storage log judged by
the unit's family, holds a QP judges, and the in-use period of a prepared unit.

- A hand-over names the unit twice: the giving side's scan and the receiving side's scan. Both
  must name the same unit (and agree with its record), and the step must be the next one of the
  family's chain (`custody.kit.hand_over_steps`). A family with a chain identifier of its own
  (`custody.kit.check_chain_identifier`) has it scanned on both sides too, checked against the
  one its design names or the one bound at the collection (scheduling); the hand-over to the
  chain's last step is the bedside check and needs the patient's identifier as well. A mismatch
  refuses the hand-over, holds the unit with the reason and audits both in the same
  transaction: the chain stops there (no later hand-over or administration) until a QP judges
  the hold. Every hand-over is an EPCIS ObjectEvent of the unit (the family's CBV business
  step when accepted, `holding` when refused), chained in the site's ledger.
- A storage log reading is judged by the family (`custody.kit.judge_storage`); an excursion is
  recorded with its reason and holds the unit until a QP judges it.
- A unit prepared for use starts its in-use period (`custody.kit.use_by`: `in_use_period`, capped by
  the family's optional `shelf_life` from the batch's end); administration
  after it ends is refused (`check_usable`, called by dispensing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import ColumnElement, and_, bindparam, exists, or_, select
from sqlalchemy.orm.attributes import flag_modified

from nearfab.common.errors import DomainError, Forbidden, NotFound, Refused, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.common.quantity import Quantity
from nearfab.custody.enums import Disposition, UnitStatus
from nearfab.custody.gs1 import UnitIdentifier, parse_scan
from nearfab.custody.kit import (
    LabelKit,
    chain_identifier,
    check_chain_identifier,
    declares_chain_identifier,
    hand_over_biz_step,
    hand_over_steps,
    judge_storage,
    use_by,
)
from nearfab.custody.logic import epcis as ev
from nearfab.custody.models import HandOver, InUsePeriod, SerialUnit, StorageReading, UnitHold
from nearfab.custody.services.packs import Packs
from nearfab.custody.services.scope import authorize_pack, pack_sites
from nearfab.identity import Actor, AuditAction, Permission, audit, authorize, refuse
from nearfab.scheduling import SchedulingService, require_patient
from nearfab.uow import UnitOfWork

ACCEPTED, REFUSED = "accepted", "refused"
IDENTIFIER_MAX = 64  # a chain identifier as scanned or typed (kept with the hand-over)
RESUME, REJECT = "resume", "reject"
# units that left the chain for good: no hand-over, reading or preparation
_FINAL = {
    UnitStatus.DISPENSED.value,
    UnitStatus.DESTROYED.value,
    UnitStatus.RECALLED.value,
    UnitStatus.REJECTED.value,
}


@dataclass(frozen=True)
class StorageLogResult:
    """What one storage log call recorded: the readings, and the holds its excursions opened."""

    readings: list[StorageReading]
    holds: list[UnitHold]

    @property
    def excursions(self) -> list[StorageReading]:
        return [r for r in self.readings if r.excursion]


class _Stopped(Exception):
    """A hand-over refused with its hold and audit already committed."""

    def __init__(self, refusal: Refused) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def _ident(scan: str, field: str) -> UnitIdentifier:
    if not isinstance(scan, str) or not scan.strip():
        raise ValidationFailed(f"{field}: scan the unit's label", field=field)
    try:
        return parse_scan(scan)
    except ValidationFailed as exc:
        raise ValidationFailed(f"{field}: {exc.message}", field=field) from exc


def _step(value: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 32:
        raise ValidationFailed(f"{field} must name a step (1-32 characters)", field=field)
    return value.strip()


def _aware(value: datetime, field: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValidationFailed(f"{field} must be a date and time with its zone", field=field)
    return value


def _refuse_held(unit: SerialUnit, hold: UnitHold | None, field: str) -> None:
    """Refused (code held) when `hold` is the unit's open hold."""
    if hold is not None:
        judged = "rejected by a QP" if hold.decision == REJECT else "awaiting a QP"
        raise Refused(
            f"unit {unit.serial} is held ({judged}) since {hold.held_at:%Y-%m-%d %H:%M}:"
            f" {hold.reason}; its chain stops until a QP judges the hold",
            field=field,
            code="held",
        )


# an open hold: one not yet judged, or judged reject (as `open_hold`)
_OPEN_HOLD = or_(UnitHold.decision.is_(None), UnitHold.decision == REJECT)
# what `check_usable` reads of a unit, in one statement built once: its first open hold and
# its in-use period (at most one a unit)
_USABLE_QUERY = (
    select(UnitHold, InUsePeriod)
    .select_from(SerialUnit)
    .outerjoin(UnitHold, and_(UnitHold.unit_id == SerialUnit.id, _OPEN_HOLD))
    .outerjoin(InUsePeriod, InUsePeriod.unit_id == SerialUnit.id)
    .where(SerialUnit.id == bindparam("unit_id"))
    .order_by(UnitHold.held_at)
    .limit(1)
)


def usable_rows_exist(unit_id: Any) -> ColumnElement[bool]:
    """For a query that reads a pack (`unit_id`: its id column): whether the pack has any of
    the rows `check_usable` refuses on, an open hold or an in-use period with an end. False
    means `check_usable` would pass it (verification reads this with the pack and skips that
    statement); True means it must be asked."""
    return or_(
        exists().where(UnitHold.unit_id == unit_id, _OPEN_HOLD),
        exists().where(InUsePeriod.unit_id == unit_id, InUsePeriod.use_by.is_not(None)),
    )


@dataclass(frozen=True)
class UnitChain:
    """A unit's chain of identity as recorded: hand-overs, holds, storage log, in-use."""

    unit: SerialUnit
    hand_overs: list[HandOver]
    holds: list[UnitHold]
    storage_log: list[StorageReading]
    in_use: InUsePeriod | None


@dataclass(frozen=True)
class _Presented:
    """What the two sides of a hand-over presented besides the unit's GS1 scan."""

    identifier: str | None
    received_identifier: str | None
    patient: str | None


def _optional(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value.strip()) > IDENTIFIER_MAX:
        raise ValidationFailed(
            f"{field} must be text of at most {IDENTIFIER_MAX} characters", field=field
        )
    return value.strip() or None


class HandOvers:
    def __init__(self, packs: Packs, scheduling: SchedulingService | None = None) -> None:
        self._packs = packs
        # the chain identifier bound at the collection, and the patient check
        self._scheduling = scheduling

    # --- what the unit's family says -----------------------------------------------------------
    def _rules(self, uow: UnitOfWork, unit: SerialUnit) -> tuple[LabelKit, Mapping[str, Any]]:
        batch = self._packs.production.get(uow, unit.batch_id)
        mf = self._packs.master_files.get(uow, batch.master_file_id)
        order = self._packs.orders.get(uow, unit.order_id)
        return self._packs.labels_kit(mf), order.design or {}

    def _unit(self, uow: UnitOfWork, ident: UnitIdentifier, field: str) -> SerialUnit:
        unit = self._packs.unit_by_identity(uow, ident.gtin, ident.serial)
        if unit is None:
            raise Refused(
                f"{field}: unit GTIN {ident.gtin} serial {ident.serial} was never made in this"
                " network",
                field=field,
                code="unknown_unit",
            )
        return unit

    # --- holds ---------------------------------------------------------------------------------
    def open_hold(self, uow: UnitOfWork, unit_id: str) -> UnitHold | None:
        """The hold that stops the unit's chain: one not yet judged, or one judged `reject`."""
        return uow.session.scalar(
            select(UnitHold)
            .where(
                UnitHold.unit_id == unit_id,
                or_(UnitHold.decision.is_(None), UnitHold.decision == REJECT),
            )
            .order_by(UnitHold.held_at)
            .limit(1)
        )

    def holds(self, uow: UnitOfWork, unit_id: str) -> list[UnitHold]:
        return list(
            uow.session.scalars(
                select(UnitHold).where(UnitHold.unit_id == unit_id).order_by(UnitHold.held_at)
            )
        )

    def _hold(
        self, uow: UnitOfWork, actor: Actor, unit: SerialUnit, source: str, reason: str
    ) -> UnitHold:
        hold = UnitHold(
            id=new_id("hold"),
            unit_id=unit.id,
            source=source,
            reason=reason,
            held_at=uow.clock.now(),
            held_by=actor.user_id,
        )
        uow.session.add(hold)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "unit_hold",
            hold.id,
            new={"unit_id": unit.id, "serial": unit.serial, "source": source},
            reason=reason,
            site_id=actor.site_id,
        )
        return hold

    def _held(self, uow: UnitOfWork, unit: SerialUnit, field: str) -> None:
        _refuse_held(unit, self.open_hold(uow, unit.id), field)

    def judge_hold(
        self, uow: UnitOfWork, actor: Actor, *, hold_id: str, decision: str, reason: str
    ) -> UnitHold:
        """A QP's judgement of a hold: `resume` (the chain goes on) or `reject` (it stays
        stopped for good)."""
        authorize(actor, Permission.HOLD_DECIDE)
        try:
            return self._judge(uow, actor, hold_id, decision, reason)
        except DomainError as exc:
            refuse(uow, actor, exc, "unit_hold", hold_id or "(empty)", site_id=actor.site_id)

    def _judge(
        self, uow: UnitOfWork, actor: Actor, hold_id: str, decision: str, reason: str
    ) -> UnitHold:
        if decision not in (RESUME, REJECT):
            raise ValidationFailed(
                f"decision must be {RESUME!r} or {REJECT!r}, got {decision!r}", field="decision"
            )
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationFailed("give the reason for the judgement", field="reason")
        hold = uow.session.get(UnitHold, hold_id)
        if hold is None:
            raise NotFound(f"no hold {hold_id!r}", field="hold_id")
        unit = self._packs.get_unit(uow, hold.unit_id)
        authorize(actor, Permission.HOLD_DECIDE, one_of=pack_sites(uow, unit))
        if hold.decision is not None:
            raise Refused(
                f"hold {hold.id} was already judged ({hold.decision})",
                field="hold_id",
                code="already_judged",
            )
        hold.decision = decision
        hold.decided_at = uow.clock.now()
        hold.decided_by = actor.user_id
        hold.decision_reason = reason.strip()
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            "unit_hold",
            hold.id,
            old={"decision": None},
            new={"decision": decision, "unit_id": unit.id},
            reason=reason.strip(),
            site_id=actor.site_id,
        )
        uow.commit()
        return hold

    # --- hand-over -----------------------------------------------------------------------------
    def hand_over(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        scan: str,
        from_step: str,
        to_step: str,
        received_scan: str,
        identifier: str | None = None,
        received_identifier: str | None = None,
        patient: str | None = None,
    ) -> HandOver:
        """Hand a unit from one step of its chain to the next: `scan` is the giving side's
        scan, `received_scan` the receiving side's; `identifier` and `received_identifier`
        the family's chain identifier as each side scanned it (required by a family that has
        one), `patient` the patient's identifier as presented (required at the hand-over to
        the chain's last step, the bedside, by such a family). Refused (and the unit held, the
        chain stopped) when they name different units, the label disagrees with the unit's
        record, the step is not the next one of the family's chain, a chain identifier is not
        the chain's or the patient is not the unit's."""
        authorize(actor, Permission.PACKS_MOVE)
        try:
            shown = _Presented(
                _optional(identifier, "identifier"),
                _optional(received_identifier, "received_identifier"),
                _optional(patient, "patient"),
            )
            return self._hand_over(uow, actor, scan, from_step, to_step, received_scan, shown)
        except _Stopped as stopped:  # refused, held and audited in one commit already
            raise stopped.refusal from None
        except DomainError as exc:
            refuse(uow, actor, exc, "hand_over", scan or "(empty)", site_id=actor.site_id)

    def _hand_over(
        self,
        uow: UnitOfWork,
        actor: Actor,
        scan: str,
        from_step: str,
        to_step: str,
        received_scan: str,
        shown: _Presented,
    ) -> HandOver:
        given = _ident(scan, "scan")
        unit = self._unit(uow, given, "scan")
        # the unit's sites first: nothing else is answered to staff of another site
        authorize(actor, Permission.PACKS_MOVE, one_of=pack_sites(uow, unit))
        received = _ident(received_scan, "received_scan")
        src, dst = _step(from_step, "from_step"), _step(to_step, "to_step")
        if unit.status in _FINAL:
            raise Refused(
                f"unit {unit.serial} is {unit.status}: it left the chain",
                field="scan",
                code="not_in_chain",
            )
        self._held(uow, unit, "scan")
        kit, design = self._rules(uow, unit)
        bedside = self._required(kit, src, dst, shown)
        mismatch = self._mismatch(uow, unit, given, received, src, dst)
        if mismatch is None:
            mismatch = self._identity_mismatch(uow, actor, unit, kit, design, shown, bedside)
        if mismatch is not None:
            field, code, why = mismatch
            self._stop(uow, actor, unit, scan, received_scan, src, dst, field, code, why, shown)
        record = HandOver(
            id=new_id("hov"),
            unit_id=unit.id,
            from_step=src,
            to_step=dst,
            giver_scan=scan[:200],
            receiver_scan=received_scan[:200],
            giver_identifier=shown.identifier,
            receiver_identifier=shown.received_identifier,
            patient_checked=bedside,
            outcome=ACCEPTED,
            reason=None,
            handed_at=uow.clock.now(),
            handed_by=actor.user_id,
            site_id=actor.site_id,
        )
        uow.session.add(record)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "hand_over",
            record.id,
            new={
                "unit_id": unit.id,
                "serial": unit.serial,
                "from_step": src,
                "to_step": dst,
                "identifier": shown.identifier,
                "patient_checked": bedside,
            },
            site_id=actor.site_id,
        )
        self._event(uow, actor, unit, hand_over_biz_step(kit, src, dst), Disposition.IN_PROGRESS)
        # the chain was read before this insert: bump the unit's row version, so a hand-over of
        # the same unit that landed meanwhile makes this one a lost race (Conflict, refused on
        # record) instead of a second accepted step
        flag_modified(unit, "status")
        uow.flush()
        uow.commit()
        return record

    @staticmethod
    def _required(kit: LabelKit, src: str, dst: str, shown: _Presented) -> bool:
        """Input a family with a chain identifier requires (ValidationFailed: nothing held):
        the identifier on both sides, and the patient at the chain's last step. True when this
        hand-over is the bedside check."""
        if not declares_chain_identifier(kit):
            return False
        for field, value in (
            ("identifier", shown.identifier),
            ("received_identifier", shown.received_identifier),
        ):
            if value is None:
                raise ValidationFailed(
                    f"{field}: scan the unit's chain identifier on this side", field=field
                )
        steps = hand_over_steps(kit)
        bedside = bool(steps) and dst == steps[-1]
        if bedside and shown.patient is None:
            raise ValidationFailed(
                f"patient: the hand-over to {dst} is the bedside check; give the patient's"
                " identifier as presented",
                field="patient",
            )
        return bedside

    def expected_identifier(
        self, uow: UnitOfWork, kit: LabelKit, design: Mapping[str, Any], unit: SerialUnit
    ) -> str | None:
        """The chain's identifier: the one bound at the order's latest collection (checked
        against the design's at the first), else the one the design names."""
        bound = None
        if self._scheduling is not None:
            bound = self._scheduling.chain_identifier(uow, unit.order_id)
        return bound if bound is not None else chain_identifier(kit, design)

    def _identity_mismatch(
        self,
        uow: UnitOfWork,
        actor: Actor,
        unit: SerialUnit,
        kit: LabelKit,
        design: Mapping[str, Any],
        shown: _Presented,
        bedside: bool,
    ) -> tuple[str, str, str] | None:
        """(field, code, reason) when a chain identifier or the patient is not the unit's."""
        if not declares_chain_identifier(kit):
            return None
        expected = self.expected_identifier(uow, kit, design, unit)
        if expected is None:
            return (
                "identifier",
                "identity_mismatch",
                f"no chain identifier is bound to unit {unit.serial}'s order (its collection"
                " was not recorded with one)",
            )
        for field, value, side in (
            ("identifier", shown.identifier, "giving"),
            ("received_identifier", shown.received_identifier, "receiving"),
        ):
            why = check_chain_identifier(kit, expected, value or "")
            if why is not None:
                return (field, "identity_mismatch", f"the {side} side's {field}: {why}")
        if bedside:
            order = self._packs.orders.get(uow, unit.order_id)
            # the patient is the ordering site's: its staff check them at the bedside, never
            # the making site's (it would answer yes/no to another site's patient identifiers)
            try:
                authorize(actor, Permission.PACKS_MOVE, one_of=[order.site_id])
            except Forbidden as exc:
                raise Forbidden(
                    "patient: the bedside check is the ordering site's; hand the unit to its"
                    " staff for it",
                    field="patient",
                    code=exc.code,
                ) from exc
            try:
                require_patient(
                    self._packs.orders,
                    uow,
                    actor,
                    order,
                    shown.patient,
                    purpose="the bedside check",
                    permission=Permission.PACKS_MOVE,
                    one_of=[order.site_id],
                )
            except Refused as exc:
                return ("patient", exc.code, exc.message)
        return None

    def _event(
        self,
        uow: UnitOfWork,
        actor: Actor,
        unit: SerialUnit,
        biz_step: str,
        disposition: Disposition,
    ) -> None:
        """The hand-over's EPCIS ObjectEvent (OBSERVE) of the unit, at the acting site when
        the unit belongs to it, else at the site that made it; chained in that site's ledger."""
        sites = pack_sites(uow, unit)
        batch = self._packs.production.get(uow, unit.batch_id)
        site_id = actor.site_id if actor.site_id in sites else batch.site_id
        where = self._packs.epcis.sgln(uow, site_id)
        event = ev.object_event(
            when=uow.clock.now(),
            epcs=[ev.sgtin_dl(unit.gtin, unit.serial)],
            action="OBSERVE",
            biz_step=biz_step,
            disposition=disposition.value,
            read_point=where,
            biz_location=where,
        )
        self._packs.epcis.record(uow, event, site_id=site_id)

    def hand_overs(self, uow: UnitOfWork, unit_id: str) -> list[HandOver]:
        return list(
            uow.session.scalars(
                select(HandOver).where(HandOver.unit_id == unit_id).order_by(HandOver.handed_at)
            )
        )

    def _mismatch(
        self,
        uow: UnitOfWork,
        unit: SerialUnit,
        given: UnitIdentifier,
        received: UnitIdentifier,
        src: str,
        dst: str,
    ) -> tuple[str, str, str] | None:
        """(field, code, reason) of what does not agree, or None."""
        if (received.gtin, received.serial) != (given.gtin, given.serial):
            return (
                "received_scan",
                "identity_mismatch",
                f"the receiving side scanned unit {received.serial} (GTIN {received.gtin}),"
                f" the giving side unit {given.serial} (GTIN {given.gtin})",
            )
        for field, ident in (("scan", given), ("received_scan", received)):
            if (ident.batch, ident.expiry) != (unit.batch_number, unit.expiry):
                return (
                    field,
                    "identity_mismatch",
                    f"the {field} label's batch or expiry does not match unit"
                    f" {unit.serial}'s record",
                )
        kit, _ = self._rules(uow, unit)
        steps = hand_over_steps(kit)
        accepted = [h for h in self.hand_overs(uow, unit.id) if h.outcome == ACCEPTED]
        if not steps:
            return None  # the family has no chain: identity is all a hand-over checks
        at = accepted[-1].to_step if accepted else steps[0]
        if src != at:
            return ("from_step", "wrong_step", f"unit {unit.serial} is at {at}, not {src}")
        i = steps.index(at)
        if i + 1 >= len(steps):
            return ("to_step", "wrong_step", f"unit {unit.serial} is at the chain's last step")
        if dst != steps[i + 1]:
            return (
                "to_step",
                "wrong_step",
                f"the next step after {at} is {steps[i + 1]}, not {dst}",
            )
        return None

    def _stop(
        self,
        uow: UnitOfWork,
        actor: Actor,
        unit: SerialUnit,
        scan: str,
        received_scan: str,
        src: str,
        dst: str,
        field: str,
        code: str,
        why: str,
        shown: _Presented,
    ) -> NoReturn:
        """Refuse the hand-over and hold the unit, both recorded (with its EPCIS holding
        event) and audited in one commit."""
        uow.session.rollback()
        unit = self._packs.get_unit(uow, unit.id)
        reason = f"hand-over {src} -> {dst} refused: {why}"
        uow.session.add(
            HandOver(
                id=new_id("hov"),
                unit_id=unit.id,
                from_step=src,
                to_step=dst,
                giver_scan=scan[:200],
                receiver_scan=received_scan[:200],
                giver_identifier=shown.identifier,
                receiver_identifier=shown.received_identifier,
                patient_checked=False,
                outcome=REFUSED,
                reason=reason,
                handed_at=uow.clock.now(),
                handed_by=actor.user_id,
                site_id=actor.site_id,
            )
        )
        self._hold(uow, actor, unit, "hand_over", reason)
        self._event(uow, actor, unit, "holding", Disposition.NON_SELLABLE_OTHER)
        exc = Refused(reason + "; the unit is held until a QP judges it", field=field, code=code)
        audit(
            uow,
            actor,
            AuditAction.REFUSE,
            "hand_over",
            (scan or "(empty)")[:64],
            new={"code": code, "field": field, "unit_id": unit.id},
            reason=exc.message,
            site_id=actor.site_id,
        )
        uow.commit()
        raise _Stopped(exc)

    # --- storage log -----------------------------------------------------------------------------
    def log_storage(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        unit_ids: list[str],
        readings: list[tuple[datetime, float]],
        unit: str = "Cel",
    ) -> StorageLogResult:
        """Storage log readings of units in storage or shipment (a container's units: the
        caller lists them), each judged by the unit's family; an excursion is recorded with its
        reason and holds the unit (once per call) until a QP judges it."""
        authorize(actor, Permission.READINGS_RECORD)
        try:
            return self._log(uow, actor, unit_ids, readings, unit)
        except DomainError as exc:
            ref = ",".join(unit_ids or []) or "(empty)"
            refuse(uow, actor, exc, "storage_log", ref, site_id=actor.site_id)

    def _log(
        self,
        uow: UnitOfWork,
        actor: Actor,
        unit_ids: list[str],
        readings: list[tuple[datetime, float]],
        uom: str,
    ) -> StorageLogResult:
        units = self._packs.units(uow, unit_ids)
        for u in units:
            authorize(actor, Permission.READINGS_RECORD, one_of=pack_sites(uow, u))
        if not readings:
            raise ValidationFailed("give at least one reading", field="readings")
        if not isinstance(uom, str) or not uom.strip():
            raise ValidationFailed("give the readings' unit (UCUM, e.g. Cel)", field="unit")
        checked = [(_aware(when, "read_at"), Quantity(value, uom)) for when, value in readings]
        now = uow.clock.now()
        out: list[StorageReading] = []
        holds: list[UnitHold] = []
        for u in units:
            kit, _ = self._rules(uow, u)
            first: str | None = None
            excursions: list[StorageReading] = []
            for when, q in checked:
                why = judge_storage(kit, q)
                row = StorageReading(
                    id=new_id("slog"),
                    unit_id=u.id,
                    value=q.value,
                    unit=q.unit,
                    read_at=when,
                    recorded_at=now,
                    recorded_by=actor.user_id,
                    excursion=why is not None,
                    reason=why,
                )
                uow.session.add(row)
                out.append(row)
                if why is not None:
                    excursions.append(row)
                    if first is None:
                        first = f"storage excursion at {when.isoformat()}: {why}"
            if first is not None:
                hold = self._hold(uow, actor, u, "storage", first)
                holds.append(hold)
                for row in excursions:
                    row.hold_id = hold.id
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "storage_log",
            ",".join(unit_ids)[:64],
            new={
                "units": unit_ids,
                "readings": len(readings),
                "excursions": sum(1 for r in out if r.excursion),
            },
            site_id=actor.site_id,
        )
        uow.commit()
        return StorageLogResult(readings=out, holds=holds)

    def storage_log(self, uow: UnitOfWork, unit_id: str) -> list[StorageReading]:
        return list(
            uow.session.scalars(
                select(StorageReading)
                .where(StorageReading.unit_id == unit_id)
                .order_by(StorageReading.read_at)
            )
        )

    # --- in-use period ---------------------------------------------------------------------------
    def prepare(
        self, uow: UnitOfWork, actor: Actor, *, scan: str, unit_id: str | None = None
    ) -> InUsePeriod:
        """Record that a unit was prepared for use: its in-use period starts now and ends when
        its family says (no end when the family sets none). A unit is prepared once."""
        authorize(actor, Permission.PACKS_MOVE)
        try:
            return self._prepare(uow, actor, scan, unit_id)
        except DomainError as exc:
            ref = unit_id or scan or "(empty)"
            refuse(uow, actor, exc, "in_use", ref, site_id=actor.site_id)

    def _prepare(
        self, uow: UnitOfWork, actor: Actor, scan: str, unit_id: str | None
    ) -> InUsePeriod:
        if unit_id is not None:
            # the unit named by id (an entry point's path): its sites before the scan is read
            named = self._packs.get_unit(uow, unit_id)
            authorize(actor, Permission.PACKS_MOVE, one_of=pack_sites(uow, named))
        ident = _ident(scan, "scan")
        unit = self._unit(uow, ident, "scan")
        authorize(actor, Permission.PACKS_MOVE, one_of=pack_sites(uow, unit))
        if unit_id is not None and unit.id != unit_id:
            raise Refused(
                f"the scan names unit {unit.serial}, not {unit_id}",
                field="scan",
                code="identity_mismatch",
            )
        if (ident.batch, ident.expiry) != (unit.batch_number, unit.expiry):
            raise Refused(
                "the label's batch or expiry does not match the unit's record",
                field="scan",
                code="label_mismatch",
            )
        if unit.status != UnitStatus.RELEASED.value:
            raise Refused(
                f"unit {unit.serial} is {unit.status}, not released by a QP",
                field="scan",
                code="not_released",
            )
        self._held(uow, unit, "scan")
        done = uow.session.get(InUsePeriod, unit.id)
        if done is not None:
            raise Refused(
                f"unit {unit.serial} was already prepared at {done.prepared_at.isoformat()}",
                field="scan",
                code="already_prepared",
            )
        kit, design = self._rules(uow, unit)
        now = uow.clock.now()
        # the in-use period, capped by a shelf life of hours from the batch's end if the
        # family has one (custody.kit.use_by)
        made_at = self._packs.production.get(uow, unit.batch_id).finished_at
        row = InUsePeriod(
            unit_id=unit.id,
            prepared_at=now,
            prepared_by=actor.user_id,
            use_by=use_by(kit, design, now, made_at),
        )
        uow.session.add(row)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "in_use",
            unit.id,
            new={
                "serial": unit.serial,
                "use_by": row.use_by.isoformat() if row.use_by else None,
            },
            site_id=actor.site_id,
        )
        uow.commit()
        return row

    def chain(self, uow: UnitOfWork, actor: Actor, unit_id: str) -> UnitChain:
        """The unit's chain of identity, for someone who may trace it at one of its sites."""
        [unit] = authorize_pack(uow, actor, unit_id)[:1]
        if unit.id != unit_id:
            raise NotFound(f"no unit {unit_id!r}", field="unit_id")
        return UnitChain(
            unit=unit,
            hand_overs=self.hand_overs(uow, unit.id),
            holds=self.holds(uow, unit.id),
            storage_log=self.storage_log(uow, unit.id),
            in_use=uow.session.get(InUsePeriod, unit.id),
        )

    # --- before administration -------------------------------------------------------------------
    def check_usable(self, uow: UnitOfWork, unit: SerialUnit, field: str = "scan") -> None:
        """Refused when the unit is held (code held) or its in-use period has ended (code
        in_use_expired): called by dispensing before the unit is administered, and by every
        verification that would answer ok, so one round trip reads the open hold and the
        in-use period together."""
        row = uow.session.execute(_USABLE_QUERY, {"unit_id": unit.id}).one()
        hold, period = row
        _refuse_held(unit, hold, field)
        if period is not None and period.use_by is not None:
            now = uow.clock.now()
            if now > period.use_by:
                late = (now - period.use_by).total_seconds() / 60
                raise Refused(
                    f"unit {unit.serial} was prepared at {period.prepared_at.isoformat()}; its"
                    f" in-use period ended at {period.use_by.isoformat()} ({late:.0f} min ago):"
                    " it must not be administered",
                    field=field,
                    code="in_use_expired",
                )
