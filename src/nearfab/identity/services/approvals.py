"""Separation of duties: changes one administrator requests and another approves.

Granting `qp` or `admin`, and naming a QP to certify a master file's batches, are requested
by one person and take effect only when a second person, an administrator of the control site
(a network administrator), approves. Nobody approves their own request, nor a change to their
own account. Each step (request, approval, refusal) is audited in its own transaction, with
the change it applies. The rules are in docs/accounts-and-signatures.md.

Bootstrap: until the network has two active network administrators nobody could approve, so
a system component (the demo seed, `nearfab users create` run by the host's operator) may
create administrator and QP accounts directly; the audit row says `bootstrap`. Once two
network administrators exist, every grant goes through a request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from nearfab.common.errors import Conflict, Forbidden, NotFound, Refused, require_reason
from nearfab.common.ids import new_id
from nearfab.identity.enums import AuditAction, Role
from nearfab.identity.logic import Actor
from nearfab.identity.models import ApprovalRequest, User
from nearfab.identity.permissions import Permission, authorize, visible_sites
from nearfab.identity.services.audit import audit
from nearfab.uow import UnitOfWork

# roles whose grant needs a second person's approval
# (the responsible person releases a device's batches as a QP a medicine's: granted alike)
APPROVED_ROLES = frozenset({Role.QP.value, Role.ADMIN.value, Role.RESPONSIBLE_PERSON.value})
# roles that act (change something); none may be held together with `auditor`
ACTING_ROLES = frozenset(r.value for r in Role) - {Role.AUDITOR.value}
ROLE_GRANT = "role_grant"
MASTER_FILE_QP = "master_file_qp"
KINDS = (ROLE_GRANT, MASTER_FILE_QP)
STATUSES = ("pending", "approved", "refused")

# kind -> what approval applies beyond the identity's own (e.g. masterfiles names the QP)
Applier = Callable[[UnitOfWork, Actor, ApprovalRequest], None]


def control_site_ids(session: Session) -> set[str]:
    # identity sits below network in the layers, so it reads site kinds by name only
    from sqlalchemy import text

    rows = session.execute(text("SELECT id FROM sites WHERE kind = 'control'"))
    return {r[0] for r in rows}


def is_network_admin(actor: Actor) -> bool:
    """An administrator of the control site, or a home-less administrator (made at bootstrap
    by a system component, or by another network administrator)."""
    return Role.ADMIN.value in actor.roles and (actor.network or actor.site_id is None)


def network_admins(session: Session) -> list[User]:
    """Active accounts holding `admin` whose home is the control site or no site."""
    controls = control_site_ids(session)
    stmt = select(User).where(User.active.is_(True))
    if controls:
        stmt = stmt.where(or_(User.home_site_id.is_(None), User.home_site_id.in_(controls)))
    else:
        stmt = stmt.where(User.home_site_id.is_(None))
    return [u for u in session.scalars(stmt) if Role.ADMIN.value in u.roles]


def bootstrap_open(session: Session) -> bool:
    """True while fewer than two network administrators exist (nobody could approve yet)."""
    return len(network_admins(session)) < 2


def check_role_mix(roles: list[str], *, field: str = "roles") -> None:
    """An account may not hold `auditor` with a role that acts (separation of duties)."""
    if Role.AUDITOR.value in roles and set(roles) & ACTING_ROLES:
        acting = ", ".join(sorted(set(roles) & ACTING_ROLES))
        raise Refused(
            f"an account may not hold auditor together with a role that acts ({acting}): "
            "an auditor must be independent of what they audit; use two accounts",
            field=field,
            code="auditor_with_acting_role",
        )


def describe(row: ApprovalRequest) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "subject_user_id": row.subject_user_id,
        "role": row.role,
        "master_file_code": row.master_file_code,
        "site_id": row.site_id,
        "reason": row.reason,
        "requested_by": row.requested_by,
        "requested_by_name": row.requested_by_name,
        "requested_at": row.requested_at,
        "decided_by": row.decided_by,
        "decided_by_name": row.decided_by_name,
        "decided_at": row.decided_at,
        "decision_reason": row.decision_reason,
    }


def file_request(
    uow: UnitOfWork,
    actor: Actor,
    kind: str,
    subject: User,
    *,
    reason: str,
    role: str | None = None,
    master_file_code: str | None = None,
) -> ApprovalRequest:
    """Record a pending request (audited; not committed). A second identical pending
    request is refused."""
    why = require_reason(reason, "requesting this change")
    if not subject.active:
        raise Refused(f"{subject.username} is deactivated", field="user_id", code="inactive")
    same = uow.session.scalar(
        select(ApprovalRequest.id).where(
            ApprovalRequest.kind == kind,
            ApprovalRequest.status == "pending",
            ApprovalRequest.subject_user_id == subject.id,
            ApprovalRequest.role.is_(None) if role is None else ApprovalRequest.role == role,
            ApprovalRequest.master_file_code.is_(None)
            if master_file_code is None
            else ApprovalRequest.master_file_code == master_file_code,
        )
    )
    if same is not None:
        raise Conflict(
            f"the same change is already waiting for approval (request {same})",
            field="request",
            code="already_requested",
        )
    row = ApprovalRequest(
        id=new_id("apr"),
        kind=kind,
        status="pending",
        subject_user_id=subject.id,
        role=role,
        master_file_code=master_file_code,
        site_id=subject.home_site_id,
        reason=why,
        requested_by=actor.user_id,
        requested_by_name=actor.full_name,
        requested_at=uow.clock.now(),
    )
    uow.session.add(row)
    uow.session.flush()
    audit(
        uow,
        actor,
        AuditAction.CREATE,
        "approval_request",
        row.id,
        new={
            "kind": kind,
            "status": "pending",
            "subject_user_id": subject.id,
            "subject": subject.username,
            "role": role,
            "master_file_code": master_file_code,
        },
        reason=why,
        site_id=subject.home_site_id,
    )
    return row


def get_request(uow: UnitOfWork, request_id: str) -> ApprovalRequest:
    row = uow.session.get(ApprovalRequest, request_id)
    if row is None:
        raise NotFound(f"no approval request {request_id!r}", field="request_id")
    return row


def list_requests(
    uow: UnitOfWork, actor: Actor, status: str | None = "pending"
) -> list[ApprovalRequest]:
    """Requests the actor may read (site administrators see those about their site)."""
    authorize(actor, Permission.USERS_READ)
    if status is not None and status not in STATUSES:
        raise NotFound(f"no status {status!r}; choose from {', '.join(STATUSES)}", field="status")
    stmt = select(ApprovalRequest).order_by(ApprovalRequest.requested_at.desc(), ApprovalRequest.id)
    if status is not None:
        stmt = stmt.where(ApprovalRequest.status == status)
    sites = visible_sites(actor, Permission.USERS_READ)
    if sites is not None:
        stmt = stmt.where(ApprovalRequest.site_id.in_(sites))
    return list(uow.session.scalars(stmt.limit(500)))


def decide(
    uow: UnitOfWork,
    actor: Actor,
    request_id: str,
    *,
    approve: bool,
    reason: str,
    appliers: dict[str, Applier],
) -> ApprovalRequest:
    """Approve (and apply) or refuse a pending request; audited, not committed."""
    row = get_request(uow, request_id)
    why = require_reason(reason, "approving" if approve else "refusing a request")
    if "system" in actor.roles or not is_network_admin(actor):
        raise Forbidden(
            "only an administrator of the control site approves or refuses this request",
            field="request_id",
            code="not_network_admin",
        )
    if row.requested_by == actor.user_id:
        raise Refused(
            "you requested this change: another administrator of the control site must decide",
            field="request_id",
            code="own_request",
        )
    if row.subject_user_id == actor.user_id:
        raise Refused(
            "this change is about your own account: another administrator must decide",
            field="request_id",
            code="self",
        )
    if row.status != "pending":
        raise Conflict(f"request {row.id} is already {row.status}", field="request_id")
    row.status = "approved" if approve else "refused"
    row.decided_by, row.decided_by_name = actor.user_id, actor.full_name
    row.decided_at, row.decision_reason = uow.clock.now(), why
    audit(
        uow,
        actor,
        AuditAction.TRANSITION,
        "approval_request",
        row.id,
        old={"status": "pending"},
        new={"status": row.status, "kind": row.kind, "subject_user_id": row.subject_user_id},
        reason=why,
        site_id=row.site_id,
    )
    if approve:
        applier = appliers.get(row.kind)
        if applier is None:  # pragma: no cover - every kind registers its applier
            raise Conflict(f"nothing applies requests of kind {row.kind!r}", field="kind")
        applier(uow, actor, row)
    return row
