"""Shipping containers (SSCC): released packs packed at their making site for one destination and
unpacked on receipt there (EPCIS aggregation events)."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from nearfab.common.errors import Conflict, DomainError, NotFound, Refused, ValidationFailed
from nearfab.custody.enums import BizStep, ContainerStatus, Disposition, UnitStatus
from nearfab.custody.logic import epcis as ev
from nearfab.custody.models import Container, ContainerUnit, SerialUnit
from nearfab.custody.services.packs import Packs
from nearfab.custody.services.releasecheck import ReleaseCheck
from nearfab.identity import Actor, AuditAction, Permission, audit, authorize, refuse
from nearfab.uow import UnitOfWork


class Containers:
    def __init__(self, packs: Packs, release: ReleaseCheck) -> None:
        self._packs = packs
        self._release = release

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
        self._packs.site(uow, to_site_id, "to_site_id")
        if len(set(unit_ids)) != len(unit_ids):
            raise ValidationFailed("a pack is named twice", field="unit_ids")
        units = self._packs.units(uow, unit_ids)
        for u in units:  # packed where they were made
            authorize(
                actor,
                Permission.PACKS_MOVE,
                site_id=self._packs.production.get(uow, u.batch_id).site_id,
            )
        for u in units:
            if u.status != UnitStatus.RELEASED.value:
                raise Refused(
                    f"pack {u.serial} is {u.status}; only released packs are shipped",
                    field="unit_ids",
                    code="not_released",
                )
            self._release.require(uow, u, "unit_ids")
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
        sites = {self._packs.production.get(uow, u.batch_id).site_id for u in units}
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
        where = self._packs.epcis.sgln(uow, from_site_id)
        event = ev.aggregation_event(
            when=now,
            parent=ev.sscc_dl(sscc),
            children=[ev.sgtin_dl(u.gtin, u.serial) for u in units],
            action="ADD",
            biz_step=BizStep.PACKING,
            disposition=Disposition.CONTAINER_CLOSED,
            read_point=where,
            biz_location=where,
            destinations=[("location", self._packs.epcis.sgln(uow, to_site_id))],
        )
        self._packs.epcis.record(uow, event, site_id=from_site_id)
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
        prefix = self._packs.epcis.company_prefix
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
        where = self._packs.epcis.sgln(uow, site_id)
        event = ev.aggregation_event(
            when=uow.clock.now(),
            parent=ev.sscc_dl(sscc),
            children=[ev.sgtin_dl(u.gtin, u.serial) for u in units],
            action="DELETE",
            biz_step=BizStep.UNPACKING,
            disposition=Disposition.IN_PROGRESS,
            read_point=where,
            biz_location=where,
            sources=[("location", self._packs.epcis.sgln(uow, container.from_site_id))],
        )
        self._packs.epcis.record(uow, event, site_id=site_id)
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
