"""Packs between sites without a container (ship, receive), destruction of packs that may never be
used, and cold-chain readings of held packs: each one EPCIS event chained in the site's
ledger, with its audit row, in one transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nearfab.common.errors import DomainError, Refused, ValidationFailed
from nearfab.custody.enums import BizStep, Disposition, UnitStatus
from nearfab.custody.logic import epcis as ev
from nearfab.custody.models import EpcisEvent
from nearfab.custody.services.packs import Packs
from nearfab.identity import Actor, AuditAction, Permission, audit, authorize, refuse
from nearfab.uow import UnitOfWork


class Movements:
    def __init__(self, packs: Packs) -> None:
        self._packs = packs

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
        units = self._packs.units(uow, unit_ids)
        event = self._packs.unit_event(
            uow,
            units,
            at_site_id,
            action="OBSERVE",
            biz_step=biz_step,
            disposition=disposition,
            sources=[("location", self._packs.epcis.sgln(uow, source_site_id))],
            destinations=[("location", self._packs.epcis.sgln(uow, destination_site_id))],
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
        self._packs.site(uow, site_id, "site_id")
        authorize(actor, Permission.PACKS_DESTROY, site_id=site_id)
        units = self._packs.units(uow, unit_ids)
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
            self._packs.transition(
                uow, actor, u, UnitStatus.DESTROYED, reason=f"destroyed: {reason}"
            )
        event = self._packs.unit_event(
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
        units = self._packs.units(uow, unit_ids)
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
        event = self._packs.unit_event(
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
