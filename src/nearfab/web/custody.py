"""Custody pages: backward trace of a pack, forward trace of a material lot, recalls with their
report of affected patients by site (CSV and PDF), the custody alerts of the reader's site
(the patients to contact), EPCIS capture and query, and the check of the signed custody
ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select

from nearfab.api.deps import attachment
from nearfab.common.errors import DomainError, Forbidden, NotFound, ValidationFailed
from nearfab.custody import EpcisInvalid, Recall
from nearfab.custody.enums import AlertKind
from nearfab.identity import Actor, Permission, can_network, is_network_wide
from nearfab.network import Site, SiteKind
from nearfab.web import traceview
from nearfab.web.localtime import local, zone_of
from nearfab.web.pages import _app, _check_csrf, hidden, page, render, templates

router = APIRouter(include_in_schema=False)


@router.get("/trace", response_class=HTMLResponse)
def trace_page(
    request: Request,
    actor: Annotated[Actor, page(Permission.TRACE_READ)],
    q: str = "",
    kind: str = "pack",
) -> Response:
    """Search a pack (id, or its scanned GS1 data) backward, or a material lot forward."""
    application = _app(request)
    result: dict[str, Any] | None = None
    shown: dict[str, Any] | None = None  # names, local times, timeline (traceview.py)
    error: str | None = None
    status = 200
    if q.strip():
        try:
            with application.uow() as uow:
                if kind == "lot":
                    result = application.custody_chain.trace.lot(uow, actor, q.strip())
                    shown = traceview.forward(application, uow, result)
                else:
                    result = application.custody_chain.trace.unit(uow, actor, q.strip())
                    shown = traceview.backward(application, uow, result)
        except DomainError as exc:
            refused = hidden(exc)  # another site's pack is answered as an unknown one
            error, status = refused.message, refused.http_status
    return render(
        request,
        "trace.html",
        actor,
        q=q,
        kind=kind,
        result=result,
        view=shown,
        error=error,
        status_code=status,
    )


@router.get("/recalls", response_class=HTMLResponse)
def recalls_page(
    request: Request, actor: Annotated[Actor, page(Permission.RECALL_REPORT_READ)]
) -> Response:
    application = _app(request)
    with application.uow() as uow:
        recalls = list(uow.session.scalars(select(Recall).order_by(Recall.created_at.desc())))
    return render(
        request,
        "recalls.html",
        actor,
        recalls=recalls,
        can_recall=can_network(actor, Permission.RECALL_CREATE),
        error=None,
    )


@router.post("/recalls")
def recall_create(
    request: Request,
    actor: Annotated[Actor, page(Permission.RECALL_CREATE)],
    lot: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Recall every pack made from a material lot (QP or admin; reason required)."""
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
            can_recall=can_network(actor, Permission.RECALL_CREATE),
            error=exc.message,
            status_code=exc.http_status,
        )
    return RedirectResponse(f"/recalls/{recall.id}", status_code=303)


@router.get("/recalls/{recall_id}", response_class=HTMLResponse)
def recall_page(
    request: Request, recall_id: str, actor: Annotated[Actor, page(Permission.RECALL_REPORT_READ)]
) -> Response:
    application = _app(request)
    try:
        with application.uow() as uow:
            # the reader's rows only: the packs of the sites they serve (network totals)
            report = application.custody_chain.recalls.report(uow, actor, recall_id)
            recall = application.custody_chain.recalls.get(uow, recall_id)
            rows = report["rows"]
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
        totals=report["totals"],
        scoped=report["scoped"],
    )


@router.get("/recalls/{recall_id}/report.{fmt}")
def recall_report(
    request: Request,
    recall_id: str,
    fmt: str,
    actor: Annotated[Actor, page(Permission.RECALL_REPORT_READ, file=True)],
) -> Response:
    application = _app(request)
    if fmt not in ("csv", "pdf"):
        return Response("report formats: csv, pdf", status_code=404)
    try:
        with application.uow() as uow:
            recalls = application.custody_chain.recalls
            if fmt == "pdf":
                body: bytes | str = recalls.report_pdf(uow, actor, recall_id)
            else:
                body = recalls.report_csv(uow, actor, recall_id)
    except (NotFound, Forbidden) as exc:
        return Response(exc.message, status_code=exc.http_status)
    media = "application/pdf" if fmt == "pdf" else "text/csv"
    name = f"recall-{recall_id}.{fmt}"
    return Response(body, media_type=media, headers=attachment(name))


# --- custody alerts: the packs a pharmacist must act on ------------------------------------------
# an alert's kind in the words of the page
ALERT_KINDS = {
    AlertKind.DISPENSED_THEN_RECALLED.value: "Dispensed while offline, then found recalled or "
    "rejected: contact the patient",
    AlertKind.SECOND_DISPENSE.value: "Second dispense of one pack",
    AlertKind.SUSPECTED_FALSIFIED.value: "Suspected falsified pack",
    AlertKind.INTEGRITY_FAILURE.value: "Pack record differs from its signed release",
}


@router.get("/custody/alerts", response_class=HTMLResponse)
def custody_alerts_page(
    request: Request, actor: Annotated[Actor, page(Permission.TRACE_READ)]
) -> Response:
    """The custody alerts of the reader's site, newest first (every site's, with a site
    column, for a grant that reaches the network): a pack dispensed while the site was offline
    and later found recalled or rejected names the patient to contact. The list is the custody
    service's (`CustodyService.alerts`): no query parameter widens it."""
    application = _app(request)
    with application.uow() as uow:
        alerts = application.custody.alerts(uow, actor)
        by_id = {s.id: s for s in uow.session.scalars(select(Site))}
    rows = []
    for a in alerts:
        site = by_id.get(a.site_id) if a.site_id else None
        zone = zone_of(application.settings, site.code if site else None)
        rows.append(
            {
                **a.to_dict(),
                "when": local(a.raised_at, zone),
                "kind_words": ALERT_KINDS.get(a.kind, a.kind.replace("_", " ")),
                "site_name": site.name if site else "the network (no site)",
            }
        )
    return render(
        request,
        "custody_alerts.html",
        actor,
        alerts=rows,
        network=is_network_wide(actor, Permission.TRACE_READ),
        site_name=by_id[actor.site_id].name if actor.site_id in by_id else None,
    )


# --- EPCIS: capture a partner's document, query events ---------------------------------------
MAX_DOCUMENT = 10 * 1024 * 1024
_EPC_KEYS = ("parentID", "epcList", "childEPCs", "inputEPCList", "outputEPCList")
_QTY_KEYS = ("quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList")
_FILTERS = ("epc", "bizStep", "disposition", "location", "GE_eventTime", "LT_eventTime")


def _epcs(event: Any, most: int = 6) -> list[str]:
    """The identifiers an event names, as written in it (at most `most`, then a count)."""
    if not isinstance(event, dict):
        return []
    out: list[str] = []
    for key in _EPC_KEYS:
        value = event.get(key)
        for epc in [value] if isinstance(value, str) else value or []:
            if isinstance(epc, str):
                out.append(epc)
    for key in _QTY_KEYS:
        for q in event.get(key) or []:
            if isinstance(q, dict) and isinstance(q.get("epcClass"), str):
                out.append(f"{q['epcClass']} × {q.get('quantity', '?')} {q.get('uom', '')}".strip())
    return out if len(out) <= most else [*out[: most - 1], f"… and {len(out) - most + 1} more"]


_VOCAB_PREFIXES = (
    "urn:epcglobal:cbv:bizstep:",
    "urn:epcglobal:cbv:disp:",
    "https://ref.gs1.org/cbv/BizStep-",
    "https://ref.gs1.org/cbv/Disp-",
    "cbv:BizStep-",
    "cbv:Disp-",
)


def _vocab(value: Any) -> str:
    """A CBV bizStep or disposition in its bare form, for people."""
    if not isinstance(value, str) or not value:
        return "—"
    for prefix in _VOCAB_PREFIXES:
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


templates.env.filters.update(epcs=_epcs, vocab=_vocab)


def _time_filter(name: str, text: str) -> datetime | None:
    """A time from the form (`datetime-local` gives no zone: UTC), or None when empty."""
    if not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(
            f"{name}: {text!r} is not a date and time (YYYY-MM-DDTHH:MM[:SS])", field=name
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _epcis_page(
    request: Request,
    actor: Actor,
    *,
    filters: dict[str, str] | None = None,
    events: list[dict[str, Any]] | None = None,
    status_code: int = 200,
    **ctx: Any,
) -> Response:
    shown = {k: "" for k in _FILTERS} | {"limit": "100"} | (filters or {})
    ctx.setdefault("error", None)
    ctx.setdefault("schema_errors", None)
    ctx.setdefault("captured", None)
    ctx.setdefault("pasted", "")
    return render(
        request,
        "epcis.html",
        actor,
        filters=shown,
        events=events,
        can_capture=can_network(actor, Permission.EPCIS_CAPTURE),
        status_code=status_code,
        **ctx,
    )


@router.get("/epcis", response_class=HTMLResponse)
def epcis_page(
    request: Request,
    actor: Annotated[Actor, page(Permission.EPCIS_QUERY)],
    epc: str = "",
    biz_step: Annotated[str, Query(alias="bizStep")] = "",
    disposition: str = "",
    location: str = "",
    ge_event_time: Annotated[str, Query(alias="GE_eventTime")] = "",
    lt_event_time: Annotated[str, Query(alias="LT_eventTime")] = "",
    limit: str = "100",
    run: str = "",
) -> Response:
    """Query EPCIS events by EPC, bizStep, disposition, time range and location; the capture
    form for QPs, admins and pharmacists. Only events the person may read are shown (their
    sites'; partners' captured events for the control site and auditors)."""
    filters = {
        "epc": epc,
        "bizStep": biz_step,
        "disposition": disposition,
        "location": location,
        "GE_eventTime": ge_event_time,
        "LT_eventTime": lt_event_time,
        "limit": limit,
    }
    if not run and not any(v.strip() for k, v in filters.items() if k != "limit"):
        return _epcis_page(request, actor, filters=filters)
    application = _app(request)
    try:
        try:
            most = int(limit or "100")
        except ValueError:
            raise ValidationFailed("limit: a whole number, 1 to 10000", field="limit") from None
        ge_time = _time_filter("GE_eventTime", ge_event_time)
        lt_time = _time_filter("LT_eventTime", lt_event_time)
        with application.uow() as uow:
            events = application.custody_chain.epcis.search(
                uow,
                actor,
                epc=epc.strip() or None,
                biz_step=biz_step.strip() or None,
                disposition=disposition.strip() or None,
                ge_time=ge_time,
                lt_time=lt_time,
                location=location.strip() or None,
                limit=most,
            )
    except DomainError as exc:
        return _epcis_page(
            request, actor, filters=filters, error=exc.message, status_code=exc.http_status
        )
    return _epcis_page(request, actor, filters=filters, events=events)


@router.post("/epcis/capture")
async def epcis_capture(
    request: Request,
    actor: Annotated[Actor, page(Permission.EPCIS_CAPTURE)],
    document: Annotated[str, Form()] = "",
    file: Annotated[UploadFile | None, File()] = None,
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Capture an uploaded or pasted EPCIS 2.0 JSON-LD document: all events or none."""
    text = document
    if file is not None and file.filename:
        raw = await file.read(MAX_DOCUMENT + 1)
        text = raw.decode("utf-8", errors="replace") if raw.strip() else document
    # the JSON work and the database run off the event loop
    return await run_in_threadpool(_capture, request, actor, text, csrf_token)


def _capture(request: Request, actor: Actor, text: str, csrf_token: str) -> Response:
    application = _app(request)
    pasted = text if len(text) <= 200_000 else ""
    try:
        _check_csrf(request, csrf_token)
        if len(text.encode("utf-8")) > MAX_DOCUMENT:
            raise ValidationFailed("the document is larger than 10 MB", field="document")
        if not text.strip():
            raise ValidationFailed("upload or paste an EPCIS document", field="document")
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ValidationFailed(f"the document is not JSON: {exc}", field="document") from None
        with application.uow() as uow:
            result = application.custody_chain.epcis.capture(uow, actor, doc)
    except EpcisInvalid as exc:
        return _epcis_page(
            request,
            actor,
            error=exc.message,
            schema_errors=exc.errors,
            pasted=pasted,
            status_code=exc.http_status,
        )
    except DomainError as exc:
        return _epcis_page(
            request, actor, error=exc.message, pasted=pasted, status_code=exc.http_status
        )
    return _epcis_page(request, actor, captured=result.to_dict())


@router.get("/epcis/event")
def epcis_event(
    request: Request,
    actor: Annotated[Actor, page(Permission.EPCIS_QUERY, file=True)],
    id: str = "",
) -> Response:
    """One event as JSON-LD, by its event hash (or the eventID its document gave it), if the
    person may read it (else answered as unknown)."""
    application = _app(request)
    try:
        with application.uow() as uow:
            event = application.custody_chain.epcis.event(uow, actor, id)
    except DomainError as exc:
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status)
    return JSONResponse(event, media_type="application/ld+json")


# --- the custody ledger check ----------------------------------------------------------------
@router.get("/ledger", response_class=HTMLResponse)
def ledger_page(
    request: Request,
    actor: Annotated[Actor, page(Permission.LEDGER_VERIFY)],
    all_signatures: str = "",
) -> Response:
    """Every site's custody chain and the control site's anchors, checked now (the same check
    as `nearfab custody verify-ledger`)."""
    application = _app(request)
    every = all_signatures.lower() in ("1", "true", "on", "yes")
    try:
        with application.uow() as uow:
            report = application.custody_chain.ledger.verify(uow, all_signatures=every)
            sites = {s.id: s for s in uow.session.scalars(select(Site))}
    except DomainError as exc:
        return render(
            request,
            "ledger.html",
            actor,
            report=None,
            sites={},
            control_id=None,
            all_signatures=every,
            error=exc.message,
            status_code=exc.http_status,
        )
    control_id = next((s.id for s in sites.values() if s.kind == SiteKind.CONTROL.value), None)
    return render(
        request,
        "ledger.html",
        actor,
        report=report,
        sites=sites,
        control_id=control_id,
        all_signatures=every,
        error=None,
    )
