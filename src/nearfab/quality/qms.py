"""The network's quality system (issue 19 part 3, docs/central-qa.md): CAPAs, complaints and
the owner and due date of every quality item (deviations included). One service; each change
writes its audit row in its own transaction; a QP closes a CAPA with an e-signature."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select

from nearfab.common.errors import NotFound, Refused, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.common.inputs import nonempty_text
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    SignatureService,
    audit,
    audited_transition,
    authorize,
)
from nearfab.identity.reads import user_by_username
from nearfab.masterfiles import pydantic_to_domain
from nearfab.masterfiles.reads import change_controls_by_id
from nearfab.network import NetworkService
from nearfab.orders import OrderStatus
from nearfab.orders.reads import orders_per_site
from nearfab.production import BatchStatus
from nearfab.production.reads import (
    batch_records_by_id,
    batch_records_by_number,
    batches_per_site,
)
from nearfab.quality.models import Deviation
from nearfab.quality.qms_models import (
    CAPA_TRANSITIONS,
    COMPLAINT_TRANSITIONS,
    Capa,
    CapaSource,
    CapaStatus,
    Complaint,
    ComplaintStatus,
    QaAssignment,
)
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.production import BatchRecord

ITEM_KINDS = ("deviation", "complaint", "capa", "change_control")
# orders not yet made (or made, not yet dispositioned) under a master-file version
OPEN_ORDER_STATUSES = (
    OrderStatus.RECEIVED,
    OrderStatus.DESIGNED,
    OrderStatus.STOPPED,
    OrderStatus.SCHEDULED,
    OrderStatus.IN_PRODUCTION,
    OrderStatus.AWAITING_RELEASE,
)
BATCH_IN_PROGRESS = (BatchStatus.IN_PROGRESS, BatchStatus.COMPLETED)  # made, not dispositioned
# a pack's serial -> its batch id (custody, wired in bootstrap)
PackLookup = Callable[[UnitOfWork, str], str | None]


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = Field(min_length=1, max_length=64)
    due_date: date


class CapaIn(AssignIn):
    site_id: str | None = None
    master_file_code: str | None = Field(default=None, max_length=64)
    title: str = Field(max_length=200)
    description: str = Field(max_length=4000)
    source_kind: CapaSource
    source_id: str | None = Field(default=None, max_length=32)

    _nonempty = field_validator("title", "description")(nonempty_text)


class CapaCloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    effectiveness: str = Field(max_length=4000)
    password: str
    username: str | None = None
    totp: str | None = None

    _nonempty = field_validator("effectiveness")(nonempty_text)


class ComplaintIn(AssignIn):
    site_id: str = Field(min_length=1)
    reporter: str = Field(max_length=200)
    description: str = Field(max_length=4000)
    pack_serial: str | None = Field(default=None, max_length=20)
    batch_number: str | None = Field(default=None, max_length=20)

    _nonempty = field_validator("reporter", "description")(nonempty_text)


class InvestigateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    investigation: str = Field(max_length=4000)

    _nonempty = field_validator("investigation")(nonempty_text)


class ComplaintCloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conclusion: str = Field(max_length=4000)
    capa_id: str | None = None

    _nonempty = field_validator("conclusion")(nonempty_text)


def _parse(model: type[BaseModel], data: Mapping[str, Any], prefix: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise pydantic_to_domain(exc, prefix) from None


def work_in_progress(uow: UnitOfWork, code: str, version: int) -> dict[str, dict[str, int]]:
    """Per site: open orders and batches in progress under one master-file version (the
    change control's impact, wired in bootstrap)."""
    out: dict[str, dict[str, int]] = {}
    counted = (
        (orders_per_site, OPEN_ORDER_STATUSES, "open_orders"),
        (batches_per_site, BATCH_IN_PROGRESS, "batches_in_progress"),
    )
    for per_site_of, statuses, key in counted:
        per_site = per_site_of(
            uow.session,
            master_file_code=code,
            master_file_version=version,
            statuses=[s.value for s in statuses],
        )
        for site_id, n in per_site.items():
            out.setdefault(site_id, {"open_orders": 0, "batches_in_progress": 0})[key] = n
    return out


class QmsService:
    def __init__(self, network: NetworkService, signatures: SignatureService) -> None:
        self._network = network
        self._signatures = signatures
        self._pack_lookup: PackLookup | None = None

    def look_up_packs_with(self, lookup: PackLookup) -> None:
        """Wired in bootstrap: a pack's serial -> its batch (custody)."""
        self._pack_lookup = lookup

    def _site(self, uow: UnitOfWork, site: Any) -> str | None:
        """The site named (id or code) before anything else is read, so another site's staff
        are refused first; None: no site named (the network's)."""
        if site is None or site == "":
            return None
        if not isinstance(site, str):
            raise ValidationFailed("site_id: a site's id or code", field="site_id")
        try:
            return self._network.get_site(uow, site).id
        except NotFound:
            raise ValidationFailed(f"site_id: no site {site!r}", field="site_id") from None

    # --- owner and due date --------------------------------------------------------------------
    def _check_assignment(self, uow: UnitOfWork, spec: AssignIn) -> None:
        user = user_by_username(uow.session, spec.owner)
        if user is None or not user.active:
            raise ValidationFailed(f"owner: no active user {spec.owner!r}", field="owner")
        if spec.due_date < uow.clock.now().date():
            raise ValidationFailed("due_date: must not be in the past", field="due_date")

    def _write_assignment(
        self,
        uow: UnitOfWork,
        actor: Actor,
        kind: str,
        item_id: str,
        spec: AssignIn,
        site_id: str | None,
        reason: str | None = None,
    ) -> QaAssignment:
        row = uow.session.scalar(
            select(QaAssignment).where(
                QaAssignment.item_kind == kind, QaAssignment.item_id == item_id
            )
        )
        old = None
        if row is None:
            row = QaAssignment(item_kind=kind, item_id=item_id)
            uow.session.add(row)
        else:
            old = {"owner": row.owner, "due_date": row.due_date.isoformat()}
        row.owner, row.due_date = spec.owner, spec.due_date
        row.assigned_at, row.assigned_by = uow.clock.now(), actor.user_id
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.UPDATE if old else AuditAction.CREATE,
            "qa_assignment",
            f"{kind}:{item_id}"[:64],
            old=old,
            new={"owner": spec.owner, "due_date": spec.due_date.isoformat()},
            reason=reason,
            site_id=site_id,
        )
        return row

    def _open_item(
        self,
        uow: UnitOfWork,
        actor: Actor,
        kind: str,
        row: Capa | Complaint,
        content: dict[str, Any],
        spec: AssignIn,
        site_id: str | None,
    ) -> None:
        """Store a new quality item with its creation audit row (`content`) and its owner and
        due date, in one transaction (committed)."""
        uow.session.add(row)
        uow.flush()
        audit(uow, actor, AuditAction.CREATE, kind, row.id, new=content, site_id=site_id)
        self._write_assignment(uow, actor, kind, row.id, spec, site_id)
        uow.commit()

    def item_site(self, uow: UnitOfWork, kind: str, item_id: str) -> str | None:
        """The site a quality item belongs to (None: the network's)."""
        if kind == "deviation":
            dev = uow.session.get(Deviation, item_id)
            if dev is None:
                raise NotFound(f"no deviation {item_id!r}", field="item_id")
            batch = batch_records_by_id(uow.session, [dev.batch_id]).get(dev.batch_id)
            return batch.site_id if batch else None
        if kind == "complaint":
            return self._complaint(uow, item_id).site_id
        if kind == "capa":
            return self._capa(uow, item_id).site_id
        if kind == "change_control":
            if item_id not in change_controls_by_id(uow.session, [item_id]):
                raise NotFound(f"no change control {item_id!r}", field="item_id")
            return None
        raise ValidationFailed(f"item_kind: one of {', '.join(ITEM_KINDS)}", field="item_kind")

    def assign(
        self,
        uow: UnitOfWork,
        actor: Actor,
        kind: str,
        item_id: str,
        data: Mapping[str, Any],
    ) -> QaAssignment:
        """Name the owner and due date of a quality item (reassigning needs a reason)."""
        authorize(actor, Permission.QA_RECORD)
        site_id = self.item_site(uow, kind, item_id)
        authorize(actor, Permission.QA_RECORD, site_id=site_id)
        spec = _parse(AssignIn, {k: v for k, v in data.items() if k != "reason"}, "assignment")
        self._check_assignment(uow, spec)
        reason = data.get("reason")
        row = self._write_assignment(
            uow, actor, kind, item_id, spec, site_id, str(reason) if reason else None
        )
        uow.commit()
        return row

    # --- CAPA ----------------------------------------------------------------------------------
    def _capa(self, uow: UnitOfWork, capa_id: str) -> Capa:
        row = uow.session.get(Capa, capa_id)
        if row is None:
            raise NotFound(f"no CAPA {capa_id!r}", field="capa_id")
        return row

    def open_capa(self, uow: UnitOfWork, actor: Actor, data: Mapping[str, Any]) -> Capa:
        """Open a CAPA at a site (or for the network: no site), with owner and due date."""
        authorize(actor, Permission.QA_RECORD)
        site_id = self._site(uow, data.get("site_id"))
        authorize(actor, Permission.QA_RECORD, site_id=site_id)
        spec: CapaIn = _parse(CapaIn, data, "capa")
        if spec.source_kind not in (CapaSource.AUDIT, CapaSource.OTHER) and not spec.source_id:
            raise ValidationFailed(
                f"source_id: a CAPA raised by a {spec.source_kind.value} names it",
                field="source_id",
            )
        self._check_assignment(uow, spec)
        row = Capa(
            id=new_id("capa"),
            site_id=site_id,
            master_file_code=spec.master_file_code,
            title=spec.title,
            description=spec.description,
            source_kind=spec.source_kind.value,
            source_id=spec.source_id,
            status=CapaStatus.OPEN.value,
            opened_at=uow.clock.now(),
            opened_by=actor.user_id,
        )
        self._open_item(uow, actor, "capa", row, self._capa_content(row), spec, site_id)
        return row

    def close_capa(
        self, uow: UnitOfWork, actor: Actor, capa_id: str, data: Mapping[str, Any]
    ) -> Capa:
        """A QP closes the CAPA once its effectiveness is checked: an e-signature."""
        authorize(actor, Permission.CAPA_CLOSE)
        row = self._capa(uow, capa_id)
        authorize(actor, Permission.CAPA_CLOSE, site_id=row.site_id)
        spec: CapaCloseIn = _parse(CapaCloseIn, data, "capa")
        if row.status != CapaStatus.OPEN.value:
            raise Refused(f"CAPA {row.id} is {row.status}", field="status", code="not_open")
        signature = self._signatures.sign(
            uow,
            actor,
            password=spec.password,
            meaning="QP closure of CAPA (effectiveness checked)",
            username=spec.username,
            totp=spec.totp,
            record_type="capa",
            record_id=row.id,
            content={**self._capa_content(row), "effectiveness": spec.effectiveness},
            site_id=row.site_id,
        )
        audited_transition(
            uow,
            actor,
            row,
            CapaStatus.CLOSED,
            CAPA_TRANSITIONS,
            entity_type="capa",
            label=f"CAPA {row.id}",
            reason=spec.effectiveness,
            site_id=row.site_id,
            extra={"signature_id": signature.id},
        )
        row.closed_at, row.closed_by = uow.clock.now(), actor.user_id
        row.effectiveness, row.signature_id = spec.effectiveness, signature.id
        uow.commit()
        return row

    @staticmethod
    def _capa_content(row: Capa) -> dict[str, Any]:
        return {
            "site_id": row.site_id,
            "master_file_code": row.master_file_code,
            "title": row.title,
            "description": row.description,
            "source_kind": row.source_kind,
            "source_id": row.source_id,
        }

    # --- complaints ----------------------------------------------------------------------------
    def _complaint(self, uow: UnitOfWork, complaint_id: str) -> Complaint:
        row = uow.session.get(Complaint, complaint_id)
        if row is None:
            raise NotFound(f"no complaint {complaint_id!r}", field="complaint_id")
        return row

    def record_complaint(self, uow: UnitOfWork, actor: Actor, data: Mapping[str, Any]) -> Complaint:
        """Record a complaint: who reported what, about which pack (serial) or batch."""
        authorize(actor, Permission.QA_RECORD)
        site_id = self._site(uow, data.get("site_id"))
        if site_id is None:
            raise ValidationFailed("site_id: the site the complaint is about", field="site_id")
        authorize(actor, Permission.QA_RECORD, site_id=site_id)
        spec: ComplaintIn = _parse(ComplaintIn, data, "complaint")
        if not spec.pack_serial and not spec.batch_number:
            raise ValidationFailed(
                "batch_number: name the pack's serial or the batch number", field="batch_number"
            )
        batch: BatchRecord | None = None
        if spec.pack_serial:
            batch_id = self._pack_lookup(uow, spec.pack_serial) if self._pack_lookup else None
            if batch_id is None:
                raise ValidationFailed(
                    f"pack_serial: no pack with serial {spec.pack_serial!r}", field="pack_serial"
                )
            batch = batch_records_by_id(uow.session, [batch_id]).get(batch_id)
        if spec.batch_number:
            by_number = batch_records_by_number(uow.session, [spec.batch_number]).get(
                spec.batch_number
            )
            if by_number is None:
                raise ValidationFailed(
                    f"batch_number: no batch {spec.batch_number!r}", field="batch_number"
                )
            if batch is not None and batch.id != by_number.id:
                raise ValidationFailed(
                    "batch_number: the pack belongs to batch " + batch.batch_number,
                    field="batch_number",
                )
            batch = by_number
        assert batch is not None
        self._check_assignment(uow, spec)
        row = Complaint(
            id=new_id("cmp"),
            site_id=site_id,
            master_file_code=batch.master_file_code,
            batch_id=batch.id,
            batch_number=batch.batch_number,
            pack_serial=spec.pack_serial,
            reporter=spec.reporter,
            description=spec.description,
            status=ComplaintStatus.RECEIVED.value,
            received_at=uow.clock.now(),
            recorded_by=actor.user_id,
        )
        content = {
            "site_id": site_id,
            "batch_number": row.batch_number,
            "pack_serial": row.pack_serial,
            "reporter": row.reporter,
            "description": row.description,
        }
        self._open_item(uow, actor, "complaint", row, content, spec, site_id)
        return row

    def investigate_complaint(
        self, uow: UnitOfWork, actor: Actor, complaint_id: str, data: Mapping[str, Any]
    ) -> Complaint:
        authorize(actor, Permission.QA_RECORD)
        row = self._complaint(uow, complaint_id)
        authorize(actor, Permission.QA_RECORD, site_id=row.site_id)
        spec: InvestigateIn = _parse(InvestigateIn, data, "complaint")
        audited_transition(
            uow,
            actor,
            row,
            ComplaintStatus.INVESTIGATING,
            COMPLAINT_TRANSITIONS,
            entity_type="complaint",
            label=f"complaint {row.id}",
            reason=spec.investigation,
            site_id=row.site_id,
        )
        row.investigation = spec.investigation
        uow.commit()
        return row

    def close_complaint(
        self, uow: UnitOfWork, actor: Actor, complaint_id: str, data: Mapping[str, Any]
    ) -> Complaint:
        authorize(actor, Permission.QA_RECORD)
        row = self._complaint(uow, complaint_id)
        authorize(actor, Permission.QA_RECORD, site_id=row.site_id)
        spec: ComplaintCloseIn = _parse(ComplaintCloseIn, data, "complaint")
        if spec.capa_id is not None:
            capa = uow.session.get(Capa, spec.capa_id)
            if capa is None or capa.site_id not in (row.site_id, None):
                raise ValidationFailed(
                    f"capa_id: no CAPA {spec.capa_id!r} at the complaint's site", field="capa_id"
                )
        audited_transition(
            uow,
            actor,
            row,
            ComplaintStatus.CLOSED,
            COMPLAINT_TRANSITIONS,
            entity_type="complaint",
            label=f"complaint {row.id}",
            reason=spec.conclusion,
            site_id=row.site_id,
            extra={"capa_id": spec.capa_id},
        )
        row.conclusion, row.capa_id = spec.conclusion, spec.capa_id
        row.closed_at, row.closed_by = uow.clock.now(), actor.user_id
        uow.commit()
        return row

    # --- reads ---------------------------------------------------------------------------------
    def capa(self, uow: UnitOfWork, actor: Actor, capa_id: str) -> Capa:
        """A CAPA, for staff of its site (a network CAPA: the network's staff)."""
        row = self._capa(uow, capa_id)
        authorize(actor, Permission.QA_READ, site_id=row.site_id)
        return row

    def complaint(self, uow: UnitOfWork, actor: Actor, complaint_id: str) -> Complaint:
        row = self._complaint(uow, complaint_id)
        authorize(actor, Permission.QA_READ, site_id=row.site_id)
        return row
