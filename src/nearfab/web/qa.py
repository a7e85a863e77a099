"""Central QA pages (docs/central-qa.md): every site's open deviations, complaints, CAPAs and
change controls with owner, due date and overdue; counts by site and owner; a chart of items
opened per month per site and one of open / overdue items per site (Plotly, drawn by the
locally served plotly.js; nothing from a CDN); the annual report per master file as CSV and
PDF for the control site."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import plotly.graph_objects as go
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nearfab.api.deps import attachment
from nearfab.bootstrap import App
from nearfab.common.errors import DomainError, Forbidden, NotFound
from nearfab.identity import Actor, Permission, can, can_network
from nearfab.qaviews import annual_report, annual_report_csv, annual_report_pdf, central_qa
from nearfab.quality.qms import ITEM_KINDS
from nearfab.quality.qms_models import CapaSource
from nearfab.uow import UnitOfWork
from nearfab.web.comparability import AMBER, BRAND, GREY, RED, _layout
from nearfab.web.forms import signature
from nearfab.web.pages import _app, _not_found, form_action, page, render

router = APIRouter(include_in_schema=False)
Reader = Annotated[Actor, page(Permission.QA_READ)]
KIND_COLOURS = {"deviations": RED, "complaints": AMBER, "capas": BRAND}


def trend_figure(view: dict[str, Any]) -> str | None:
    """Items opened per month, stacked by kind, one group of bars per site."""
    if not view["trend"]:
        return None
    fig = go.Figure()
    x = [[t["month"] for t in view["trend"]], [t["site_code"] for t in view["trend"]]]
    for kind, colour in KIND_COLOURS.items():
        fig.add_trace(
            go.Bar(
                x=x,
                y=[t[kind] for t in view["trend"]],
                name=kind,
                marker={"color": colour},
                hovertemplate=f"%{{x}}: %{{y}} {kind}<extra></extra>",
            )
        )
    return _layout(
        fig,
        "Quality items opened per month and site",
        barmode="stack",
        yaxis={"title": "items opened", "rangemode": "tozero", "dtick": 1},
    )


def open_figure(view: dict[str, Any]) -> str | None:
    """Open items per site, the overdue ones apart."""
    if not view["by_site"]:
        return None
    sites = [s["site_code"] for s in view["by_site"]]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=sites,
            y=[s["open"] - s["overdue"] for s in view["by_site"]],
            name="open, not overdue",
            marker={"color": GREY},
        )
    )
    fig.add_trace(
        go.Bar(
            x=sites,
            y=[s["overdue"] for s in view["by_site"]],
            name="overdue",
            marker={"color": RED},
        )
    )
    return _layout(
        fig,
        "Open quality items per site",
        height=280,
        barmode="stack",
        yaxis={"title": "open items", "rangemode": "tozero", "dtick": 1},
    )


@router.get("/qa", response_class=HTMLResponse)
def qa_page(request: Request, actor: Reader) -> Response:
    application = _app(request)
    with application.uow() as uow:
        view = central_qa(application, uow, actor)
        codes = sorted({mf.code for mf in application.master_files.list_all(uow)})
        year = uow.clock.now().year
        all_sites = application.network.list_sites(uow)
    return render(
        request,
        "qa.html",
        actor,
        view=view,
        trend=trend_figure(view),
        per_site=open_figure(view),
        codes=codes,
        year=year,
        may_report=can_network(actor, Permission.ANNUAL_REPORT_READ),
        may_record=can(actor, Permission.QA_RECORD),
        closable={
            i["id"]
            for i in view["items"]
            if i["kind"] == "capa" and can(actor, Permission.CAPA_CLOSE, site_id=i["site_id"])
        },
        # the items whose owner, due date or complaint steps this person may record (the
        # service checks the same, and the item's state, again)
        recordable={
            i["id"]
            for i in view["items"]
            if i["kind"] in ITEM_KINDS and can(actor, Permission.QA_RECORD, site_id=i["site_id"])
        },
        # where this person may record a complaint or open a CAPA: the sites they act for (and,
        # for a CAPA, the network, for network staff)
        record_sites=[s for s in all_sites if can(actor, Permission.QA_RECORD, site_id=s.id)],
        capa_network=can_network(actor, Permission.QA_RECORD),
        capa_sources=[s.value for s in CapaSource],
        flash=request.session.pop("qa_flash", None),
    )


@router.get("/qa/annual-report")
def annual_report_file(
    request: Request,
    actor: Annotated[Actor, page(Permission.ANNUAL_REPORT_READ, file=True)],
    code: Annotated[str, Query()],
    year: Annotated[int, Query()],
    format: Annotated[Literal["csv", "pdf"], Query()] = "pdf",
) -> Response:
    """The annual report for the regulator, as a file."""
    application = _app(request)
    with application.uow() as uow:
        report = annual_report(application, uow, actor, code, year)
    headers = attachment(f"annual-report-{code}-{year}.{format}")
    if format == "pdf":
        return Response(annual_report_pdf(report), media_type="application/pdf", headers=headers)
    return Response(annual_report_csv(report), media_type="text/csv", headers=headers)


def _refused(request: Request, actor: Actor, exc: DomainError, ref: str) -> Response:
    """Another site's record is answered as one that does not exist; anything else is said on
    the page the form goes back to."""
    if isinstance(exc, NotFound) or (isinstance(exc, Forbidden) and exc.code == "other_site"):
        return _not_found(request, actor, exc, ref)
    request.session["qa_flash"] = f"Refused: {exc.message}"
    return RedirectResponse("/qa", status_code=303)


def _act(
    request: Request,
    actor: Actor,
    csrf_token: str,
    ref: str,
    act: Callable[[App, UnitOfWork], str],
    *,
    signs: bool = False,
) -> Response:
    """A QA form's post (pages.form_action): `act` returns the message said on /qa; a refusal
    is said there too, or answered as not found for `ref` (_refused)."""
    return form_action(
        request,
        csrf_token,
        lambda application, uow: (act(application, uow), "/qa"),
        flash_key="qa_flash",
        refused=lambda exc: _refused(request, actor, exc, ref),
        signer=actor if signs else None,
    )


@router.post("/qa/complaints")
def record_complaint_form(
    request: Request,
    actor: Annotated[Actor, page(Permission.QA_RECORD)],
    site_id: Annotated[str, Form()] = "",
    reporter: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    pack_serial: Annotated[str, Form()] = "",
    batch_number: Annotated[str, Form()] = "",
    owner: Annotated[str, Form()] = "",
    due_date: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:

    def act(application: App, uow: UnitOfWork) -> str:
        row = application.qms.record_complaint(
            uow,
            actor,
            {
                "site_id": site_id,
                "reporter": reporter,
                "description": description,
                "pack_serial": pack_serial or None,
                "batch_number": batch_number or None,
                "owner": owner,
                "due_date": due_date,
            },
        )
        return f"Complaint {row.id} on batch {row.batch_number} recorded."

    return _act(request, actor, csrf_token, site_id, act)


@router.post("/qa/capas/{capa_id}/close")
def close_capa_form(
    request: Request,
    capa_id: str,
    actor: Annotated[Actor, page(Permission.CAPA_CLOSE)],
    effectiveness: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    totp: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """A QP closes a CAPA (e-signature)."""

    def act(application: App, uow: UnitOfWork) -> str:
        application.qms.close_capa(
            uow,
            actor,
            capa_id,
            {
                "effectiveness": effectiveness,
                **signature(password, username, totp),
            },
        )
        return f"CAPA {capa_id} closed (e-signed)."

    return _act(request, actor, csrf_token, capa_id, act, signs=True)


@router.post("/qa/capas")
def open_capa_form(
    request: Request,
    actor: Annotated[Actor, page(Permission.QA_RECORD)],
    site_id: Annotated[str, Form()] = "",
    master_file_code: Annotated[str, Form()] = "",
    title: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    source_kind: Annotated[str, Form()] = "",
    source_id: Annotated[str, Form()] = "",
    owner: Annotated[str, Form()] = "",
    due_date: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Open a CAPA at a site (an empty site: the network's), with its owner and due date
    (QmsService.open_capa, as POST /api/v1/qa/capas)."""

    def act(application: App, uow: UnitOfWork) -> str:
        row = application.qms.open_capa(
            uow,
            actor,
            {
                "site_id": site_id or None,
                "master_file_code": master_file_code or None,
                "title": title,
                "description": description,
                "source_kind": source_kind,
                "source_id": source_id or None,
                "owner": owner,
                "due_date": due_date,
            },
        )
        return f"CAPA {row.id} opened, owner {owner}, due {due_date}."

    return _act(request, actor, csrf_token, site_id, act)


@router.post("/qa/assignments/{item_kind}/{item_id}")
def assign_form(
    request: Request,
    item_kind: Literal["deviation", "complaint", "capa", "change_control"],
    item_id: str,
    actor: Annotated[Actor, page(Permission.QA_RECORD)],
    owner: Annotated[str, Form()] = "",
    due_date: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Name (or change, with a reason) the owner and due date of a quality item
    (QmsService.assign, as POST /api/v1/qa/assignments/{kind}/{id})."""

    def act(application: App, uow: UnitOfWork) -> str:
        application.qms.assign(
            uow,
            actor,
            item_kind,
            item_id,
            {"owner": owner, "due_date": due_date, "reason": reason or None},
        )
        words = item_kind.replace("_", " ")
        return f"The {words} {item_id} is now {owner}'s, due {due_date}."

    return _act(request, actor, csrf_token, item_id, act)


@router.post("/qa/complaints/{complaint_id}/investigate")
def investigate_complaint_form(
    request: Request,
    complaint_id: str,
    actor: Annotated[Actor, page(Permission.QA_RECORD)],
    investigation: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Start the complaint's investigation (QmsService.investigate_complaint)."""

    def act(application: App, uow: UnitOfWork) -> str:
        application.qms.investigate_complaint(
            uow, actor, complaint_id, {"investigation": investigation}
        )
        return f"Complaint {complaint_id} under investigation."

    return _act(request, actor, csrf_token, complaint_id, act)


@router.post("/qa/complaints/{complaint_id}/close")
def close_complaint_form(
    request: Request,
    complaint_id: str,
    actor: Annotated[Actor, page(Permission.QA_RECORD)],
    conclusion: Annotated[str, Form()] = "",
    capa_id: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Close an investigated complaint with its conclusion, and the CAPA it led to if any
    (QmsService.close_complaint)."""

    def act(application: App, uow: UnitOfWork) -> str:
        application.qms.close_complaint(
            uow, actor, complaint_id, {"conclusion": conclusion, "capa_id": capa_id or None}
        )
        return f"Complaint {complaint_id} closed."

    return _act(request, actor, csrf_token, complaint_id, act)
