"""Material-lot use cases: receive, release from quarantine, consume, find usable lots."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, Protocol

from sqlalchemy import select

from nearfab.common.errors import Conflict, NotFound, Refused, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.common.states import parse_state
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    audit,
    audited_transition,
    authorize,
)
from nearfab.masterfiles import MasterFileService
from nearfab.materials.enums import LOT_TRANSITIONS, LotStatus
from nearfab.materials.models import MaterialLot
from nearfab.network import NetworkService
from nearfab.uow import UnitOfWork


class LotAttributeRules(Protocol):
    """The product families' schemas of a material lot's attributes. Bootstrap wires
    nearfab.quality.kit.FamilyLotRules: each family's `release` part owns its lots' schema."""

    def names(self) -> list[str]:
        """The registered families."""
        ...

    def lot_attributes(self, family: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """The attributes as stored, or ValidationFailed naming `attributes.<key>`."""
        ...


class MaterialService:
    def __init__(
        self,
        network: NetworkService,
        master_files: MasterFileService | None = None,
        lot_rules: LotAttributeRules | None = None,
    ) -> None:
        """`master_files` and `lot_rules` are needed to receive lots (their attributes are
        checked by a family); without them the service only reads and updates lots."""
        self._network = network
        self._master_files = master_files
        self._lot_rules = lot_rules

    def family_for(
        self, uow: UnitOfWork, material_code: str, product_family: str | None = None
    ) -> str:
        """The product family whose schema checks the attributes of a lot of `material_code`.

        The family of the products the lot is for, in this order:
        1. `product_family` when the receipt names it (it must be registered, and agree with
           the master files that name the material, if any);
        2. the family of the master files that name the material code, whatever their version
           or status (a lot may arrive before its product is approved); refused when they
           belong to more than one family (the receipt must then name it);
        3. the only registered family, when the material is in no master file yet and one
           family is registered;
        otherwise refused (field `product_family`): nobody could say what the attributes mean.
        """
        if self._lot_rules is None or self._master_files is None:
            raise Refused(
                "no product family is wired in to check a lot's attributes",
                field="product_family",
                code="no_families",
            )
        registered = self._lot_rules.names()
        named = sorted(
            {
                mf.product_family
                for mf in self._master_files.list_all(uow)
                if mf.material_code == material_code
            }
        )
        if product_family is not None:
            if product_family not in registered:
                raise ValidationFailed(
                    f"unknown product family {product_family!r}"
                    f" (registered: {', '.join(registered) or 'none'})",
                    field="product_family",
                )
            if named and product_family not in named:
                raise ValidationFailed(
                    f"material {material_code} is used by {', '.join(named)} products,"
                    f" not {product_family}",
                    field="product_family",
                )
            return product_family
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise ValidationFailed(
                f"material {material_code} is used by products of {', '.join(named)};"
                " name the product family the lot is for",
                field="product_family",
            )
        if len(registered) == 1:
            return registered[0]
        raise ValidationFailed(
            f"no master file uses material {material_code}; name the product family the lot"
            f" is for (registered: {', '.join(registered) or 'none'})",
            field="product_family",
        )

    def receive_lot(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        lot_number: str,
        material_code: str,
        description: str,
        site_id: str,
        supplier: str,
        expiry: date,
        quantity_g: float,
        attributes: Mapping[str, Any],
        assay_pct: float = 100.0,
        product_family: str | None = None,
    ) -> MaterialLot:
        """Receive a lot into quarantine. `attributes` are the lot's family-defined properties,
        checked and stored as the family of the products it is for says (`family_for`)."""
        site = self._network.get_site(uow, site_id)
        authorize(actor, Permission.LOT_RECEIVE, site_id=site.id)
        if not math.isfinite(quantity_g) or quantity_g <= 0:
            raise ValidationFailed("quantity must be positive", field="quantity_g")
        family = self.family_for(uow, material_code, product_family)
        assert self._lot_rules is not None  # family_for refuses without them
        checked = self._lot_rules.lot_attributes(family, attributes)
        if not math.isfinite(assay_pct) or not 80 <= assay_pct <= 120:
            raise ValidationFailed(
                "assay must be between 80 and 120 % of label claim", field="assay_pct"
            )
        if uow.session.scalar(select(MaterialLot).where(MaterialLot.lot_number == lot_number)):
            raise Conflict(f"lot {lot_number!r} already received", field="lot_number")
        lot = MaterialLot(
            id=new_id("lot"),
            lot_number=lot_number,
            material_code=material_code,
            description=description,
            site_id=site.id,
            supplier=supplier,
            expiry=expiry,
            status=LotStatus.QUARANTINE.value,
            quantity_g=quantity_g,
            attributes=checked,
            assay_pct=assay_pct,
            received_at=uow.clock.now(),
        )
        uow.session.add(lot)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "material_lot",
            lot.id,
            new={
                "lot_number": lot_number,
                "material_code": material_code,
                "site_id": site.id,
                "expiry": expiry,
                "quantity_g": quantity_g,
                "attributes": checked,
                "assay_pct": assay_pct,
                "status": lot.status,
            },
            site_id=site.id,
        )
        uow.commit()
        return lot

    def set_status(
        self, uow: UnitOfWork, actor: Actor, lot_id: str, target: LotStatus | str, *, reason: str
    ) -> MaterialLot:
        lot = self.get(uow, lot_id)
        authorize(actor, Permission.LOT_STATUS, site_id=lot.site_id)
        target = parse_state(LotStatus, target)
        audited_transition(
            uow,
            actor,
            lot,
            target,
            LOT_TRANSITIONS,
            entity_type="material_lot",
            label=f"lot {lot.lot_number}",
            reason=reason,
            site_id=lot.site_id,
        )
        uow.commit()
        return lot

    def get(self, uow: UnitOfWork, lot_id: str) -> MaterialLot:
        lot = uow.session.get(MaterialLot, lot_id)
        if lot is None:
            raise NotFound(f"no material lot {lot_id!r}", field="material_lot_id")
        return lot

    def list_lots(self, uow: UnitOfWork, site_id: str | None = None) -> list[MaterialLot]:
        stmt = select(MaterialLot).order_by(MaterialLot.lot_number)
        if site_id:
            stmt = stmt.where(MaterialLot.site_id == site_id)
        return list(uow.session.scalars(stmt))

    def usable_lot(
        self,
        uow: UnitOfWork,
        *,
        site_id: str,
        material_code: str,
        needed_g: float,
        accept: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> MaterialLot | None:
        """The approved, unexpired lot at a site with enough material, earliest expiry first;
        with `accept` (a product family's lot choice, on the lot's attributes), the first such
        lot it accepts."""
        today = uow.clock.now().date()
        stmt = (
            select(MaterialLot)
            .where(
                MaterialLot.site_id == site_id,
                MaterialLot.material_code == material_code,
                MaterialLot.status == LotStatus.APPROVED.value,
                MaterialLot.expiry > today,
                MaterialLot.quantity_g >= needed_g,
            )
            .order_by(MaterialLot.expiry, MaterialLot.lot_number)
        )
        if accept is None:
            return uow.session.scalars(stmt).first()
        return next(
            (lot for lot in uow.session.scalars(stmt) if accept(lot.attributes or {})), None
        )

    def consume(
        self, uow: UnitOfWork, actor: Actor, lot_id: str, grams: float, *, batch_id: str
    ) -> MaterialLot:
        """Draw material for a batch, inside the batch's transaction (no commit here)."""
        lot = self.get(uow, lot_id)
        if lot.status != LotStatus.APPROVED.value:
            raise Refused(
                f"lot {lot.lot_number} is {lot.status}, not approved",
                field="material_lot",
                code="lot_not_usable",
            )
        if lot.expiry <= uow.clock.now().date():
            raise Refused(
                f"lot {lot.lot_number} expired on {lot.expiry}",
                field="material_lot",
                code="lot_not_usable",
            )
        if lot.quantity_g < grams:
            raise Refused(
                f"lot {lot.lot_number} holds {lot.quantity_g:.2f} g; {grams:.2f} g needed",
                field="material_lot",
                code="lot_not_usable",
            )
        old = lot.quantity_g
        lot.quantity_g = round(old - grams, 6)
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            "material_lot",
            lot.id,
            old={"quantity_g": old},
            new={"quantity_g": lot.quantity_g},
            reason=f"consumed by batch {batch_id}",
            site_id=lot.site_id,
        )
        return lot
