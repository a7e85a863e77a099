"""Reviewing the audit trail: searching rows (site staff see their own site's) and the
signatures on a record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select

from nearfab.common.errors import ValidationFailed
from nearfab.identity.logic import Actor
from nearfab.identity.models import AuditEntry, Signature
from nearfab.identity.permissions import Permission, site_filter, visible_sites
from nearfab.identity.services.auditchain import ENTRIES
from nearfab.uow import UnitOfWork

MAX_PAGE = 500


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValidationFailed(
            f"{field}: give a time zone (e.g. 2026-01-05T08:00:00Z)", field=field
        )
    return value


def search_audit(
    uow: UnitOfWork,
    actor: Actor,
    *,
    site_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    who: str | None = None,
    action: str | None = None,
    entity_type: str | None = None,
    entity_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[AuditEntry], int]:
    """Audit rows, newest first, filtered; site staff see their own site's rows only.
    Returns one page and the number of rows matching."""
    site_id = site_filter(actor, Permission.AUDIT_READ, site_id or None)
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed(f"limit: 1 to {MAX_PAGE}", field="limit")
    if offset < 0:
        raise ValidationFailed("offset: 0 or more", field="offset")
    _aware(since, "since")
    _aware(until, "until")
    conds: list[Any] = []
    sites = visible_sites(actor, Permission.AUDIT_READ)
    if sites is not None:
        conds.append(ENTRIES.c.site_id.in_(sorted(sites)))
    if site_id:
        conds.append(AuditEntry.site_id == site_id)
    if since is not None:
        conds.append(AuditEntry.at >= since)
    if until is not None:
        conds.append(AuditEntry.at < until)
    if who:
        conds.append(
            or_(
                AuditEntry.actor_id == who,
                func.lower(AuditEntry.actor_name).contains(who.lower(), autoescape=True),
            )
        )
    if action:
        conds.append(AuditEntry.action == action)
    if entity_type:
        conds.append(AuditEntry.entity_type == entity_type)
    if entity_id:
        conds.append(AuditEntry.entity_id == entity_id)
    total = int(uow.session.scalar(select(func.count()).select_from(AuditEntry).where(*conds)) or 0)
    rows = uow.session.scalars(
        select(AuditEntry).where(*conds).order_by(AuditEntry.seq.desc()).limit(limit).offset(offset)
    )
    return list(rows), total


def signatures_on(uow: UnitOfWork, record_type: str, record_id: str) -> list[Signature]:
    stmt = (
        select(Signature)
        .where(Signature.record_type == record_type, Signature.record_id == record_id)
        .order_by(Signature.signed_at, Signature.id)
    )
    return list(uow.session.scalars(stmt))
