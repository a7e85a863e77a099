"""Change control of a master file (issue 19 part 3): a new version is proposed with its reason
and its impact on every site (the sites allowed to make it, their qualified machines, the open
orders and batches in progress under the version in force), approved or rejected by a QP's
e-signature, and implemented: the proposed version, QP-approved itself, is made effective
through the change control (MasterFileService.make_effective, in the same transaction).

Open orders and batches belong to domains above this one: they are counted through a
`WorkCounter` wired in bootstrap (quality.qms.work_in_progress)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.common.errors import NotFound, Refused
from nearfab.common.ids import new_id
from nearfab.common.inputs import nonempty_text
from nearfab.db import Base
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    SignatureService,
    audit,
    audited_transition,
    authorize,
    authorize_network,
    record_signed_decision,
)
from nearfab.masterfiles.enums import MasterFileStatus
from nearfab.masterfiles.models import MasterFile
from nearfab.masterfiles.services import MasterFileService, pydantic_to_domain
from nearfab.network import NetworkService
from nearfab.network.reads import qualification_view
from nearfab.uow import UnitOfWork

# (uow, master file code, version) -> {site_id: {"open_orders": n, "batches_in_progress": n}}
WorkCounter = Callable[[UnitOfWork, str, int], Mapping[str, Mapping[str, int]]]


class ChangeControlStatus(StrEnum):
    RAISED = "raised"  # impact assessed; waiting for the QP
    APPROVED = "approved"  # QP e-signature
    REJECTED = "rejected"  # QP e-signature
    IMPLEMENTED = "implemented"  # the proposed version is effective


CHANGE_CONTROL_TRANSITIONS: dict[ChangeControlStatus, frozenset[ChangeControlStatus]] = {
    ChangeControlStatus.RAISED: frozenset(
        {ChangeControlStatus.APPROVED, ChangeControlStatus.REJECTED}
    ),
    ChangeControlStatus.APPROVED: frozenset({ChangeControlStatus.IMPLEMENTED}),
    ChangeControlStatus.REJECTED: frozenset(),
    ChangeControlStatus.IMPLEMENTED: frozenset(),
}


class ChangeControl(Base):
    __tablename__ = "change_controls"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    master_file_code: Mapped[str] = mapped_column(String(64), index=True)
    from_version: Mapped[int | None]
    proposed_master_file_id: Mapped[str] = mapped_column(String(32))
    to_version: Mapped[int]
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    impact: Mapped[list[Any]]
    raised_at: Mapped[datetime]
    raised_by: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    signature_id: Mapped[str | None] = mapped_column(String(32))
    implemented_at: Mapped[datetime | None]
    implemented_by: Mapped[str | None] = mapped_column(String(64))


class ChangeControlIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    proposed_master_file_id: str = Field(min_length=1, max_length=32)
    title: str = Field(max_length=200)
    description: str = Field(max_length=4000)
    reason: str = Field(max_length=4000)

    _nonempty = field_validator("title", "description", "reason")(nonempty_text)


class ChangeDecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: bool
    reason: str = Field(max_length=4000)
    password: str
    username: str | None = None
    totp: str | None = None

    _nonempty = field_validator("reason")(nonempty_text)


class ChangeControlService:
    def __init__(
        self,
        master_files: MasterFileService,
        network: NetworkService,
        signatures: SignatureService,
    ) -> None:
        self._master_files = master_files
        self._network = network
        self._signatures = signatures
        self._work: WorkCounter | None = None

    def count_work_with(self, counter: WorkCounter) -> None:
        """Wired in bootstrap: how open orders and batches in progress are counted."""
        self._work = counter

    # --- impact --------------------------------------------------------------------------------
    def impact(
        self, uow: UnitOfWork, current: MasterFile | None, proposed: MasterFile
    ) -> list[dict[str, Any]]:
        """One row per site allowed under the version in force or the proposed one: whether it
        stays, joins or leaves, its machines qualified for the code, and the open orders and
        batches in progress under the version in force."""
        before = set(current.allowed_site_ids) if current else set()
        after = set(proposed.allowed_site_ids)
        work = self._work(uow, proposed.code, current.version) if self._work and current else {}
        quals = qualification_view()
        qualified = set(
            uow.session.scalars(
                select(quals.c.machine_id).where(
                    quals.c.master_file_code == proposed.code, quals.c.revoked.is_(False)
                )
            )
        )
        rows = []
        for site_id in sorted(before | after):
            site = self._network.get_site(uow, site_id)
            machines = [
                m.name for m in self._network.list_machines(uow, site_id) if m.id in qualified
            ]
            counts = work.get(site_id, {})
            rows.append(
                {
                    "site_id": site_id,
                    "site_code": site.code,
                    "change": "stays"
                    if site_id in before and site_id in after
                    else ("joins" if site_id in after else "leaves"),
                    "qualified_machines": sorted(machines),
                    "open_orders": int(counts.get("open_orders", 0)),
                    "batches_in_progress": int(counts.get("batches_in_progress", 0)),
                }
            )
        return rows

    # --- use cases -----------------------------------------------------------------------------
    def raise_change(self, uow: UnitOfWork, actor: Actor, data: Mapping[str, Any]) -> ChangeControl:
        """Propose a new version (a draft or approved version of the master file) with its
        reason; the impact on every site is assessed and kept with the change control."""
        proposed_id = str(data.get("proposed_master_file_id") or "change_control")
        self._master_files.require_control(uow, actor, proposed_id, "change_control")
        authorize_network(actor, Permission.CHANGE_CONTROL_RAISE)
        try:
            spec = ChangeControlIn.model_validate(data)
        except ValidationError as exc:
            raise pydantic_to_domain(exc, "change_control") from None
        proposed = uow.session.get(MasterFile, spec.proposed_master_file_id)
        if proposed is None:
            raise NotFound(
                f"no master file {spec.proposed_master_file_id!r}",
                field="proposed_master_file_id",
            )
        if proposed.status not in (MasterFileStatus.DRAFT.value, MasterFileStatus.APPROVED.value):
            raise Refused(
                f"master file {proposed.code} v{proposed.version} is {proposed.status}: a change "
                "control proposes a draft or approved version",
                field="proposed_master_file_id",
                code="not_a_proposal",
            )
        pending = uow.session.scalar(
            select(ChangeControl).where(
                ChangeControl.proposed_master_file_id == proposed.id,
                ChangeControl.status.in_(
                    [ChangeControlStatus.RAISED.value, ChangeControlStatus.APPROVED.value]
                ),
            )
        )
        if pending is not None:
            raise Refused(
                f"change control {pending.id} already proposes this version",
                field="proposed_master_file_id",
                code="duplicate",
            )
        current = uow.session.scalar(
            select(MasterFile).where(
                MasterFile.code == proposed.code,
                MasterFile.status == MasterFileStatus.EFFECTIVE.value,
            )
        )
        row = ChangeControl(
            id=new_id("cc"),
            master_file_code=proposed.code,
            from_version=current.version if current else None,
            proposed_master_file_id=proposed.id,
            to_version=proposed.version,
            title=spec.title,
            description=spec.description,
            reason=spec.reason,
            status=ChangeControlStatus.RAISED.value,
            impact=self.impact(uow, current, proposed),
            raised_at=uow.clock.now(),
            raised_by=actor.user_id,
            decided_at=None,
            decided_by=None,
            decision_reason=None,
            signature_id=None,
            implemented_at=None,
            implemented_by=None,
        )
        uow.session.add(row)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "change_control",
            row.id,
            new=self._content(row),
            reason=spec.reason,
        )
        uow.commit()
        return row

    def decide(
        self, uow: UnitOfWork, actor: Actor, change_id: str, data: Mapping[str, Any]
    ) -> ChangeControl:
        """The QP approves or rejects the change with an e-signature bound to the change and
        its impact."""
        self._master_files.require_control(uow, actor, change_id, "change_control")
        authorize_network(actor, Permission.CHANGE_CONTROL_APPROVE)
        try:
            spec = ChangeDecisionIn.model_validate(data)
        except ValidationError as exc:
            raise pydantic_to_domain(exc, "decision") from None
        row = self.get(uow, change_id)
        target = ChangeControlStatus.APPROVED if spec.approve else ChangeControlStatus.REJECTED
        if row.status != ChangeControlStatus.RAISED.value:
            raise Refused(
                f"change control {row.id} is {row.status}", field="status", code="decided"
            )
        meaning = (
            "QP approval of change control" if spec.approve else "QP rejection of change control"
        )
        signature = self._signatures.sign(
            uow,
            actor,
            password=spec.password,
            meaning=meaning,
            username=spec.username,
            totp=spec.totp,
            record_type="change_control",
            record_id=row.id,
            content={**self._content(row), "decision": target.value, "reason": spec.reason},
        )
        record_signed_decision(
            uow,
            actor,
            row,
            target,
            CHANGE_CONTROL_TRANSITIONS,
            entity_type="change_control",
            label=f"change control {row.id}",
            reason=spec.reason,
            signature_id=signature.id,
        )
        uow.commit()
        return row

    def implement(self, uow: UnitOfWork, actor: Actor, change_id: str) -> ChangeControl:
        """Make the proposed version effective through its approved change control (the
        version's own QP approval must still match its content); one transaction."""
        self._master_files.require_control(uow, actor, change_id, "change_control")
        authorize_network(actor, Permission.MASTER_FILE_EFFECTIVE)
        row = self.get(uow, change_id)
        if row.status != ChangeControlStatus.APPROVED.value:
            raise Refused(
                f"change control {row.id} is {row.status}; only an approved change is implemented",
                field="status",
                code="not_approved",
            )
        proposed = self._master_files.get(uow, row.proposed_master_file_id)
        if proposed.status != MasterFileStatus.APPROVED.value:
            raise Refused(
                f"master file {proposed.code} v{proposed.version} is {proposed.status}: the QP "
                "approves the new version before it is made effective",
                field="proposed_master_file_id",
                code="version_not_approved",
            )
        audited_transition(
            uow,
            actor,
            row,
            ChangeControlStatus.IMPLEMENTED,
            CHANGE_CONTROL_TRANSITIONS,
            entity_type="change_control",
            label=f"change control {row.id}",
            reason=f"{proposed.code} v{proposed.version} made effective",
        )
        row.implemented_at, row.implemented_by = uow.clock.now(), actor.user_id
        self._master_files.make_effective(uow, actor, proposed.id)  # commits both
        return row

    # --- reads ---------------------------------------------------------------------------------
    def get(self, uow: UnitOfWork, change_id: str) -> ChangeControl:
        row = uow.session.get(ChangeControl, change_id)
        if row is None:
            raise NotFound(f"no change control {change_id!r}", field="change_id")
        return row

    def list(
        self, uow: UnitOfWork, actor: Actor, master_file_code: str | None = None
    ) -> list[ChangeControl]:
        authorize(actor, Permission.QA_READ)
        q = select(ChangeControl).order_by(ChangeControl.raised_at, ChangeControl.id)
        if master_file_code:
            q = q.where(ChangeControl.master_file_code == master_file_code)
        return list(uow.session.scalars(q))

    @staticmethod
    def _content(row: ChangeControl) -> dict[str, Any]:
        return {
            "master_file_code": row.master_file_code,
            "from_version": row.from_version,
            "to_version": row.to_version,
            "proposed_master_file_id": row.proposed_master_file_id,
            "title": row.title,
            "description": row.description,
            "reason": row.reason,
            "impact": row.impact,
        }
