"""What every custody use case on packs shares: the domains it reads, the pack look-ups, the
audited status transition, the EPCIS event of a pack's step (chained in the site's ledger by
the event store) and the alerts a pharmacist or QA must look at."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select

from nearfab.common.errors import DomainError, NotFound, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.common.quantity import Quantity
from nearfab.custody.enums import (
    UNIT_TRANSITIONS,
    AlertKind,
    AlertStatus,
    BizStep,
    Disposition,
    UnitStatus,
)
from nearfab.custody.gs1 import parse_scan
from nearfab.custody.kit import LabelKit
from nearfab.custody.logic import epcis as ev
from nearfab.custody.models import (
    CustodyAlert,
    Dispense,
    EpcisEvent,
    Recall,
    RecallUnit,
    SerialUnit,
)
from nearfab.custody.services.alerts import FILTERS, AlertStep, history_of, outcome_of
from nearfab.custody.services.epcis import EpcisStore
from nearfab.custody.services.ledger import CustodyLedger
from nearfab.designs import FamilyRegistry
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    audit,
    audited_transition,
    authorize,
    visible_sites,
)
from nearfab.masterfiles import MasterFileService
from nearfab.masterfiles.reads import master_file_view
from nearfab.network.reads import site as network_site
from nearfab.orders import OrderService
from nearfab.orders.reads import order_label_view, patient_view
from nearfab.production import ProductionService
from nearfab.production.reads import batch_view
from nearfab.quality import QualityService
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.masterfiles import MasterFile
    from nearfab.network import Site

# the owners' read views an alert's pack is joined with (custody names no other domain's table)
_BATCH = batch_view()
_ORDER_LABEL = order_label_view()
_PATIENT = patient_view()
_MASTER_FILE = master_file_view()
ALERTS_SHOWN = 500  # the newest alerts a list holds


@dataclass(frozen=True)
class AlertRow:
    """One custody alert as the people of its site read it: when and where it was raised, the
    pack it names (serial, product in its family's words, lot), the patient to contact, why the
    pack must not be with the patient (`reason`, naming the recall) and the pack's status now.
    The pack's fields are None for an alert on a scan that matched no pack. Its follow-up:
    `status` (`AlertStatus`), who moved it last and when, the closing `outcome`, and every
    step (`history`, oldest first)."""

    id: str
    kind: str
    raised_at: datetime
    site_id: str | None
    unit_id: str | None
    serial: str | None
    product: str | None
    lot: str | None
    patient_ref: str | None
    reason: str
    recall_id: str | None
    unit_status: str | None
    scan: str
    message: str
    status: str = AlertStatus.OPEN.value
    status_changed_at: datetime | None = None
    status_changed_by: str | None = None
    outcome: str | None = None
    history: list[AlertStep] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "history": [h.to_dict() for h in self.history]}


class Packs:
    def __init__(
        self,
        production: ProductionService,
        master_files: MasterFileService,
        orders: OrderService,
        quality: QualityService,
        families: FamilyRegistry,
        epcis: EpcisStore,
    ) -> None:
        self.production = production
        self.master_files = master_files
        self.orders = orders
        self.quality = quality
        self.families = families
        self.epcis = epcis

    @property
    def ledger(self) -> CustodyLedger | None:
        return self.epcis.ledger

    def labels_kit(self, mf: MasterFile) -> LabelKit:
        """The identity and label rules of the master file's product family."""
        kit: LabelKit = self.families.get(mf.product_family).labels
        return kit

    # --- look-ups ------------------------------------------------------------------------------
    def get_unit(self, uow: UnitOfWork, unit_id: str) -> SerialUnit:
        unit = uow.session.get(SerialUnit, unit_id)
        if unit is None:
            raise NotFound(f"no pack {unit_id!r}", field="unit_id")
        return unit

    def units(self, uow: UnitOfWork, unit_ids: list[str]) -> list[SerialUnit]:
        if not unit_ids:
            raise ValidationFailed("give at least one pack", field="unit_ids")
        return [self.get_unit(uow, u) for u in unit_ids]

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

    def unit_by_identity(self, uow: UnitOfWork, gtin: str, serial: str) -> SerialUnit | None:
        return uow.session.scalar(
            select(SerialUnit).where(SerialUnit.gtin == gtin, SerialUnit.serial == serial)
        )

    def site(self, uow: UnitOfWork, site_id: str, field: str) -> Site:
        return network_site(uow.session, site_id, field)

    # --- steps of a pack's life ---------------------------------------------------------------
    def transition(
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

    def unit_event(
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

    def raise_alert(
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
                unit = self.unit_by_identity(uow, ident.gtin, ident.serial)
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

    def alerts(
        self,
        uow: UnitOfWork,
        actor: Actor,
        limit: int = ALERTS_SHOWN,
        *,
        status: str = "all",
        alert_id: str | None = None,
    ) -> list[AlertRow]:
        """The custody alerts `actor` may read, those not closed first, then newest first (at
        most `limit`, so closed alerts never push an open one off the list): the alerts
        raised at the actor's own site; a grant that reaches the network (control-site staff,
        the auditor grant) reads every site's. An alert raised at no site belongs to the
        network: site staff never see it. `status`: `all`, `open` (every status but closed)
        or `closed`; `alert_id`: that alert only. Needs `trace.read` (the role of trace and
        dispense readers); three statements whatever the number of alerts (the alerts joined
        with their packs, orders, batches, master files and patients; the recalls naming those
        packs; their history)."""
        authorize(actor, Permission.TRACE_READ)
        wanted = (status or "all").strip().lower()
        if wanted not in FILTERS:
            raise ValidationFailed(
                f"unknown status filter {status!r}; use one of: {', '.join(FILTERS)}",
                field="status",
            )
        seen = visible_sites(actor, Permission.TRACE_READ)
        closed = CustodyAlert.status == AlertStatus.CLOSED.value
        # the patient to contact: the one the pack was handed to, else the one it was made for
        patient_id = func.coalesce(Dispense.patient_id, SerialUnit.patient_id)
        stmt = (
            select(
                CustodyAlert,
                SerialUnit,
                _PATIENT.c.ref,
                _BATCH.c.status,
                _ORDER_LABEL.c.medication,
                _ORDER_LABEL.c.dose_value,
                _ORDER_LABEL.c.dose_unit,
                _MASTER_FILE.c.product_family,
            )
            .outerjoin(SerialUnit, SerialUnit.id == CustodyAlert.unit_id)
            .outerjoin(Dispense, Dispense.unit_id == SerialUnit.id)
            .outerjoin(_PATIENT, _PATIENT.c.id == patient_id)
            .outerjoin(_BATCH, _BATCH.c.id == SerialUnit.batch_id)
            .outerjoin(_ORDER_LABEL, _ORDER_LABEL.c.id == SerialUnit.order_id)
            .outerjoin(_MASTER_FILE, _MASTER_FILE.c.id == _BATCH.c.master_file_id)
            .order_by(
                case((closed, 1), else_=0), CustodyAlert.raised_at.desc(), CustodyAlert.id.desc()
            )
            .limit(max(1, limit))
        )
        if alert_id is not None:
            stmt = stmt.where(CustodyAlert.id == alert_id)
        if wanted == "open":
            stmt = stmt.where(~closed)
        elif wanted == "closed":
            stmt = stmt.where(closed)
        if seen is not None:  # never "everywhere": an empty set reads nothing
            stmt = stmt.where(CustodyAlert.site_id.in_(sorted(seen)))
        rows = list(uow.session.execute(stmt))
        unit_ids = sorted({r[1].id for r in rows if r[1] is not None})
        recalls: dict[str, Recall] = {}
        if unit_ids:
            found = uow.session.execute(
                select(RecallUnit.unit_id, Recall)
                .join(Recall, Recall.id == RecallUnit.recall_id)
                .where(RecallUnit.unit_id.in_(unit_ids))
                .order_by(Recall.created_at, Recall.id)
            )
            recalls = {u: r for u, r in found}  # the newest recall of each pack
        steps = history_of(uow, [r[0].id for r in rows])
        out = []
        for alert, unit, ref, batch_status, medication, dose_value, dose_unit, family in rows:
            detail = alert.detail or {}
            message = str(detail.get("message") or "")
            recall = recalls.get(unit.id) if unit is not None else None
            product = None
            if unit is not None and medication is not None and family is not None:
                kit = self.families.get(family).labels
                product = kit.product_name(medication, Quantity(float(dose_value), str(dose_unit)))
            out.append(
                AlertRow(
                    id=alert.id,
                    kind=alert.kind,
                    raised_at=alert.raised_at,
                    site_id=alert.site_id,
                    unit_id=alert.unit_id,
                    serial=unit.serial if unit is not None else None,
                    product=product,
                    lot=unit.batch_number if unit is not None else None,
                    patient_ref=str(detail.get("patient_ref") or ref or "") or None,
                    reason=_alert_reason(alert, unit, batch_status, recall, message),
                    recall_id=recall.id if recall is not None else None,
                    unit_status=unit.status if unit is not None else None,
                    scan=alert.scan,
                    message=message,
                    status=alert.status,
                    status_changed_at=alert.status_changed_at,
                    status_changed_by=alert.status_changed_by,
                    outcome=outcome_of(steps[alert.id]),
                    history=steps[alert.id],
                )
            )
        return out


def _alert_reason(
    alert: CustodyAlert,
    unit: SerialUnit | None,
    batch_status: str | None,
    recall: Recall | None,
    message: str,
) -> str:
    """Why a deferred-verification alert's pack must not be with its patient, in words:
    recalled (naming the recall, what it recalled and why), rejected by a QP, or of a rejected
    batch; any other alert says what it said when it was raised."""
    if alert.kind != AlertKind.DISPENSED_THEN_RECALLED.value or unit is None:
        return message or "—"
    if recall is not None:
        return (
            f"recalled by recall {recall.id} ({recall.scope} {recall.scope_ref}): {recall.reason}"
        )
    if unit.status == UnitStatus.RECALLED.value:
        return "recalled"
    if unit.status == UnitStatus.REJECTED.value:
        return "rejected by a QP"
    if batch_status == "rejected":
        return "of a batch rejected by a QP"
    return message or "—"
