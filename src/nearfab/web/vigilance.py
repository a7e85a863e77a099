"""Adverse events on the web (docs/pharmacovigilance.md): report one against a pack
(`/adverse-events/new`, the same use case as `POST /api/v1/adverse-events`), and its trace
(`/adverse-events/{id}`: the pack's batch, machine, site, lots, and every pack of those lots
with its patient; CSV and PDF downloads)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from nearfab.api.deps import attachment
from nearfab.common.errors import DomainError
from nearfab.identity import Actor, Permission, can
from nearfab.web.chain import refusal_words
from nearfab.web.forms import form_text
from nearfab.web.pages import _app, _check_csrf, _not_found, hidden, page, render

router = APIRouter(include_in_schema=False)
FLASH, ERROR = "vigilance_flash", "vigilance_error"


@router.get("/adverse-events/new", response_class=HTMLResponse)
def new_adverse_event(
    request: Request, actor: Annotated[Actor, page(Permission.ADVERSE_EVENT_REPORT)]
) -> Response:
    return render(
        request,
        "vigilance/new.html",
        actor,
        scan=request.query_params.get("scan", ""),
        flash=request.session.pop(FLASH, None),
        error=request.session.pop(ERROR, None),
    )


@router.post("/adverse-events/new")
async def report_adverse_event(
    request: Request, actor: Annotated[Actor, page(Permission.ADVERSE_EVENT_REPORT)]
) -> Response:
    form = await form_text(request)
    application = _app(request)

    def run() -> str:
        _check_csrf(request, form.get("csrf_token", ""))
        data = {
            "scan": form.get("scan", ""),
            "description": form.get("description", ""),
            "seriousness": form.get("seriousness") or None,
            "actuality": form.get("actuality") or "actual",
        }
        with application.uow() as uow:
            return application.vigilance.report(uow, actor, data).id

    try:
        event_id = await run_in_threadpool(run)
    except DomainError as exc:
        # a pack of a site the reporter is not staff of is answered as an unknown one: the
        # form never confirms that a pack exists elsewhere
        shown = hidden(exc, form.get("scan", "").strip() or None)
        request.session[ERROR] = refusal_words("Adverse event", shown)
        return RedirectResponse("/adverse-events/new", status_code=303)
    if can(actor, Permission.TRACE_READ):
        return RedirectResponse(f"/adverse-events/{event_id}", status_code=303)
    request.session[FLASH] = f"Adverse event {event_id} recorded; the QP traces it."
    return RedirectResponse("/adverse-events/new", status_code=303)


@router.get("/adverse-events/{event_id}", response_class=HTMLResponse)
def adverse_event_page(
    request: Request, event_id: str, actor: Annotated[Actor, page(Permission.TRACE_READ)]
) -> Response:
    application = _app(request)
    try:
        with application.uow() as uow:
            found = application.vigilance.trace(uow, actor, event_id)
    except DomainError as exc:
        return _not_found(request, actor, exc, event_id)
    return render(request, "vigilance/trace.html", actor, trace=found)


@router.get("/adverse-events/{event_id}/trace.csv")
def adverse_event_csv(
    request: Request, event_id: str, actor: Annotated[Actor, page(Permission.TRACE_READ)]
) -> Response:
    return _trace_file(request, actor, event_id, "csv")


@router.get("/adverse-events/{event_id}/trace.pdf")
def adverse_event_pdf(
    request: Request, event_id: str, actor: Annotated[Actor, page(Permission.TRACE_READ)]
) -> Response:
    return _trace_file(request, actor, event_id, "pdf")


def _trace_file(
    request: Request, actor: Actor, event_id: str, kind: Literal["csv", "pdf"]
) -> Response:
    """The trace as a download; an event the reader may not see is answered as not found."""
    application = _app(request)
    try:
        with application.uow() as uow:
            if kind == "csv":
                body: str | bytes = application.vigilance.trace_csv(uow, actor, event_id)
            else:
                body = application.vigilance.trace_pdf(uow, actor, event_id)
    except DomainError as exc:
        return _not_found(request, actor, exc, event_id)
    media_type = "text/csv" if kind == "csv" else "application/pdf"
    return Response(
        body, media_type=media_type, headers=attachment(f"adverse-event-{event_id}.{kind}")
    )
