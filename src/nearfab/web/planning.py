"""The plan's Gantt page (every machine the reader sees, labelled jobs, late orders in red, a
line at the current time: planboard.py) and the planner's actions on it, each with a reason and
through the services the API and CLI use: replan the network (`SchedulingService.replan`),
take an order off its machine (`SchedulingService.unschedule`), and move an order forward
(`SchedulingService.move_forward`: urgent, then replanned with the urgent-order trigger, in one
transaction). plotly.js is served locally from the installed plotly package (never a CDN)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nearfab.common.errors import DomainError
from nearfab.identity import Actor, Permission
from nearfab.scheduling import PlanTrigger
from nearfab.web import planboard
from nearfab.web.localtime import local, zone_of
from nearfab.web.pages import _app, _check_csrf, hidden, page, render
from nearfab.web.refusals import TITLES

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


def _plan_page(
    request: Request,
    actor: Actor,
    *,
    error: str | None = None,
    done: str | None = None,
    status_code: int = 200,
) -> Response:
    application = _app(request)
    with application.uow() as uow:
        # site staff see their own site's machines and jobs (the scheduling service's views)
        scope = application.scheduling.plan_scope(uow, actor)
        version = application.scheduling.current_plan(uow)
        history = application.scheduling.plan_history(uow, 10)
        data = scope.plan(version) if version is not None else None
        zone = zone_of(application.settings)
        versions = [
            (
                v.number,
                local(v.created_at, zone),
                v.trigger,
                v.reason,
                len(scope.changes(v.changes)),
            )
            for v in history
        ]
        machines = scope.machine_names()
        planning = application.scheduling.planning
        stale = version is not None and planning is not None and not planning.is_fresh(uow, version)
        shown = planboard.board(application, uow, actor, data or {"assignments": []}, scope.sites)
    figure = planboard.gantt(shown)
    return render(
        request,
        "plan.html",
        actor,
        error=error,
        done=done,
        plan=data,
        board=shown,
        stale=stale,
        figure=figure,
        versions=versions,
        machines=machines,
        status_code=status_code,
    )


@router.get("/plan", response_class=HTMLResponse)
def plan_page(request: Request, actor: Annotated[Actor, page(Permission.PLAN_READ)]) -> Response:
    return _plan_page(request, actor)


def _act(request: Request, actor: Actor, token: str, step: Any, ref: str | None) -> Response:
    """CSRF, then the action in its own unit of work; a refusal is a styled page: another
    site's order as one that does not exist (404), a role or rule refusal with its words."""
    application = _app(request)
    try:
        _check_csrf(request, token)
        with application.uow() as uow:
            step(application, uow)
    except DomainError as exc:
        if exc.http_status in (403, 404) or exc.code == "other_site":
            shown = hidden(exc, ref)  # another site's order is answered as an unknown one
            return render(
                request,
                "not_found.html",
                actor,
                title=TITLES.get(shown.http_status, "Refused"),
                error=shown.message,
                status_code=shown.http_status,
            )
        return _plan_page(request, actor, error=exc.message, status_code=exc.http_status)
    return RedirectResponse("/plan#gantt", status_code=303)


@router.post("/plan/replan")
def replan(
    request: Request,
    actor: Annotated[Actor, page(Permission.PLAN_RUN)],
    reason: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Plan the network again now (a new plan version), for the reason given."""
    return _act(
        request,
        actor,
        csrf_token,
        lambda app, uow: app.scheduling.replan(uow, actor, reason, PlanTrigger.MANUAL),
        None,
    )


@router.post("/plan/orders/{order_id}/unschedule")
def unschedule(
    request: Request,
    order_id: str,
    actor: Annotated[Actor, page(Permission.ORDER_SCHEDULE)],
    reason: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Take a scheduled order off its machine before it starts (as `nearfab order
    unschedule` and POST /api/v1/orders/{id}/unschedule)."""
    return _act(
        request,
        actor,
        csrf_token,
        lambda app, uow: app.scheduling.unschedule(uow, actor, order_id, reason=reason),
        order_id,
    )


@router.post("/plan/orders/{order_id}/urgent")
def move_forward(
    request: Request,
    order_id: str,
    actor: Annotated[Actor, page(Permission.PLAN_RUN)],
    reason: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Move an order forward: mark it urgent and replan the network (urgent-order trigger)."""
    return _act(
        request,
        actor,
        csrf_token,
        lambda app, uow: app.scheduling.move_forward(uow, actor, order_id, reason=reason),
        order_id,
    )
