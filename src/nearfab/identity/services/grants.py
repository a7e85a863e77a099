"""Role grants and revocations, with separation of duties: `qp`, `admin` and
`responsible_person` are requested by one administrator and approved by another (approvals.py
keeps the requests), `auditor` holds no acting role and only a network administrator gives it
(so does `responsible_person`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from nearfab.common.errors import Conflict, Forbidden, Refused, ValidationFailed, require_reason
from nearfab.identity.enums import AuditAction, Role
from nearfab.identity.logic import Actor
from nearfab.identity.models import ApprovalRequest, User
from nearfab.identity.permissions import Permission, is_network_wide
from nearfab.identity.services import approvals
from nearfab.identity.services.audit import audit
from nearfab.identity.services.directory import get_user, known_roles, managed_user
from nearfab.uow import UnitOfWork


def check_reach(actor: Actor, roles: list[str], *, field: str) -> None:
    """The auditor grant reads the whole network, and the responsible person signs for the
    manufacturer: only a network administrator gives either."""
    if Role.RESPONSIBLE_PERSON.value in roles and not is_network_wide(
        actor, Permission.USERS_MANAGE
    ):
        raise Forbidden(
            "the responsible person signs for the manufacturer: only an administrator of the "
            "control site grants it",
            field=field,
            code="other_site",
        )
    if Role.AUDITOR.value in roles and not is_network_wide(actor, Permission.USERS_MANAGE):
        raise Forbidden(
            "the auditor role reads every site: only an administrator of the control site "
            "grants it",
            field=field,
            code="other_site",
        )


def bootstrap_note(actor: Actor, roles: list[str]) -> dict[str, Any]:
    if "system" in actor.roles and set(roles) & approvals.APPROVED_ROLES:
        return {"bootstrap": True}
    return {}


def split_grants(uow: UnitOfWork, actor: Actor, roles: list[str]) -> tuple[list[str], list[str]]:
    """(roles given now, roles that wait for a second person's approval). A system
    component gives qp/admin directly only while the network has fewer than two network
    administrators (bootstrap); afterwards it is refused."""
    privileged = sorted(set(roles) & approvals.APPROVED_ROLES)
    plain = sorted(set(roles) - approvals.APPROVED_ROLES)
    if not privileged:
        return plain, []
    if "system" in actor.roles:
        if approvals.bootstrap_open(uow.session):
            return sorted(roles), []
        raise Refused(
            f"granting {', '.join(privileged)} needs a second person: the network has its "
            "administrators, so an administrator requests it (as themselves) and another "
            "administrator of the control site approves",
            field="roles",
            code="approval_required",
        )
    return plain, privileged


class Grants:
    """Changing roles, and the approval requests: filing, deciding, listing."""

    def __init__(self) -> None:
        # what an approved request applies, by kind (masterfiles registers "master_file_qp")
        self.appliers: dict[str, approvals.Applier] = {approvals.ROLE_GRANT: self._apply_grant}

    def register_applier(self, kind: str, applier: approvals.Applier) -> None:
        self.appliers[kind] = applier

    def _apply_grant(self, uow: UnitOfWork, actor: Actor, request: ApprovalRequest) -> None:
        user = get_user(uow, request.subject_user_id)
        role = request.role or ""
        if not user.active:
            raise Refused(f"{user.username} is deactivated", field="request_id", code="inactive")
        if role in user.roles:
            raise Conflict(f"{user.username} already holds {role}", field="request_id")
        new = sorted({*user.roles, role})
        approvals.check_role_mix(new, field="request_id")
        old = sorted(user.roles)
        user.roles = new
        audit(
            uow,
            actor,
            AuditAction.ROLES_CHANGE,
            "user",
            user.id,
            old={"roles": old},
            new={"roles": new, "granted": [role], "revoked": [], "approval_request": request.id},
            reason=request.decision_reason,
            site_id=user.home_site_id,
        )

    def request_grant(
        self, uow: UnitOfWork, actor: Actor, user_id: str, *, role: str, reason: str
    ) -> ApprovalRequest:
        """Ask for `role` (qp or admin) to be granted; another network administrator approves."""
        user = managed_user(uow, actor, user_id)
        (role,) = known_roles([role])
        if role not in approvals.APPROVED_ROLES:
            raise ValidationFailed(
                f"{role} is granted directly (only qp, admin and responsible_person need approval)",
                field="role",
            )
        if user.id == actor.user_id:
            raise Refused("you cannot ask for roles for yourself", field="user_id", code="self")
        if role in user.roles:
            raise Conflict(f"{user.username} already holds {role}", field="role")
        approvals.check_role_mix(sorted({*user.roles, role}))
        row = approvals.file_request(
            uow, actor, approvals.ROLE_GRANT, user, role=role, reason=reason
        )
        uow.commit()
        return row

    def decide_request(
        self, uow: UnitOfWork, actor: Actor, request_id: str, *, approve: bool, reason: str
    ) -> ApprovalRequest:
        """Approve (the change applies in the same transaction) or refuse; audited."""
        row = approvals.decide(
            uow, actor, request_id, approve=approve, reason=reason, appliers=self.appliers
        )
        uow.commit()
        return row

    def requests(
        self, uow: UnitOfWork, actor: Actor, status: str | None = "pending"
    ) -> list[ApprovalRequest]:
        return approvals.list_requests(uow, actor, status)

    def requests_get(self, uow: UnitOfWork, request_id: str) -> ApprovalRequest:
        return approvals.get_request(uow, request_id)

    def pending_for(self, uow: UnitOfWork, user_id: str) -> list[ApprovalRequest]:
        return list(
            uow.session.scalars(
                select(ApprovalRequest)
                .where(
                    ApprovalRequest.subject_user_id == user_id,
                    ApprovalRequest.status == "pending",
                )
                .order_by(ApprovalRequest.requested_at, ApprovalRequest.id)
            )
        )

    def change_roles(
        self,
        uow: UnitOfWork,
        actor: Actor,
        user_id: str,
        *,
        grant: Iterable[str] = (),
        revoke: Iterable[str] = (),
        reason: str,
    ) -> User:
        """Grant and/or revoke roles; the audit row keeps the old and new role lists."""
        user = managed_user(uow, actor, user_id)
        why = require_reason(reason, "changing roles")
        granted, revoked = known_roles(grant), known_roles(revoke)
        if not granted and not revoked:
            raise ValidationFailed("name a role to grant or revoke", field="grant")
        if set(granted) & set(revoked):
            raise ValidationFailed("a role cannot be granted and revoked at once", field="revoke")
        if user.id == actor.user_id:
            raise Refused(
                "you cannot change your own roles (another administrator must)",
                field="user_id",
                code="self",
            )
        old = sorted(user.roles)
        approvals.check_role_mix(sorted((set(old) | set(granted)) - set(revoked)), field="grant")
        check_reach(actor, [r for r in granted if r not in old], field="grant")
        now_given, requested = split_grants(uow, actor, [r for r in granted if r not in old])
        new = sorted((set(old) | set(now_given)) - set(revoked))
        if new == old and not requested:
            raise Conflict(f"{user.username} already has exactly these roles", field="grant")
        if new != old:
            user.roles = new
            audit(
                uow,
                actor,
                AuditAction.ROLES_CHANGE,
                "user",
                user.id,
                old={"roles": old},
                new={
                    "roles": new,
                    "granted": now_given,
                    "revoked": revoked,
                    **bootstrap_note(actor, now_given),
                },
                reason=why,
                site_id=user.home_site_id,
            )
        for role in requested:
            approvals.file_request(uow, actor, approvals.ROLE_GRANT, user, role=role, reason=why)
        uow.commit()
        return user
