"""Custody use cases on packs: serialise, follow the QP, labels, verify and dispense, undo a
dispense, ship / receive / destroy, cold-chain readings. Each step is an EPCIS event chained
in the site's ledger in the same transaction as the change."""

from __future__ import annotations

import math
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import select
from sqlalchemy.orm.attributes import flag_modified

from nearfab.common.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    Refused,
    ValidationFailed,
)
from nearfab.common.ids import new_id
from nearfab.common.quantity import Quantity
from nearfab.custody.enums import (
    UNIT_TRANSITIONS,
    AlertKind,
    BizStep,
    ContainerStatus,
    Disposition,
    LedgerKind,
    UnitStatus,
    VerifyStatus,
)
from nearfab.custody.gs1 import make_identifier, parse_scan
from nearfab.custody.kit import LabelKit
from nearfab.custody.labels import LabelContent
from nearfab.custody.logic import epcis as ev
from nearfab.custody.logic.verify import PackFacts, SignatureFacts, decide
from nearfab.custody.models import (
    Container,
    ContainerUnit,
    CustodyAlert,
    Dispense,
    EpcisEvent,
    LedgerEntry,
    SerialUnit,
    SiteKey,
)
from nearfab.custody.services.epcis import EpcisStore
from nearfab.custody.services.ledger import CustodyLedger
from nearfab.custody.services.signedfacts import (
    ENTRY_COLUMNS,
    SignedFacts,
    pack_facts,
    release_entries_of,
    release_ref,
)
from nearfab.custody.services.verifylog import VerificationLog
from nearfab.designs import FamilyRegistry
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    Signature,
    audit,
    audited_transition,
    authorize,
    refuse,
)
from nearfab.identity.services.signatures import hash_of as signature_hash_of
from nearfab.masterfiles import MasterFile, MasterFileService
from nearfab.network import Site
from nearfab.orders import Order, OrderService, OrderStatus, Patient
from nearfab.production import BatchRecord, ProductionService
from nearfab.quality import QualityService, ReleaseReview
from nearfab.uow import UnitOfWork

UNDO_WINDOW = timedelta(days=10)
_SIGNATURE_CACHE_SIZE = 10_000

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


@dataclass(frozen=True)
class Verification:
    """One answer to a scan: `status` (VerifyStatus) and what the pharmacist needs to know."""

    status: VerifyStatus
    message: str
    unit_id: str | None = None
    gtin: str | None = None
    serial: str | None = None
    batch: str | None = None
    expiry: date | None = None
    unit_status: str | None = None
    dispensed_at: datetime | None = None
    alert_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "message": self.message,
            "unit_id": self.unit_id,
            "gtin": self.gtin,
            "serial": self.serial,
            "batch": self.batch,
            "expiry": self.expiry.isoformat() if self.expiry else None,
            "unit_status": self.unit_status,
            "dispensed_at": self.dispensed_at.isoformat() if self.dispensed_at else None,
            "alert_id": self.alert_id,
        }


class CustodyService:
    def __init__(
        self,
        production: ProductionService,
        master_files: MasterFileService,
        orders: OrderService,
        quality: QualityService,
        *,
        families: FamilyRegistry,
        epcis: EpcisStore | None = None,
    ) -> None:
        self._production = production
        self._families = families
        self._master_files = master_files
        self._orders = orders
        self._quality = quality
        # without a ledger, events are still recorded; the composition root gives one
        self.epcis = epcis or EpcisStore()
        self.verification_log = VerificationLog()
        # (review id, signature id, review version, batch id, batch version) whose signature
        # was found valid: neither row changes through the application without a new version
        self._valid_signatures: OrderedDict[tuple[str, str, int, str, int], bool] = OrderedDict()
        self._signatures_lock = threading.Lock()
        # the packs' facts as the QP's release ledgered them (signed, verified, cached)
        self.signed_facts = SignedFacts()

    def _labels_kit(self, mf: MasterFile) -> LabelKit:
        """The identity and label rules of the master file's product family."""
        kit: LabelKit = self._families.get(mf.product_family).labels
        return kit

    def flush_verification_log(self) -> int:
        """Commit every queued verification log row (tests, shutdown); the number written."""
        return self.verification_log.flush()

    def _signature_known(self, key: tuple[Any, ...]) -> bool:
        with self._signatures_lock:
            if key in self._valid_signatures:
                self._valid_signatures.move_to_end(key)
                return True
        return False

    def release_signature_ok(self, uow: UnitOfWork, batch_id: str) -> bool:
        """Whether the batch record still matches the QP's release signature. A positive answer
        is remembered per (review, signature, review row_version, batch row_version): the
        signed content (batch record, proposal, deviations raised at review) cannot change
        through the application without bumping one of those versions, so only the versions
        are read again. Direct-SQL tampering that keeps the versions is the ledger's and the
        audit check's to find (docs/custody.md)."""
        review = self._quality.review_for(uow, batch_id)
        if review is None or not review.signature_id:
            return False
        version = uow.session.scalar(
            select(BatchRecord.row_version).where(BatchRecord.id == batch_id)
        )
        if version is None:
            return False
        key = (review.id, review.signature_id, review.row_version, batch_id, version)
        if self._signature_known(key):
            return True
        if self._quality.signature_valid(uow, review) is not True:
            return False
        with self._signatures_lock:
            self._valid_signatures[key] = True
            while len(self._valid_signatures) > _SIGNATURE_CACHE_SIZE:
                self._valid_signatures.popitem(last=False)
        return True

    def use_ledger(self, ledger: CustodyLedger) -> None:
        """Chain every custody event from now on (composition roots that build the ledger
        after this service)."""
        self.epcis.ledger = ledger

    @property
    def ledger(self) -> CustodyLedger | None:
        return self.epcis.ledger

    @property
    def quality(self) -> QualityService:
        return self._quality

    def integrity_problem(self, uow: UnitOfWork, unit: SerialUnit) -> str | None:
        """None when the pack's row (patient, GTIN, lot, serial, expiry, order) and the QP's
        decision match what the release signed into the custody ledger; else what differs."""
        row = uow.session.execute(
            select(ReleaseReview.decision, ReleaseReview.signature_id, Signature)
            .outerjoin(Signature, Signature.id == ReleaseReview.signature_id)
            .where(ReleaseReview.batch_id == unit.batch_id)
        ).first()
        decision, signature_id, sig = row if row is not None else (None, None, None)
        return self.signed_facts.check(
            uow, self.ledger, unit, _signature_facts(decision, signature_id, sig)
        )

    def _check_release_signature(self, uow: UnitOfWork, unit: SerialUnit, field: str) -> None:
        """A pack leaves quarantine only while its row matches what the QP's release signed
        (else an integrity failure) and its batch record matches the QP's signature."""
        problem = self.integrity_problem(uow, unit)
        if problem is not None:
            raise Refused(
                f"{problem}: the record was tampered with; do not hand the pack over, hold it "
                "and tell QA",
                field=field,
                code="integrity_failure",
            )
        if not self.release_signature_ok(uow, unit.batch_id):
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
        kit = self._labels_kit(mf)
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
            if (
                review is None
                or review.decision != "release"
                or self._quality.signature_valid(uow, review) is not True
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
                    self._raise_alert(
                        uow,
                        actor,
                        AlertKind.INTEGRITY_FAILURE,
                        f"(01){unit.gtin}(21){unit.serial}",
                        why,
                        unit=unit,
                    )
            moved = [u for u in moved if u.serial not in unsound]
        for unit in moved:
            self._transition(uow, actor, unit, target, reason=f"batch {decision}d by QP")
        if moved:
            self._record_disposition(uow, batch_id, decision, moved)
        uow.commit()
        return units

    def _unsound_packs(
        self, uow: UnitOfWork, batch_id: str, units: list[SerialUnit]
    ) -> dict[str, str]:
        """serial -> what differs between a pack's row and the facts it was made from: the
        QP-signed batch record (order, lot, finish time), the order's patient and the master
        file's GTIN and shelf life."""
        batch = self._production.get(uow, batch_id)
        order = self._orders.get(uow, batch.order_id)
        mf = self._master_files.get(uow, batch.master_file_id)
        product_code = self._labels_kit(mf).product_code(mf.gtin)
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

    # --- EPCIS events of the pack's life --------------------------------------------------------
    def _record_commissioning(
        self, uow: UnitOfWork, batch: BatchRecord, units: list[SerialUnit], expiry: date
    ) -> None:
        when = batch.finished_at or uow.clock.now()
        where = self.epcis.sgln(uow, batch.site_id)
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
        self.epcis.record(uow, made, site_id=batch.site_id)
        self.epcis.record(uow, commissioned, site_id=batch.site_id)

    def _record_disposition(
        self, uow: UnitOfWork, batch_id: str, decision: str, units: list[SerialUnit]
    ) -> None:
        batch = self._production.get(uow, batch_id)
        review = self._quality.review_for(uow, batch_id)
        where = self.epcis.sgln(uow, batch.site_id)
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
        self.epcis.record(uow, event, site_id=batch.site_id)
        if self.ledger is not None:
            sig = (
                uow.session.get(Signature, review.signature_id)
                if review is not None and review.signature_id
                else None
            )
            # the signed facts a dispense is checked against (custody/services/signedfacts.py):
            # the decision, the QP signature's own hashes, and every pack's identity and patient
            self.ledger.append(
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

    def _unit_event(
        self,
        uow: UnitOfWork,
        units: list[SerialUnit],
        site_id: str,
        *,
        action: str,
        biz_step: BizStep,
        disposition: Disposition | None,
        **extra: Any,
    ) -> EpcisEvent:
        where = self.epcis.sgln(uow, site_id)
        event = ev.object_event(
            when=uow.clock.now(),
            epcs=[ev.sgtin_dl(u.gtin, u.serial) for u in units],
            action=action,
            biz_step=biz_step,
            disposition=disposition,
            read_point=where,
            biz_location=where,
            **extra,
        )
        return self.epcis.record(uow, event, site_id=site_id)

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
        kit = self._labels_kit(mf)
        dose = _dose_of(order)
        return LabelContent(
            identifier=make_identifier(unit.gtin, unit.serial, unit.batch_number, unit.expiry),
            product_name=kit.product_name(order.medication, dose),
            dose_text=kit.dose_text(dose, order.doses_per_day, unit.pack_index, unit.quantity),
            patient_ref=patient.ref,
            storage=mf.storage,
        )

    # --- dispense ----------------------------------------------------------------------------
    def dispense(
        self, uow: UnitOfWork, actor: Actor, *, scan: str, patient_ref: str
    ) -> DispenseResult:
        """Check a scanned pack against the patient and its record, then record the hand-over."""
        authorize(actor, Permission.DISPENSE)
        try:
            return self._dispense(uow, actor, scan, patient_ref)
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
        self._raise_alert(uow, actor, kind, scan, exc.message)
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

    def _raise_alert(
        self,
        uow: UnitOfWork,
        actor: Actor,
        kind: AlertKind,
        scan: str,
        message: str,
        *,
        unit: SerialUnit | None = None,
    ) -> CustodyAlert:
        if unit is None:
            try:
                ident = parse_scan(scan)
                unit = self._unit_by_identity(uow, ident.gtin, ident.serial)
            except DomainError:
                pass
        alert = CustodyAlert(
            id=new_id("alert"),
            kind=kind.value,
            unit_id=unit.id if unit else None,
            scan=(scan or "(empty)")[:200],
            raised_at=uow.clock.now(),
            raised_by=actor.user_id,
            site_id=actor.site_id,
            detail={"message": message},
        )
        uow.session.add(alert)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "custody_alert",
            alert.id,
            new={"kind": kind.value, "unit_id": alert.unit_id, "message": message},
            site_id=actor.site_id,
        )
        return alert

    @staticmethod
    def _serves(actor: Actor, *site_ids: str | None) -> bool:
        """Whether the actor may verify at one of these sites (a pack's making and ordering
        site). No site named means no site-bound verifier serves it."""
        try:
            authorize(actor, Permission.PACK_VERIFY, one_of=[s for s in site_ids if s])
        except Forbidden:
            return False
        return True

    def _unit_by_identity(self, uow: UnitOfWork, gtin: str, serial: str) -> SerialUnit | None:
        return uow.session.scalar(
            select(SerialUnit).where(SerialUnit.gtin == gtin, SerialUnit.serial == serial)
        )

    # --- verification ------------------------------------------------------------------------
    def verify(
        self, uow: UnitOfWork, actor: Actor, *, scan: str, patient_ref: str | None = None
    ) -> Verification:
        """One status for a scanned pack (and, if given, the patient it is for). A scan that is
        not GS1 data is refused (`validation_failed`, field `scan`). An unknown pack raises a
        suspected-falsification alert, committed at once. Every verification is logged (audit
        action `verify`); apart from that alert the check is read-only and its log row is
        written by the group-commit `verification_log` (`flush_verification_log`)."""
        authorize(actor, Permission.PACK_VERIFY)
        ident = parse_scan(scan)
        # one round trip: the pack, its patient reference, the sites it belongs to, the QP's
        # decision and signature, the versions that key the signature check, and the signed
        # release entries of its batch with their keys (a verification answers while others
        # wait for the GIL); one row per release entry (usually one)
        rows = uow.session.execute(
            select(
                SerialUnit,
                Patient.ref,
                ReleaseReview.id,
                ReleaseReview.signature_id,
                ReleaseReview.row_version,
                BatchRecord.row_version,
                BatchRecord.site_id,
                Order.site_id,
                ReleaseReview.decision,
                Signature,
                *ENTRY_COLUMNS,
            )
            .join(Patient, Patient.id == SerialUnit.patient_id)
            .join(BatchRecord, BatchRecord.id == SerialUnit.batch_id)
            .join(Order, Order.id == SerialUnit.order_id)
            .outerjoin(ReleaseReview, ReleaseReview.batch_id == SerialUnit.batch_id)
            .outerjoin(Signature, Signature.id == ReleaseReview.signature_id)
            .outerjoin(LedgerEntry, release_entries_of(SerialUnit.batch_id))
            .outerjoin(SiteKey, SiteKey.key_id == LedgerEntry.key_id)
            .where(SerialUnit.gtin == ident.gtin, SerialUnit.serial == ident.serial)
        ).all()
        row = rows[0] if rows else None
        unit: SerialUnit | None = None
        facts = None
        problem: str | None = None
        in_scope = True
        if row is not None:
            unit, ref, review_id, signature_id, review_version, batch_version = row[:6]
            making_site, ordering_site, decision, sig = row[6:10]
            entries = [r[10:] for r in rows if r[10] is not None]
            # a verifier answers only for packs of the sites they serve (making or ordering
            # site): for any other pack the answer is the one for an unknown pack, so nobody
            # learns from it whether a pack is for some patient of another site
            in_scope = self._serves(actor, making_site, ordering_site)
            record_ok = True
            if in_scope and unit.status == UnitStatus.RELEASED.value:
                problem = self.signed_facts.check(
                    uow,
                    self.ledger,
                    unit,
                    _signature_facts(decision, signature_id, sig),
                    rows=entries,
                )
                key = (review_id, signature_id, review_version, unit.batch_id, batch_version)
                record_ok = (
                    review_id is not None
                    and signature_id is not None
                    and (
                        self._signature_known(key) or self.release_signature_ok(uow, unit.batch_id)
                    )
                )
            facts = PackFacts(
                status=unit.status,
                expiry=unit.expiry,
                record_matches_signature=record_ok,
                patient_ref=ref,
                batch_matches=unit.batch_number == ident.batch and unit.expiry == ident.expiry,
                integrity_problem=problem,
                in_scope=in_scope,
            )
        status = decide(facts, uow.clock.now().date(), patient_ref)
        if not in_scope:
            unit = None  # nothing about another site's pack leaves this call
        dispensed_at = None
        if unit is not None and status == VerifyStatus.ALREADY_DISPENSED:
            dispensed_at = uow.session.scalar(
                select(Dispense.dispensed_at).where(Dispense.unit_id == unit.id)
            )
        message = _verify_message(status, ident.serial, unit, dispensed_at, patient_ref, problem)
        entity_id = unit.id if unit else ident.serial[:64]
        logged: dict[str, Any] = {
            "status": status.value,
            "gtin": ident.gtin,
            "serial": ident.serial,
        }
        if not in_scope:
            logged["out_of_scope"] = True  # a probe of another site's pack, for QA to see
        if problem is not None:
            logged["integrity_problem"] = problem
        alert = None
        if status == VerifyStatus.INTEGRITY_FAILURE:
            # the pack's record was tampered with: an alert for QA, committed now
            alert = self._raise_alert(uow, actor, AlertKind.INTEGRITY_FAILURE, scan, message)
            audit(uow, actor, "verify", "unit", entity_id, new=logged, site_id=actor.site_id)
            uow.commit()
        elif status == VerifyStatus.UNKNOWN:
            # a suspected falsified pack: the alert and its log row are committed now
            alert = self._raise_alert(uow, actor, AlertKind.SUSPECTED_FALSIFIED, scan, message)
            audit(uow, actor, "verify", "unit", entity_id, new=logged, site_id=actor.site_id)
            uow.commit()
        else:
            # read-only: the log row goes through the group-commit writer
            self.verification_log.submit(
                uow.session.get_bind(),  # type: ignore[arg-type]
                {
                    "at": uow.clock.now(),
                    "actor_id": actor.user_id,
                    "actor_name": actor.full_name,
                    "action": "verify",
                    "entity_type": "unit",
                    "entity_id": entity_id,
                    "old": None,
                    "new": logged,
                    "reason": None,
                    "site_id": actor.site_id,
                },
            )
        return Verification(
            status=status,
            message=message,
            unit_id=unit.id if unit else None,
            gtin=ident.gtin,
            serial=ident.serial,
            batch=ident.batch,
            expiry=ident.expiry,
            unit_status=unit.status if unit else None,
            dispensed_at=dispensed_at,
            alert_id=alert.id if alert else None,
        )

    def _dispense(
        self, uow: UnitOfWork, actor: Actor, scan: str, patient_ref: str
    ) -> DispenseResult:
        ident = parse_scan(scan)
        unit = self._unit_by_identity(uow, ident.gtin, ident.serial)
        if unit is None:
            raise Refused(
                f"unknown pack: GTIN {ident.gtin} serial {ident.serial} was never "
                "made in this network",
                field="scan",
                code="unknown_unit",
            )
        # a pharmacy hands over its own patients' packs: the ordering site's (an order
        # without one is no site's to hand over)
        ordering = self._orders.get(uow, unit.order_id).site_id
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
        self._check_release_signature(uow, unit, "scan")
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
        self._unit_event(
            uow,
            [unit],
            actor.site_id or self._production.get(uow, unit.batch_id).site_id,
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
        # (an order already dispensed stays so when a pack is handed over again after an undo)
        if complete and order.status != OrderStatus.DISPENSED.value:
            self._orders.transition(
                uow, actor, order, OrderStatus.DISPENSED, reason="every pack dispensed"
            )
        uow.commit()
        return DispenseResult(unit=unit, dispense=record, order_complete=complete)

    # --- undo of a dispense ------------------------------------------------------------------
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
        unit = self.get_unit(uow, unit_id)
        authorize(
            actor, Permission.DISPENSE_UNDO, site_id=self._orders.get(uow, unit.order_id).site_id
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
            actor.site_id or record.site_id or self._production.get(uow, unit.batch_id).site_id
        )
        dispensed = self._dispensing_event(uow, unit)
        self._transition(uow, actor, unit, UnitStatus.RELEASED, reason=f"dispense undone: {reason}")
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
        corrective = self._unit_event(
            uow,
            [unit],
            site_id,
            action="OBSERVE",
            biz_step=BizStep.INSPECTING,
            disposition=Disposition.SELLABLE_ACCESSIBLE,
        )
        if dispensed is not None:
            self.epcis.declare_error(
                uow,
                dispensed,
                reason="incorrect_data",
                corrective=[corrective.event_hash],
                site_id=site_id,
            )
        uow.commit()
        return unit

    def _dispensing_event(self, uow: UnitOfWork, unit: SerialUnit) -> str | None:
        from nearfab.custody.models import EpcisEpc

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

    # --- movements between sites, destruction, cold chain -------------------------------------
    def _units(self, uow: UnitOfWork, unit_ids: list[str]) -> list[SerialUnit]:
        if not unit_ids:
            raise ValidationFailed("give at least one pack", field="unit_ids")
        return [self.get_unit(uow, u) for u in unit_ids]

    def ship(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        unit_ids: list[str],
        from_site_id: str,
        to_site_id: str,
    ) -> EpcisEvent:
        """Packs leave a site (EPCIS OBSERVE shipping / in_transit at the sending site)."""
        authorize(actor, Permission.PACKS_MOVE, site_id=from_site_id)
        return self._move(
            uow,
            actor,
            unit_ids,
            from_site_id,
            to_site_id,
            at_site_id=from_site_id,
            biz_step=BizStep.SHIPPING,
            disposition=Disposition.IN_TRANSIT,
            record=("shipment", {"from": from_site_id, "to": to_site_id}),
        )

    def receive(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        unit_ids: list[str],
        from_site_id: str,
        at_site_id: str,
    ) -> EpcisEvent:
        """Packs arrive at a site (EPCIS OBSERVE receiving / in_progress there)."""
        authorize(actor, Permission.PACKS_MOVE, site_id=at_site_id)
        return self._move(
            uow,
            actor,
            unit_ids,
            from_site_id,
            at_site_id,
            at_site_id=at_site_id,
            biz_step=BizStep.RECEIVING,
            disposition=Disposition.IN_PROGRESS,
            record=("receipt", {"from": from_site_id, "at": at_site_id}),
        )

    def _move(
        self,
        uow: UnitOfWork,
        actor: Actor,
        unit_ids: list[str],
        source_site_id: str,
        destination_site_id: str,
        *,
        at_site_id: str,
        biz_step: BizStep,
        disposition: Disposition,
        record: tuple[str, dict[str, str]],
    ) -> EpcisEvent:
        """One movement of packs between sites: its EPCIS event and audit row, one commit."""
        units = self._units(uow, unit_ids)
        event = self._unit_event(
            uow,
            units,
            at_site_id,
            action="OBSERVE",
            biz_step=biz_step,
            disposition=disposition,
            sources=[("location", self.epcis.sgln(uow, source_site_id))],
            destinations=[("location", self.epcis.sgln(uow, destination_site_id))],
        )
        entity, sites = record
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            entity,
            event.event_hash[:64],
            new={"units": unit_ids, **sites},
            site_id=at_site_id,
        )
        uow.commit()
        return event

    def destroy(
        self, uow: UnitOfWork, actor: Actor, *, unit_ids: list[str], site_id: str, reason: str
    ) -> EpcisEvent:
        """Destruction of packs that may never be used: rejected, recalled, or past their
        expiry (a released pack in date, and any dispensed pack, never). Each pack ->
        `destroyed` (audited), one EPCIS ObjectEvent DELETE destroying / destroyed, chained in
        the site's ledger, in one transaction."""
        authorize(actor, Permission.PACKS_DESTROY)
        try:
            return self._destroy(uow, actor, unit_ids, site_id, reason)
        except DomainError as exc:
            ref = ",".join(unit_ids)[:64] or "(empty)"
            refuse(uow, actor, exc, "destruction", ref, site_id=actor.site_id)

    def _destroy(
        self, uow: UnitOfWork, actor: Actor, unit_ids: list[str], site_id: str, reason: str
    ) -> EpcisEvent:
        if not reason.strip():
            raise ValidationFailed("give the reason for the destruction", field="reason")
        self._site(uow, site_id, "site_id")
        authorize(actor, Permission.PACKS_DESTROY, site_id=site_id)
        units = self._units(uow, unit_ids)
        today = uow.clock.now().date()
        for u in units:
            if u.status == UnitStatus.DESTROYED.value:
                raise Refused(
                    f"pack {u.serial} was destroyed already", field="unit_ids", code="destroyed"
                )
            if u.status == UnitStatus.DISPENSED.value:
                raise Refused(
                    f"pack {u.serial} is dispensed: a pack with a patient is not destroyed here",
                    field="unit_ids",
                    code="not_destroyable",
                )
            if u.status not in (UnitStatus.REJECTED.value, UnitStatus.RECALLED.value) and (
                u.expiry >= today
            ):
                raise Refused(
                    f"pack {u.serial} is {u.status} and in date; only rejected, recalled or "
                    "expired packs are destroyed",
                    field="unit_ids",
                    code="not_destroyable",
                )
        for u in units:
            self._transition(uow, actor, u, UnitStatus.DESTROYED, reason=f"destroyed: {reason}")
        event = self._unit_event(
            uow,
            units,
            site_id,
            action="DELETE",
            biz_step=BizStep.DESTROYING,
            disposition=Disposition.DESTROYED,
        )
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "destruction",
            event.event_hash[:64],
            new={"units": unit_ids, "site_id": site_id},
            reason=reason,
            site_id=site_id,
        )
        uow.commit()
        return event

    def _site(self, uow: UnitOfWork, site_id: str, field: str) -> Site:
        site = uow.session.get(Site, site_id) if site_id else None
        if site is None:
            raise NotFound(f"no site {site_id!r}", field=field)
        return site

    # --- packing into shipping containers (SSCC) ---------------------------------------------
    def pack(
        self, uow: UnitOfWork, actor: Actor, *, unit_ids: list[str], to_site_id: str
    ) -> Container:
        """Put released packs, made at one site, into a new shipping container for the site
        that will hand them over: a new SSCC (the network's company prefix, a random serial
        reference, its check digit), an EPCIS AggregationEvent ADD packing /
        container_closed with the destination, chained in the making site's ledger."""
        authorize(actor, Permission.PACKS_MOVE)
        try:
            return self._pack(uow, actor, unit_ids, to_site_id)
        except DomainError as exc:
            ref = ",".join(unit_ids)[:64] or "(empty)"
            refuse(uow, actor, exc, "container", ref, site_id=actor.site_id)

    def _pack(
        self, uow: UnitOfWork, actor: Actor, unit_ids: list[str], to_site_id: str
    ) -> Container:
        self._site(uow, to_site_id, "to_site_id")
        if len(set(unit_ids)) != len(unit_ids):
            raise ValidationFailed("a pack is named twice", field="unit_ids")
        units = self._units(uow, unit_ids)
        for u in units:  # packed where they were made
            authorize(
                actor, Permission.PACKS_MOVE, site_id=self._production.get(uow, u.batch_id).site_id
            )
        for u in units:
            if u.status != UnitStatus.RELEASED.value:
                raise Refused(
                    f"pack {u.serial} is {u.status}; only released packs are shipped",
                    field="unit_ids",
                    code="not_released",
                )
            self._check_release_signature(uow, u, "unit_ids")
        packed = uow.session.scalars(
            select(ContainerUnit.unit_id)
            .join(Container, Container.sscc == ContainerUnit.sscc)
            .where(
                ContainerUnit.unit_id.in_(unit_ids),
                Container.status == ContainerStatus.PACKED.value,
            )
        ).all()
        if packed:
            raise Refused(
                f"{len(packed)} of these packs are in a container already",
                field="unit_ids",
                code="already_packed",
            )
        sites = {self._production.get(uow, u.batch_id).site_id for u in units}
        if len(sites) != 1:
            raise Refused(
                "the packs were made at different sites; pack each site's own",
                field="unit_ids",
                code="mixed_sites",
            )
        from_site_id = sites.pop()
        sscc = self._new_sscc(uow)
        now = uow.clock.now()
        container = Container(
            sscc=sscc,
            from_site_id=from_site_id,
            to_site_id=to_site_id,
            status=ContainerStatus.PACKED.value,
            packed_at=now,
            packed_by=actor.user_id,
        )
        uow.session.add(container)
        uow.flush()
        for u in units:
            uow.session.add(ContainerUnit(sscc=sscc, unit_id=u.id))
        where = self.epcis.sgln(uow, from_site_id)
        event = ev.aggregation_event(
            when=now,
            parent=ev.sscc_dl(sscc),
            children=[ev.sgtin_dl(u.gtin, u.serial) for u in units],
            action="ADD",
            biz_step=BizStep.PACKING,
            disposition=Disposition.CONTAINER_CLOSED,
            read_point=where,
            biz_location=where,
            destinations=[("location", self.epcis.sgln(uow, to_site_id))],
        )
        self.epcis.record(uow, event, site_id=from_site_id)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "container",
            sscc,
            new={"units": unit_ids, "from": from_site_id, "to": to_site_id, "status": "packed"},
            site_id=from_site_id,
        )
        uow.commit()
        return container

    def _new_sscc(self, uow: UnitOfWork) -> str:
        prefix = self.epcis.company_prefix
        for _ in range(20):
            sscc = ev.make_sscc(prefix, secrets.randbelow(10 ** (16 - len(prefix))))
            if uow.session.get(Container, sscc) is None:
                return sscc
        raise Conflict("no free SSCC found; retry", code="concurrent_change")  # pragma: no cover

    def unpack(
        self, uow: UnitOfWork, actor: Actor, *, sscc: str, at_site_id: str | None = None
    ) -> Container:
        """On receipt at its destination: take the packs out of the container (EPCIS
        AggregationEvent DELETE unpacking / in_progress, chained in the receiving site's
        ledger). A container is unpacked once, at the site it was packed for."""
        authorize(actor, Permission.PACKS_MOVE)
        try:
            return self._unpack(uow, actor, sscc.strip(), at_site_id)
        except DomainError as exc:
            refuse(uow, actor, exc, "container", sscc[:64] or "(empty)", site_id=actor.site_id)

    def _unpack(
        self, uow: UnitOfWork, actor: Actor, sscc: str, at_site_id: str | None
    ) -> Container:
        if not ev.valid_sscc(sscc):
            raise ValidationFailed(
                f"{sscc!r} is not an SSCC (18 digits, check digit)", field="sscc"
            )
        container = uow.session.get(Container, sscc)
        if container is None:
            raise NotFound(f"no container {sscc}", field="sscc")
        authorize(actor, Permission.PACKS_MOVE, site_id=container.to_site_id)
        if container.status != ContainerStatus.PACKED.value:
            raise Refused(f"container {sscc} was unpacked already", field="sscc", code="not_packed")
        site_id = at_site_id or container.to_site_id
        if site_id != container.to_site_id:
            raise Refused(
                f"container {sscc} was packed for another site",
                field="at_site_id",
                code="wrong_site",
            )
        units = self.units_in_container(uow, sscc)
        where = self.epcis.sgln(uow, site_id)
        event = ev.aggregation_event(
            when=uow.clock.now(),
            parent=ev.sscc_dl(sscc),
            children=[ev.sgtin_dl(u.gtin, u.serial) for u in units],
            action="DELETE",
            biz_step=BizStep.UNPACKING,
            disposition=Disposition.IN_PROGRESS,
            read_point=where,
            biz_location=where,
            sources=[("location", self.epcis.sgln(uow, container.from_site_id))],
        )
        self.epcis.record(uow, event, site_id=site_id)
        container.status = ContainerStatus.UNPACKED.value
        container.unpacked_at = uow.clock.now()
        container.unpacked_by = actor.user_id
        audit(
            uow,
            actor,
            AuditAction.TRANSITION,
            "container",
            sscc,
            old={"status": ContainerStatus.PACKED.value},
            new={"status": ContainerStatus.UNPACKED.value, "at": site_id},
            reason="received and unpacked at the destination site",
            site_id=site_id,
        )
        uow.commit()
        return container

    def units_in_container(self, uow: UnitOfWork, sscc: str) -> list[SerialUnit]:
        return list(
            uow.session.scalars(
                select(SerialUnit)
                .join(ContainerUnit, ContainerUnit.unit_id == SerialUnit.id)
                .where(ContainerUnit.sscc == sscc)
                .order_by(SerialUnit.batch_id, SerialUnit.pack_index)
            )
        )

    def record_temperature(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        unit_ids: list[str],
        site_id: str,
        readings: list[tuple[datetime, float]],
        device: str | None = None,
    ) -> EpcisEvent:
        """Cold-chain readings (°C) of packs held at a site, as EPCIS sensor data."""
        authorize(actor, Permission.READINGS_RECORD, site_id=site_id)  # the holding site's
        if not readings:
            raise ValidationFailed("give at least one reading", field="readings")
        units = self._units(uow, unit_ids)
        elements = []
        for when, celsius in readings:
            meta: dict[str, Any] = {"time": ev.epcis_time(when)}
            if device:
                meta["deviceID"] = device
            elements.append(
                {
                    "sensorMetadata": meta,
                    "sensorReport": [{"type": "Temperature", "value": celsius, "uom": "CEL"}],
                }
            )
        event = self._unit_event(
            uow,
            units,
            site_id,
            action="OBSERVE",
            biz_step=BizStep.SENSOR_REPORTING,
            disposition=None,
            sensor_elements=elements,
        )
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "cold_chain",
            event.event_hash[:64],
            new={"units": unit_ids, "readings": len(readings)},
            site_id=site_id,
        )
        uow.commit()
        return event

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


def _verify_message(
    status: VerifyStatus,
    serial: str,
    unit: SerialUnit | None,
    dispensed_at: datetime | None,
    patient_ref: str | None,
    problem: str | None = None,
) -> str:
    if status == VerifyStatus.OK:
        return f"pack {serial} may be handed over"
    if status == VerifyStatus.INTEGRITY_FAILURE:
        return (
            f"{problem or f'pack {serial}: its record differs from the signed release'}: the "
            "record was tampered with; do not hand over, hold it and tell QA"
        )
    if status == VerifyStatus.UNKNOWN:
        if unit is not None and unit.status == UnitStatus.DESTROYED.value:
            return (
                f"pack {serial} was destroyed: this pack should not exist; suspected "
                "falsified or diverted, do not hand over"
            )
        if unit is None:  # never made, or not a pack of a site the verifier serves
            return (
                f"pack {serial} is not known at your sites (never made in this network, or "
                "not yours to check): suspected falsified, do not hand over"
            )
        return (
            f"pack {serial}: the label's batch or expiry does not match the record: "
            "suspected falsified, do not hand over"
        )
    if status == VerifyStatus.ALREADY_DISPENSED:
        when = f" on {dispensed_at:%Y-%m-%d %H:%M %Z}" if dispensed_at else ""
        return f"pack {serial} was already dispensed{when}"
    if status == VerifyStatus.WRONG_PATIENT:
        return f"pack {serial} is for another patient, not {patient_ref}"
    if status == VerifyStatus.EXPIRED and unit is not None:
        return f"pack {serial} expired on {unit.expiry}"
    if status == VerifyStatus.NOT_RELEASED and unit is not None:
        if unit.status == UnitStatus.RELEASED.value:
            return (
                f"pack {serial}: its batch record no longer matches the QP's release "
                "signature; hold it and investigate"
            )
        return f"pack {serial} is {unit.status}, not released by a QP"
    if status == VerifyStatus.REJECTED:
        return f"pack {serial} belongs to a rejected batch"
    return f"pack {serial} is {status.value}"


def _dose_of(order: Order) -> Quantity:
    """The order's dose as the family accepted it (value and unit)."""
    return Quantity(order.dose_mg, "mg")


def _signature_facts(
    decision: str | None, signature_id: str | None, sig: Signature | None
) -> SignatureFacts:
    return SignatureFacts(
        review_decision=decision,
        review_signature_id=signature_id,
        signature_hash=sig.signature_hash if sig is not None else None,
        signature_hash_recomputed=signature_hash_of(sig) if sig is not None else None,
        signed_record_hash=sig.record_hash if sig is not None else None,
    )
