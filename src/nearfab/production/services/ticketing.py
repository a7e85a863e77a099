"""Job tickets: the control site signs what a machine is authorised to make (the gate passed).

A family may require a build at some kinds of site to be approved by a named role of the control
site (`production.kit.build_approver`): such a build's ticket is issued only by that approval, an
e-signature (password re-entry and its meaning, 21 CFR 11.50/11.200) of a holder of the role at
the control site, made in the transaction that signs the ticket; the ticket's `build_approval`
names the approver, the role, the time and the signature."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from nearfab.common.errors import Forbidden, Refused
from nearfab.common.node import BUILD_APPROVAL
from nearfab.designs import FamilyRegistry
from nearfab.identity import (
    Actor,
    Permission,
    authorize,
    authorize_network,
    can_network,
    refuse,
    visible_sites,
)
from nearfab.orders import OrderService
from nearfab.production.kit import build_approver
from nearfab.production.services.gate import ProductionGate
from nearfab.production.tickets import SignedTicket, TicketSigner
from nearfab.scheduling import JobStatus, SchedulingService
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.identity import SignatureService
    from nearfab.masterfiles import MasterFile
    from nearfab.network import Machine, Site
    from nearfab.orders import Order
    from nearfab.scheduling import Job

TICKET_LIFETIME = timedelta(hours=24)


def approval_meaning(site_kind: str) -> str:
    """The meaning an approval's signature states unless the signer gives another."""
    return f"{site_kind} build approval"


@dataclass(frozen=True)
class BuildAwaiting:
    """A planned build that waits for the control site's approval, as the approver sees it."""

    job_id: str
    order_id: str
    site_code: str
    site_kind: str
    machine_name: str
    master_file: str  # code v version
    design: str  # the family's line for people: what the machine will make
    approver: str  # the role that approves it
    planned_start: datetime | None
    may_approve: bool  # the caller holds that role at the control site

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (BuildAwaitingOut): the planned start as ISO 8601 text."""
        row = asdict(self)
        row["planned_start"] = self.planned_start.isoformat() if self.planned_start else None
        return row


class TicketDesk:
    def __init__(
        self,
        gate: ProductionGate,
        orders: OrderService,
        scheduling: SchedulingService,
        signer: TicketSigner,
        families: FamilyRegistry | None = None,
        signatures: SignatureService | None = None,
    ) -> None:
        self._families = families
        self._gate = gate
        self._orders = orders
        self._scheduling = scheduling
        self._signer = signer
        self._signatures = signatures

    def _approver(self, mf: MasterFile, site: Site) -> str | None:
        """The role of the control site that approves a build of `mf` at `site` (the family's
        answer), or None when the ticket is issued as any other."""
        if self._families is None:
            return None
        return build_approver(self._families.get(mf.product_family).machines, site.kind)

    def issue(self, uow: UnitOfWork, actor: Actor, job_id: str) -> SignedTicket:
        """The control site signs what the machine is authorised to make."""
        job = self._scheduling.get(uow, job_id)
        authorize(actor, Permission.TICKET_ISSUE, site_id=job.site_id)
        mf, site, machine = self._gate.context(uow, job)
        approver = self._approver(mf, site)
        try:
            self._gate.check(uow, mf, site, machine)
            if approver is not None:
                # the build's ticket is issued by its approval (approve), never by hand
                raise Refused(
                    f"a build at a {site.kind} site is approved by the control site's "
                    f"{approver} with an e-signature (builds awaiting approval): its ticket "
                    f"is issued by that approval, not by {actor.username}",
                    field="approver",
                    code="build_approval_required",
                )
        except (Refused, Forbidden) as exc:
            refuse(uow, actor, exc, "job", job.id, site_id=site.id)
        order = self._orders.get(uow, job.order_id)
        return self._sign(uow, actor, job, self._payload(uow, job, order, mf, site, machine))

    def awaiting_approval(self, uow: UnitOfWork, actor: Actor) -> list[BuildAwaiting]:
        """The planned builds whose family wants the control site's approval at their site: a
        queue read like the release queue (site staff see their own site's only); `may_approve`
        when the caller holds the approving role with the network's reach."""
        authorize(actor, Permission.RELEASE_QUEUE_READ)
        sites = visible_sites(actor, Permission.RELEASE_QUEUE_READ)
        approver_reach = can_network(actor, Permission.BUILD_APPROVE)
        rows = []
        for job in self._scheduling.jobs(uow, JobStatus.PLANNED):
            if sites is not None and job.site_id not in sites:
                continue
            mf, site, machine = self._gate.context(uow, job)
            approver = self._approver(mf, site)
            if approver is None or self._families is None:
                continue
            order = self._orders.get(uow, job.order_id)
            kit = self._families.get(mf.product_family).machines
            rows.append(
                BuildAwaiting(
                    job_id=job.id,
                    order_id=order.id,
                    site_code=site.code,
                    site_kind=site.kind,
                    machine_name=machine.name,
                    master_file=f"{mf.code} v{mf.version}",
                    design=kit.design_summary(order.design or {}),
                    approver=approver,
                    planned_start=job.planned_start,
                    may_approve=approver_reach and approver in actor.roles,
                )
            )
        return rows

    def approve(
        self,
        uow: UnitOfWork,
        actor: Actor,
        job_id: str,
        *,
        password: str,
        meaning: str | None = None,
        username: str | None = None,
        totp: str | None = None,
    ) -> SignedTicket:
        """The control site's approval of one build, e-signed by a holder of the role the
        family names, in the transaction that signs its ticket: the signature binds the ticket
        as approved (its payload before `build_approval`), and `build_approval` names it."""
        job = self._scheduling.get(uow, job_id)
        mf, site, machine = self._gate.context(uow, job)
        approver = self._approver(mf, site)
        try:  # every refused approval is on record, whatever was wrong
            self._gate.node.require_control(BUILD_APPROVAL)  # the control site approves
            authorize_network(actor, Permission.BUILD_APPROVE)
            if approver is None:
                raise Refused(
                    f"a build at a {site.kind} site needs no approval: its ticket is issued "
                    "as any other (job.ticket)",
                    field="job_id",
                    code="build_approval_not_needed",
                )
            if approver not in actor.roles:
                raise Forbidden(
                    f"a build at a {site.kind} site is approved by the control site's "
                    f"{approver} (role {approver}); {actor.username} does not hold it",
                    field="approver",
                    code="wrong_signatory",
                )
            if job.status != JobStatus.PLANNED.value:
                raise Refused(
                    f"job {job.id} is {job.status}: only a planned build waits for approval",
                    field="status",
                    code="not_awaiting_approval",
                )
            self._gate.check(uow, mf, site, machine)
        except (Refused, Forbidden) as exc:
            refuse(uow, actor, exc, "job", job.id, site_id=site.id)
        if self._signatures is None:  # pragma: no cover - bootstrap always wires it
            raise RuntimeError("the ticket desk was built without the signature service")
        order = self._orders.get(uow, job.order_id)
        payload = self._payload(uow, job, order, mf, site, machine)
        sig = self._signatures.sign(
            uow,
            actor,
            password=password,
            meaning=(meaning or "").strip() or approval_meaning(site.kind),
            record_type="job",
            record_id=job.id,
            content=payload,
            username=username,
            totp=totp,
            site_id=site.id,
        )
        payload["build_approval"] = {
            "site_kind": site.kind,
            "role": approver,
            "by": actor.user_id,
            "at": sig.signed_at.isoformat(),
            "signature_id": sig.id,
            "meaning": sig.meaning,
        }
        return self._sign(uow, actor, job, payload)

    def _payload(
        self,
        uow: UnitOfWork,
        job: Job,
        order: Order,
        mf: MasterFile,
        site: Site,
        machine: Machine,
    ) -> dict[str, Any]:
        now = uow.clock.now()
        return {
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

    def _sign(
        self, uow: UnitOfWork, actor: Actor, job: Job, payload: dict[str, Any]
    ) -> SignedTicket:
        ticket = self._signer.sign(payload)
        self._scheduling.attach_ticket(uow, actor, job, ticket.to_dict(), ticket.ticket_hash)
        uow.commit()
        return ticket
