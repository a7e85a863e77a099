"""Audit-trail review pages: rows per site (filters, pages), one record's trail with its
signatures and exports, and the hash-chain check."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from nearfab.api.deps import attachment
from nearfab.common.errors import DomainError, ValidationFailed
from nearfab.identity import (
    Actor,
    Permission,
    can,
    can_network,
    search_audit,
    verify_audit_chain,
    visible_sites,
)
from nearfab.network import Site
from nearfab.recordexport import entry_dict, export_record, record_view
from nearfab.web.pages import _app, hidden, page, render

router = APIRouter(include_in_schema=False)
PAGE = 50


def _moment(value: str, field: str) -> datetime | None:
    """A time typed in the form (datetime-local: UTC, as the page says) or ISO with a zone."""
    if not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(f"{field}: not a date and time ({value!r})", field=field) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    actor: Annotated[Actor, page(Permission.AUDIT_READ)],
    site_id: str = "",
    since: str = "",
    until: str = "",
    who: str = "",
    action: str = "",
    entity_type: str = "",
    entity_id: str = "",
    page: int = 1,
) -> Response:
    application = _app(request)
    rows: list[dict[str, Any]] = []
    total, error, status = 0, None, 200
    page = max(page, 1)
    with application.uow() as uow:
        sites = list(uow.session.scalars(select(Site).order_by(Site.code)))
    seen = visible_sites(actor)
    if seen is not None:
        sites = [s for s in sites if s.id in seen]
    try:
        with application.uow() as uow:
            found, total = search_audit(
                uow,
                actor,
                site_id=site_id or None,
                since=_moment(since, "since"),
                until=_moment(until, "until"),
                who=who or None,
                action=action or None,
                entity_type=entity_type or None,
                entity_id=entity_id or None,
                limit=PAGE,
                offset=(page - 1) * PAGE,
            )
            rows = [entry_dict(r) for r in found]
    except DomainError as exc:
        error, status = exc.message, exc.http_status
    query = {
        k: v
        for k, v in {
            "site_id": site_id,
            "since": since,
            "until": until,
            "who": who,
            "action": action,
            "entity_type": entity_type,
            "entity_id": entity_id,
        }.items()
        if v
    }
    pages = max(1, -(-total // PAGE))
    return render(
        request,
        "audit.html",
        actor,
        rows=rows,
        total=total,
        page=page,
        pages=pages,
        prev_url=f"/audit?{urlencode({**query, 'page': page - 1})}" if page > 1 else None,
        next_url=f"/audit?{urlencode({**query, 'page': page + 1})}" if page < pages else None,
        f=query,
        sites=sites,
        site_names={s.id: s.code for s in sites},
        can_verify=can_network(actor, Permission.AUDIT_VERIFY),
        error=error,
        status_code=status,
    )


@router.get("/audit/verify", response_class=HTMLResponse)
def audit_verify_page(
    request: Request, actor: Annotated[Actor, page(Permission.AUDIT_VERIFY)]
) -> Response:
    application = _app(request)
    try:
        with application.uow() as uow:
            report = verify_audit_chain(uow, actor)
    except DomainError as exc:
        shown = hidden(exc)  # another site's record is answered as an unknown one
        return render(
            request, "not_found.html", actor, error=shown.message, status_code=shown.http_status
        )
    return render(request, "audit_verify.html", actor, report=report)


@router.get("/audit/records/{entity_type}/{entity_id}", response_class=HTMLResponse)
def audit_record_page(
    request: Request,
    entity_type: str,
    entity_id: str,
    actor: Annotated[Actor, page(Permission.AUDIT_READ)],
) -> Response:
    application = _app(request)
    try:
        with application.uow() as uow:
            view = record_view(application, uow, actor, entity_type, entity_id)
    except DomainError as exc:
        shown = hidden(exc)  # another site's record is answered as an unknown one
        return render(
            request, "not_found.html", actor, error=shown.message, status_code=shown.http_status
        )
    return render(
        request,
        "audit_record.html",
        actor,
        view=view,
        can_export=can(actor, Permission.RECORD_EXPORT, site_id=view["site_id"]),
    )


@router.get("/audit/records/{entity_type}/{entity_id}/export")
def audit_record_export(
    request: Request,
    entity_type: str,
    entity_id: str,
    actor: Annotated[Actor, page(Permission.RECORD_EXPORT)],
    format: str = "pdf",
) -> Response:
    application = _app(request)
    try:
        with application.uow() as uow:
            body, media_type, name = export_record(
                application, uow, actor, entity_type, entity_id, format
            )
    except DomainError as exc:
        shown = hidden(exc)  # another site's record is answered as an unknown one
        return render(
            request, "not_found.html", actor, error=shown.message, status_code=shown.http_status
        )
    return Response(
        content=body,
        media_type=media_type,
        headers=attachment(name),
    )
