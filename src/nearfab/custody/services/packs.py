"""What every custody use case on packs shares: the domains it reads, the pack look-ups, the
audited status transition, the EPCIS event of a pack's step (chained in the site's ledger by
the event store) and the alerts a pharmacist or QA must look at."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from nearfab.common.errors import DomainError, NotFound, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.custody.enums import UNIT_TRANSITIONS, AlertKind, BizStep, Disposition, UnitStatus
from nearfab.custody.gs1 import parse_scan
from nearfab.custody.kit import LabelKit
from nearfab.custody.logic import epcis as ev
from nearfab.custody.models import CustodyAlert, EpcisEvent, SerialUnit
from nearfab.custody.services.epcis import EpcisStore
from nearfab.custody.services.ledger import CustodyLedger
from nearfab.designs import FamilyRegistry
from nearfab.identity import Actor, AuditAction, audit, audited_transition
from nearfab.masterfiles import MasterFileService
from nearfab.network.reads import site as network_site
from nearfab.orders import OrderService
from nearfab.production import ProductionService
from nearfab.quality import QualityService
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.masterfiles import MasterFile
    from nearfab.network import Site


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
