"""Trace and recall pages: backward trace of a pack, forward trace of a material lot, recalls
with their report of affected patients by site (CSV and PDF)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from nearfab.common.errors import DomainError, Forbidden, NotFound
from nearfab.custody import Recall
from nearfab.identity import Permission, Role, authorize
from nearfab.web.pages import ActorOpt, _app, _check_csrf, _need_login, render

router = APIRouter(include_in_schema=False)
RECALLERS = (Role.QP, Role.ADMIN)


@router.get("/trace", response_class=HTMLResponse)
def trace_page(request: Request, actor: ActorOpt, q: str = "", kind: str = "pack") -> Response:
    """Search a pack (id, or its scanned GS1 data) backward, or a material lot forward."""
    if actor is None:
        return _need_login(request)
    application = _app(request)
    result: dict[str, Any] | None = None
    error: str | None = None
    status = 200
    if q.strip():
        try:
            with application.uow() as uow:
                if kind == "lot":
                    result = application.custody_chain.trace.lot(uow, actor, q.strip())
                else:
                    result = application.custody_chain.trace.unit(uow, actor, q.strip())
        except DomainError as exc:
            error, status = exc.message, exc.http_status
    return render(
        request,
        "trace.html",
        actor,
        q=q,
        kind=kind,
        result=result,
        error=error,
        status_code=status,
    )


@router.get("/recalls", response_class=HTMLResponse)
def recalls_page(request: Request, actor: ActorOpt) -> Response:
    if actor is None:
        return _need_login(request)
    application = _app(request)
    with application.uow() as uow:
        recalls = list(uow.session.scalars(select(Recall).order_by(Recall.created_at.desc())))
    return render(
        request,
        "recalls.html",
        actor,
        recalls=recalls,
        can_recall=actor.has_any(RECALLERS),
        error=None,
    )


@router.post("/recalls")
def recall_create(
    request: Request,
    actor: ActorOpt,
    lot: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Recall every pack made from a material lot (QP or admin; reason required)."""
    if actor is None:
        return _need_login(request)
    application = _app(request)
    try:
        _check_csrf(request, csrf_token)
        with application.uow() as uow:
            recall = application.custody_chain.recalls.create(uow, actor, lot=lot, reason=reason)
    except DomainError as exc:
        with application.uow() as uow:
            recalls = list(uow.session.scalars(select(Recall).order_by(Recall.created_at.desc())))
        return render(
            request,
            "recalls.html",
            actor,
            recalls=recalls,
            can_recall=actor.has_any(RECALLERS),
            error=exc.message,
            status_code=exc.http_status,
        )
    return RedirectResponse(f"/recalls/{recall.id}", status_code=303)


@router.get("/recalls/{recall_id}", response_class=HTMLResponse)
def recall_page(request: Request, recall_id: str, actor: ActorOpt) -> Response:
    if actor is None:
        return _need_login(request)
    application = _app(request)
    try:
        authorize(actor, Permission.RECALL_REPORT_READ)
        with application.uow() as uow:
            recall = application.custody_chain.recalls.get(uow, recall_id)
            rows = application.custody_chain.recalls.report_rows(uow, recall_id)
    except (NotFound, Forbidden) as exc:
        return render(
            request,
            "not_found.html",
            actor,
            error=exc.message,
            status_code=exc.http_status,
        )
    sites = sorted({r["site"] for r in rows})
    return render(
        request,
        "recall.html",
        actor,
        recall=recall,
        rows=rows,
        sites=sites,
        dispensed=sum(1 for r in rows if r["dispensed"] == "yes"),
    )


@router.get("/recalls/{recall_id}/report.{fmt}")
def recall_report(request: Request, recall_id: str, fmt: str, actor: ActorOpt) -> Response:
    if actor is None:
        return _need_login(request)
    application = _app(request)
    if fmt not in ("csv", "pdf"):
        return Response("report formats: csv, pdf", status_code=404)
    try:
        authorize(actor, Permission.RECALL_REPORT_READ)
        with application.uow() as uow:
            recalls = application.custody_chain.recalls
            if fmt == "pdf":
                body: bytes | str = recalls.report_pdf(uow, recall_id)
            else:
                body = recalls.report_csv(uow, recall_id)
    except (NotFound, Forbidden) as exc:
        return Response(exc.message, status_code=exc.http_status)
    media = "application/pdf" if fmt == "pdf" else "text/csv"
    name = f"recall-{recall_id}.{fmt}"
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
