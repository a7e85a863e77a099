"""Comparability pages: each site (machine, material lot, month) of a master file against the
network, with charts a QA manager reads (means against the network's limits, batch means over
time, TOST intervals against the margin, Cpk with its interval, Hotelling T²); proficiency
rounds with their z-scores; suspensions and the CAPA that lifts them. Figures are built here
with Plotly and drawn by the locally served plotly.js (web/planning.py); nothing from a CDN."""

from __future__ import annotations

from typing import Annotated, Any

import plotly.graph_objects as go
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nearfab.bootstrap import App
from nearfab.common.errors import DomainError, Forbidden, NotFound, ValidationFailed
from nearfab.identity import Actor, Permission, can, can_network
from nearfab.uow import UnitOfWork
from nearfab.web.forms import signature
from nearfab.web.pages import _app, _check_csrf, _not_found, form_action, page, render

router = APIRouter(include_in_schema=False)
Reader = Annotated[Actor, page(Permission.COMPARABILITY_READ)]
RED, BRAND, GREY, GREEN, AMBER = "#b3261e", "#0f3b57", "#5b6b7c", "#1f7a44", "#8a5a00"
FONT = {"family": "system-ui, sans-serif", "size": 12, "color": "#1d2733"}


def _layout(fig: go.Figure, title: str, height: int = 320, **extra: Any) -> str:
    fig.update_layout(
        title={"text": title, "x": 0, "font": {"size": 14}},
        height=height,
        margin={"l": 70, "r": 20, "t": 40, "b": 50},
        font=FONT,
        showlegend=True,
        legend={"orientation": "h", "y": -0.25},
        **extra,
    )
    return str(fig.to_json())


def means_figure(attribute: dict[str, Any]) -> str:
    """Each group's mean against the network's centre line and its own 3σ limits."""
    fig = go.Figure()
    groups = attribute["groups"]
    labels = [g["label"] for g in groups]
    if attribute["centre"] is not None:
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=[attribute["centre"]] * len(labels),
                mode="lines",
                name="network mean",
                line={"color": GREY, "dash": "dash"},
            )
        )
        for bound, name in (("lcl", "lower limit"), ("ucl", "upper limit")):
            fig.add_trace(
                go.Scatter(
                    x=labels,
                    y=[g[bound] for g in groups],
                    mode="markers",
                    name=name,
                    marker={"symbol": "line-ew-open", "size": 24, "color": RED},
                )
            )
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=[g["mean"] for g in groups],
            mode="markers",
            name="mean",
            marker={
                "size": 12,
                "color": [RED if g["flags"] else BRAND for g in groups],
            },
            customdata=[[g["n"], len(g["flags"])] for g in groups],
            hovertemplate="%{x}: %{y:.4g} (n = %{customdata[0]}, "
            "%{customdata[1]} flag(s))<extra></extra>",
        )
    )
    return _layout(
        fig,
        f"{attribute['label']}: mean of each against the network",
        yaxis={"title": attribute["unit"] or attribute["label"]},
    )


def trend_figure(attribute: dict[str, Any]) -> str:
    """Batch means over time, one line per group, with the network's centre line."""
    fig = go.Figure()
    by_group: dict[str, list[dict[str, Any]]] = {}
    for p in attribute["points"]:
        by_group.setdefault(p["group"], []).append(p)
    for group, points in sorted(by_group.items()):
        fig.add_trace(
            go.Scatter(
                x=[p["finished_at"] for p in points],
                y=[p["mean"] for p in points],
                mode="lines+markers",
                name=group,
                text=[p["batch_number"] for p in points],
                hovertemplate="%{text}: %{y:.4g}<extra>" + group + "</extra>",
            )
        )
    if attribute["centre"] is not None:
        fig.add_hline(
            y=attribute["centre"],
            line={"color": GREY, "dash": "dash"},
            annotation_text="network mean",
        )
    return _layout(
        fig,
        f"{attribute['label']}: batch means over time",
        xaxis={"type": "date", "title": "finished (UTC)"},
        yaxis={"title": attribute["unit"] or attribute["label"]},
    )


def tost_figure(attribute: dict[str, Any]) -> str | None:
    """Each group's difference from the rest with its (1 - 2α) interval, inside ±margin or not."""
    rows = [g for g in attribute["groups"] if g["tost"]]
    if not rows or attribute["margin"] is None:
        return None
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[g["tost"]["difference"] for g in rows],
            y=[g["label"] for g in rows],
            mode="markers",
            name="difference from the rest",
            marker={
                "size": 11,
                "color": [GREEN if g["tost"]["equivalent"] else RED for g in rows],
            },
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [g["tost"]["ci_high"] - g["tost"]["difference"] for g in rows],
                "arrayminus": [g["tost"]["difference"] - g["tost"]["ci_low"] for g in rows],
            },
        )
    )
    margin = attribute["margin"]
    for x in (-margin, margin):
        fig.add_vline(x=x, line={"color": AMBER, "dash": "dot"})
    fig.add_vline(x=0, line={"color": GREY})
    return _layout(
        fig,
        f"{attribute['label']}: equivalence (TOST) within ±{margin:g}",
        height=140 + 40 * len(rows),
        xaxis={"title": f"difference ({attribute['unit']})"},
    )


def cpk_figure(attribute: dict[str, Any], min_cpk: float) -> str | None:
    rows = [g for g in attribute["groups"] if g["capability"]]
    if not rows:
        return None
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[g["label"] for g in rows],
            y=[g["capability"]["cpk"] for g in rows],
            mode="markers",
            name="Cpk (95 % interval)",
            marker={"size": 11, "color": BRAND},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [g["capability"]["cpk_high"] - g["capability"]["cpk"] for g in rows],
                "arrayminus": [g["capability"]["cpk"] - g["capability"]["cpk_low"] for g in rows],
            },
        )
    )
    fig.add_hline(y=min_cpk, line={"color": RED, "dash": "dot"}, annotation_text=f"{min_cpk:g}")
    return _layout(fig, f"{attribute['label']}: Cpk with Bissell's interval")


def z_figure(view: dict[str, Any]) -> str | None:
    rows = [r for r in view["results"] if r["z"] is not None]
    if not rows:
        return None
    fig = go.Figure(
        go.Bar(
            x=[r["site_code"] for r in rows],
            y=[r["z"] for r in rows],
            marker_color=[
                RED if abs(r["z"]) > 3 else AMBER if abs(r["z"]) > 2 else GREEN for r in rows
            ],
            name="z-score",
        )
    )
    for y, colour in ((2, AMBER), (-2, AMBER), (3, RED), (-3, RED)):
        fig.add_hline(y=y, line={"color": colour, "dash": "dot"})
    return _layout(fig, "z-scores (ISO 13528): |z| > 3 suspends", yaxis={"title": "z"})


@router.get("/comparability", response_class=HTMLResponse)
def comparability_page(
    request: Request,
    actor: Reader,
    code: Annotated[str | None, Query()] = None,
    by: Annotated[str, Query()] = "site",
) -> Response:
    application = _app(request)
    error = None
    report = None
    with application.uow() as uow:
        codes = sorted(
            {mf.code for mf in application.master_files.list_all(uow) if mf.status == "effective"}
        )
        chosen = code or (codes[0] if codes else None)
        if chosen is not None:
            try:
                report = application.comparability.report(uow, actor, chosen, by)
            except DomainError as exc:
                error = exc.message
        rounds = application.comparability.rounds(uow, actor)
        suspensions = application.comparability.suspensions(uow, actor)
        sites = [s.code for s in application.network.list_sites(uow)]
    figures = []
    if report is not None:
        for a in report["attributes"]:
            figures.append(
                {
                    "attribute": a,
                    "means": means_figure(a),
                    "trend": trend_figure(a),
                    "tost": tost_figure(a),
                    "cpk": cpk_figure(a, report["min_cpk"]),
                }
            )
    return render(
        request,
        "comparability.html",
        actor,
        codes=codes,
        chosen=chosen,
        by=by,
        report=report,
        figures=figures,
        rounds=rounds,
        suspensions=suspensions,
        sites=sites,
        error=error,
        may_open_round=can_network(actor, Permission.PROFICIENCY_ROUND),
        may_close=can_network(actor, Permission.PROFICIENCY_CAPA_CLOSE),
        flash=request.session.pop("comparability_flash", None),
    )


FLASH = "comparability_flash"


def _refused(request: Request, exc: DomainError) -> Response:
    """A refused form on the comparability page: said there."""
    request.session[FLASH] = f"Refused: {exc.message}"
    return RedirectResponse("/comparability", status_code=303)


def _number(value: str, field: str) -> float | None:
    if not value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise ValidationFailed(f"{field} must be a number", field=field) from None


@router.post("/proficiency/rounds")
def open_round_form(
    request: Request,
    actor: Annotated[Actor, page(Permission.PROFICIENCY_ROUND)],
    master_file_code: Annotated[str, Form()] = "",
    attribute: Annotated[str, Form()] = "",
    unit: Annotated[str, Form()] = "",
    reference: Annotated[str, Form()] = "",
    sites: Annotated[str, Form()] = "",
    assigned_value: Annotated[str, Form()] = "",
    sd_pt: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:

    def act(application: App, uow: UnitOfWork) -> tuple[None, str]:
        data = {
            "master_file_code": master_file_code,
            "attribute": attribute,
            "unit": unit,
            "reference": reference,
            "site_ids": [s.strip() for s in sites.split(",") if s.strip()],
            "assigned_value": _number(assigned_value, "assigned_value"),
            "sd_pt": _number(sd_pt, "sd_pt"),
        }
        row = application.comparability.open_round(uow, actor, data)
        return None, f"/proficiency/rounds/{row.id}"

    return form_action(
        request, csrf_token, act, flash_key=FLASH, refused=lambda exc: _refused(request, exc)
    )


def _round_page(
    request: Request,
    actor: Actor,
    round_id: str,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    application = _app(request)
    try:
        with application.uow() as uow:
            view = application.comparability.round(uow, actor, round_id)
            codes = {s.id: s.code for s in application.network.list_sites(uow)}
            suspended = [
                s
                for s in application.comparability.suspensions(uow, actor)
                if s["round_id"] == round_id
            ]
    except (NotFound, Forbidden) as exc:
        return _not_found(request, actor, exc, round_id)
    enter_sites = [
        (sid, codes.get(sid, sid))
        for sid in view["site_ids"]
        if can(actor, Permission.PROFICIENCY_RESULT_ENTER, site_id=sid)
    ]
    return render(
        request,
        "proficiency_round.html",
        actor,
        round=view,
        figure=z_figure(view),
        codes=codes,
        suspended=suspended,
        enter_sites=enter_sites,
        may_score=can_network(actor, Permission.PROFICIENCY_ROUND),
        error=error,
        flash=request.session.pop("round_flash", None),
        status_code=status_code,
    )


@router.get("/proficiency/rounds/{round_id}", response_class=HTMLResponse)
def round_page(request: Request, round_id: str, actor: Reader) -> Response:
    return _round_page(request, actor, round_id)


@router.post("/proficiency/rounds/{round_id}/results")
def enter_result_form(
    request: Request,
    round_id: str,
    actor: Annotated[Actor, page(Permission.PROFICIENCY_RESULT_ENTER)],
    site_id: Annotated[str, Form()] = "",
    value: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    application = _app(request)
    try:
        _check_csrf(request, csrf_token)
        with application.uow() as uow:
            # a round the person's site takes no part in is answered as one that does not exist
            application.comparability.round(uow, actor, round_id)
        number = _number(value, "value")
        with application.uow() as uow:
            application.comparability.enter_result(
                uow, actor, round_id, {"site_id": site_id, "value": number}
            )
    except (NotFound, Forbidden) as exc:
        if isinstance(exc, NotFound) or exc.code == "other_site":
            return _not_found(request, actor, exc, round_id)
        return _round_page(
            request, actor, round_id, error=f"Not entered: {exc.message}", status_code=403
        )
    except DomainError as exc:
        return _round_page(
            request,
            actor,
            round_id,
            error=f"Not entered: {exc.message}",
            status_code=exc.http_status,
        )
    request.session["round_flash"] = "Result entered."
    return RedirectResponse(f"/proficiency/rounds/{round_id}", status_code=303)


@router.post("/proficiency/rounds/{round_id}/score")
def score_round_form(
    request: Request,
    round_id: str,
    actor: Annotated[Actor, page(Permission.PROFICIENCY_ROUND)],
    csrf_token: Annotated[str, Form()] = "",
) -> Response:

    def act(application: App, uow: UnitOfWork) -> tuple[str, str]:
        application.comparability.score_round(uow, actor, round_id)
        message = "Scored. Sites with |z| > 3 are suspended from the product."
        return message, f"/proficiency/rounds/{round_id}"

    def refused(exc: DomainError) -> Response:
        if isinstance(exc, NotFound):
            return _not_found(request, actor, exc, round_id)
        return _round_page(
            request, actor, round_id, error=f"Refused: {exc.message}", status_code=200
        )

    return form_action(request, csrf_token, act, flash_key="round_flash", refused=refused)


@router.post("/proficiency/suspensions/{suspension_id}/close")
def close_capa_form(
    request: Request,
    suspension_id: str,
    actor: Annotated[Actor, page(Permission.PROFICIENCY_CAPA_CLOSE)],
    capa_reference: Annotated[str, Form()] = "",
    summary: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    totp: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:

    def act(application: App, uow: UnitOfWork) -> tuple[str, str]:
        application.comparability.close_capa(
            uow,
            actor,
            suspension_id,
            {
                "capa_reference": capa_reference,
                "summary": summary,
                **signature(password, username, totp),
            },
        )
        return "CAPA closed: the suspension is lifted.", "/comparability"

    return form_action(
        request,
        csrf_token,
        act,
        flash_key=FLASH,
        refused=lambda exc: _refused(request, exc),
        signer=actor,  # an e-signature: throttled like the login
    )
