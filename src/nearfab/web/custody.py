"""Custody pages: backward trace of a pack, forward trace of a material lot, recalls with their
report of affected patients by site (CSV and PDF), the custody alerts of the reader's site
(the patients to contact, and the follow-up a pharmacist records), EPCIS capture and query,
and the check of the signed custody ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select

from nearfab.api.deps import attachment
from nearfab.common.errors import DomainError, Forbidden, NotFound, ValidationFailed
from nearfab.custody import EpcisInvalid, Recall
from nearfab.custody.enums import AlertKind, AlertOutcome, AlertStatus
from nearfab.custody.services.alerts import (
    ACTION_WORDS,
    FILTERS,
    OUTCOME_WORDS,
    STATUS_WORDS,
    may_act,
    next_statuses,
)
from nearfab.identity import Actor, Permission, can_network, is_network_wide
from nearfab.network import Site, SiteKind
from nearfab.replication import site_alerts
from nearfab.web import traceview
from nearfab.web.localtime import local, zone_of
from nearfab.web.pages import _app, _check_csrf, form_action, hidden, page, render, templates

if TYPE_CHECKING:
    from nearfab.bootstrap import App
    from nearfab.uow import UnitOfWork

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
ALERT_FLASH = "custody_alert_flash"


@router.get("/custody/alerts", response_class=HTMLResponse)
def custody_alerts_page(
    request: Request,
    actor: Annotated[Actor, page(Permission.TRACE_READ)],
    status: str = "all",
) -> Response:
    """The custody alerts of the reader's site, open ones first, then newest first (every
    site's, with a site column, for a grant that reaches the network): a pack dispensed while
    the site was offline and later found recalled or rejected names the patient to contact.
    Each alert shows its follow-up status in words and its history; a pharmacist of its site
    gets a small form for the next step. The list is the custody service's
    (`CustodyService.alerts`): no query parameter widens it; `status` (all, open, closed)
    narrows it."""
    return _alerts_page(request, actor, status)


@router.post("/custody/alerts/{alert_id}")
def custody_alert_step(
    request: Request,
    alert_id: str,
    actor: Annotated[Actor, page(Permission.DISPENSE)],
    status: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
    outcome: Annotated[str, Form()] = "",
    expected_status: Annotated[str, Form()] = "",
    show: Annotated[str, Form()] = "all",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Record a step of an alert's follow-up from the page's form (`CustodyService.update_alert`,
    the same use case as the API): CSRF token first; a refusal shows the page again with the
    reason, the field and what was typed; another site's alert is answered as unknown (404)."""
    shown = show if show in FILTERS else "all"

    def act(application: App, uow: UnitOfWork) -> tuple[str | None, str]:
        done = application.custody.update_alert(
            uow,
            actor,
            alert_id,
            status=status,
            note=note,
            outcome=outcome or None,
            expected_status=expected_status or None,
        )
        words = STATUS_WORDS.get(done.status, done.status)
        return f"Alert {done.id}: {words}.", f"/custody/alerts?status={shown}#alert-{done.id}"

    def refused(exc: DomainError) -> Response:
        shown_exc = hidden(exc, alert_id)
        failed = {
            "alert_id": alert_id,
            "status": status,
            "note": note,
            "outcome": outcome,
            "field": shown_exc.field,
        }
        return _alerts_page(
            request,
            actor,
            shown,
            error=shown_exc.message,
            failed=failed,
            status_code=shown_exc.http_status,
        )

    return form_action(request, csrf_token, act, flash_key=ALERT_FLASH, refused=refused)


def _alerts_page(
    request: Request,
    actor: Actor,
    status: str,
    *,
    error: str | None = None,
    failed: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    application = _app(request)
    wanted = status if status in FILTERS else "all"
    with application.uow() as uow:
        alerts = application.custody.alerts(uow, actor, status=wanted)
        by_id = {s.id: s for s in uow.session.scalars(select(Site))}
    rows = []
    for a in alerts:
        site = by_id.get(a.site_id) if a.site_id else None
        zone = zone_of(application.settings, site.code if site else None)
        acting = may_act(actor, a.site_id)
        history = [
            {
                **h.to_dict(),
                "when": local(h.acted_at, zone),
                "to_words": STATUS_WORDS.get(h.to_status, h.to_status),
                "outcome_words": OUTCOME_WORDS.get(h.outcome or "", h.outcome),
            }
            for h in a.history
        ]
        steps = next_statuses(a.status) if acting else []
        rows.append(
            {
                **a.to_dict(),
                "when": local(a.raised_at, zone),
                "kind_words": ALERT_KINDS.get(a.kind, a.kind.replace("_", " ")),
                "site_name": site.name if site else "the network (no site)",
                "status_words": STATUS_WORDS.get(a.status, a.status),
                "outcome_words": OUTCOME_WORDS.get(a.outcome or "", a.outcome),
                "history": history,
                "last": history[-1] if history else None,
                "closed": a.status == AlertStatus.CLOSED.value,
                "steps": [
                    {
                        "status": s,
                        "words": "Reopen (give the reason)"
                        if a.status == AlertStatus.CLOSED.value
                        else ACTION_WORDS.get(s, s),
                    }
                    for s in steps
                ],
            }
        )
    nodes: list[dict[str, Any]] | None = None
    if application.remote_releases is not None:  # the control node: the site nodes' alerts
        with application.uow() as uow:
            nodes = [
                {
                    **r,
                    "kind_words": ALERT_KINDS.get(r["kind"], str(r["kind"]).replace("_", " ")),
                    "status_words": STATUS_WORDS.get(r["status"], r["status"]),
                    "outcome_words": OUTCOME_WORDS.get(
                        (r["last_step"] or {}).get("outcome") or "", None
                    ),
                }
                for r in site_alerts(uow, actor, status=wanted)
            ]
    return render(
        request,
        "custody_alerts.html",
        actor,
        alerts=rows,
        site_nodes=nodes,
        show=wanted,
        filters=FILTERS,
        outcomes=[(o.value, OUTCOME_WORDS[o.value]) for o in AlertOutcome],
        network=is_network_wide(actor, Permission.TRACE_READ),
        site_name=by_id[actor.site_id].name if actor.site_id in by_id else None,
        flash=request.session.pop(ALERT_FLASH, None),
        error=error,
        failed=failed or {},
        status_code=status_code,
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
