"""Job tickets: the control site signs what a machine is authorised to make (the gate passed)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from nearfab.common.errors import Forbidden, Refused
from nearfab.designs import FamilyRegistry
from nearfab.identity import Actor, Permission, authorize, refuse
from nearfab.orders import OrderService
from nearfab.production.kit import build_approver
from nearfab.production.services.gate import ProductionGate
from nearfab.production.tickets import SignedTicket, TicketSigner
from nearfab.scheduling import SchedulingService
from nearfab.uow import UnitOfWork

TICKET_LIFETIME = timedelta(hours=24)


class TicketDesk:
    def __init__(
        self,
        gate: ProductionGate,
        orders: OrderService,
        scheduling: SchedulingService,
        signer: TicketSigner,
        families: FamilyRegistry | None = None,
    ) -> None:
        self._families = families
        self._gate = gate
        self._orders = orders
        self._scheduling = scheduling
        self._signer = signer

    def issue(self, uow: UnitOfWork, actor: Actor, job_id: str) -> SignedTicket:
        """The control site signs what the machine is authorised to make."""
        job = self._scheduling.get(uow, job_id)
        authorize(actor, Permission.TICKET_ISSUE, site_id=job.site_id)
        mf, site, machine = self._gate.context(uow, job)
        # a family may require a build at some kinds of site to be approved by a given role
        # of the control site: issuing the ticket is that approval (production.kit)
        approver = (
            build_approver(self._families.get(mf.product_family).machines, site.kind)
            if self._families is not None
            else None
        )
        try:
            self._gate.check(uow, mf, site, machine)
            if approver is not None and approver not in actor.roles:
                raise Refused(
                    f"a build at a {site.kind} site is approved by the control site's "
                    f"{approver}: {actor.username} may not issue its ticket",
                    field="approver",
                    code="build_approval_required",
                )
        except (Refused, Forbidden) as exc:
            refuse(uow, actor, exc, "job", job.id, site_id=site.id)
        order = self._orders.get(uow, job.order_id)
        now = uow.clock.now()
        payload: dict[str, Any] = {
            "ticket_id": f"tkt_{job.id}",
            "job_id": job.id,
            "order_id": order.id,
            "machine_id": machine.id,
            "site_id": site.id,
            "master_file": {"id": mf.id, "code": mf.code, "version": mf.version},
            "design": order.design,
            "process_parameters": mf.process_parameters,
            "material_lot_id": job.material_lot_id,
            "issued_at": now.isoformat(),
            "expires_at": (now + TICKET_LIFETIME).isoformat(),
        }
        if approver is not None:
            payload["build_approval"] = {
                "site_kind": site.kind,
                "role": approver,
                "by": actor.user_id,
                "at": now.isoformat(),
            }
        ticket = self._signer.sign(payload)
        self._scheduling.attach_ticket(uow, actor, job, ticket.to_dict(), ticket.ticket_hash)
        uow.commit()
        return ticket
