"""Writing the audit trail: one row per change, added to the changing transaction (it commits
or rolls back with the change); a GMP change needs a reason; a refusal is kept on record.
The rows are numbered and hashed at flush (auditchain.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from sqlalchemy import select

from nearfab.common.canonical import to_jsonable
from nearfab.common.errors import DomainError, ValidationFailed
from nearfab.common.states import S, check_transition
from nearfab.identity.enums import AuditAction
from nearfab.identity.logic import Actor
from nearfab.identity.models import AuditEntry
from nearfab.uow import UnitOfWork

# GMP data: changing one of these needs a reason in words (EU GMP Annex 11 §9, 21 CFR 11.10(e))
GMP_ENTITY_TYPES = frozenset(
    {
        "alarm",
        "batch",
        "container",
        "deviation",
        "job",
        "machine",
        "master_file",
        "material_lot",
        "monitoring_model",
        "order",
        "pack",
        "qualification",
        "recall",
        "release_review",
        "role",
        "site",
        "training",
        "unit",
        "user",
    }
)
REASON_ACTIONS = frozenset({AuditAction.UPDATE.value, AuditAction.TRANSITION.value})


def require_audit_reason(action: AuditAction | str, entity_type: str, reason: str | None) -> None:
    """A change to GMP data (update or status change) is refused without a reason."""
    if (
        str(action) in REASON_ACTIONS
        and entity_type in GMP_ENTITY_TYPES
        and not (reason or "").strip()
    ):
        what = "a status change" if str(action) == "transition" else "a change"
        raise ValidationFailed(
            f"{what} to a {entity_type.replace('_', ' ')} needs a reason (GMP data)",
            field="reason",
        )


def audit(
    uow: UnitOfWork,
    actor: Actor,
    action: AuditAction | str,
    entity_type: str,
    entity_id: str,
    *,
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
    reason: str | None = None,
    site_id: str | None = None,
) -> AuditEntry:
    """Add an audit row to the current transaction: it commits or rolls back with the change.
    Its `seq` and hashes are given when the session flushes."""
    require_audit_reason(action, entity_type, reason)
    entry = AuditEntry(
        at=uow.clock.now(),
        actor_id=actor.user_id,
        actor_name=actor.full_name,
        action=str(action),
        entity_type=entity_type,
        entity_id=entity_id,
        old=to_jsonable(old) if old is not None else None,
        new=to_jsonable(new) if new is not None else None,
        reason=reason,
        site_id=site_id,
    )
    uow.session.add(entry)
    return entry


def audited_transition(
    uow: UnitOfWork,
    actor: Actor,
    record: Any,
    target: S,
    allowed: Mapping[S, frozenset[S]],
    *,
    entity_type: str,
    label: str,
    reason: str | None,
    site_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> S:
    """Move `record.status` to `target` if `allowed` says so, with its audit row in the same
    transaction; an illegal move (or one without a reason) raises and writes nothing. Returns
    the old state."""
    current = type(target)(record.status)
    check_transition(label, current, target, allowed)
    require_audit_reason(AuditAction.TRANSITION, entity_type, reason)
    record.status = target.value
    audit(
        uow,
        actor,
        AuditAction.TRANSITION,
        entity_type,
        record.id,
        old={"status": current.value},
        new={"status": target.value, **(extra or {})},
        reason=reason,
        site_id=site_id,
    )
    return current


def refuse(
    uow: UnitOfWork,
    actor: Actor,
    exc: DomainError,
    entity_type: str,
    entity_id: str,
    *,
    site_id: str | None = None,
) -> NoReturn:
    """Undo the attempted change but keep a committed record of the refusal, then raise it."""
    uow.session.rollback()
    audit(
        uow,
        actor,
        AuditAction.REFUSE,
        entity_type,
        entity_id[:64],
        new={"code": exc.code, "field": exc.field},
        reason=exc.message,
        site_id=site_id,
    )
    uow.commit()
    raise exc


def audit_trail(uow: UnitOfWork, entity_type: str, entity_id: str) -> list[AuditEntry]:
    stmt = (
        select(AuditEntry)
        .where(AuditEntry.entity_type == entity_type, AuditEntry.entity_id == entity_id)
        .order_by(AuditEntry.seq)
    )
    return list(uow.session.scalars(stmt))
