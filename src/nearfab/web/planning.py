"""The plan's Gantt page (per site and machine, late orders in red) and plotly.js, served
locally from the installed plotly package (nothing loads from a CDN)."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from importlib import resources
from typing import Annotated, Any

import plotly.graph_objects as go
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from nearfab.identity import Actor, Permission
from nearfab.web.pages import _app, page, render

router = APIRouter(include_in_schema=False)


@cache
def _plotly_js() -> bytes:
    return resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()


@router.get("/static/vendor/plotly.min.js")
def plotly_js() -> Response:
    return Response(
        _plotly_js(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=86400"},
    )


def gantt(assignments: list[dict[str, Any]]) -> str:
    """A Plotly timeline as JSON: one row per site and machine; late orders red, running grey."""
    fig = go.Figure()
    groups: dict[str, list[dict[str, Any]]] = {"on time": [], "late": [], "running": []}
    for a in assignments:
        kind = "running" if a["frozen"] else ("late" if a["late_min"] else "on time")
        groups[kind].append(a)
    colours = {"on time": "#2b8a3e", "late": "#c92a2a", "running": "#868e96"}
    for kind, rows in groups.items():
        if not rows:
            continue
        starts = [datetime.fromisoformat(r["start"]) for r in rows]
        ends = [datetime.fromisoformat(r["end"]) for r in rows]
        fig.add_trace(
            go.Bar(
                name=kind,
                orientation="h",
                base=[s.isoformat() for s in starts],
                x=[(e - s).total_seconds() * 1000 for s, e in zip(starts, ends, strict=True)],
                y=[f"{r['site']} · {r['machine']}" for r in rows],
                marker_color=colours[kind],
                customdata=[
                    [r["order_id"], r.get("medication") or "", r["late_min"], r.get("due") or ""]
                    for r in rows
                ],
                hovertemplate="%{customdata[0]} %{customdata[1]}<br>due %{customdata[3]}"
                "<br>late %{customdata[2]} min<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="overlay",
        xaxis={"type": "date", "title": "UTC"},
        yaxis={"autorange": "reversed", "categoryorder": "category ascending"},
        height=160 + 40 * len({a["machine_id"] for a in assignments}),
        margin={"l": 220, "r": 20, "t": 20, "b": 40},
    )
    return str(fig.to_json())


@router.get("/plan", response_class=HTMLResponse)
def plan_page(request: Request, actor: Annotated[Actor, page(Permission.PLAN_READ)]) -> Response:
    application = _app(request)
    with application.uow() as uow:
        # site staff see their own site's machines and jobs (the scheduling service's views)
        scope = application.scheduling.plan_scope(uow, actor)
        version = application.scheduling.current_plan(uow)
        history = application.scheduling.plan_history(uow, 10)
        data = scope.plan(version) if version is not None else None
        versions = [
            (v.number, v.created_at, v.trigger, v.reason, len(scope.changes(v.changes)))
            for v in history
        ]
        machines = scope.machine_names()
    figure = gantt(data["assignments"]) if data else None
    return render(
        request,
        "plan.html",
        actor,
        error=None,
        plan=data,
        figure=figure,
        versions=versions,
        machines=machines,
    )
