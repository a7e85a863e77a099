"""The chain-of-identity pages of a unit: its hand-overs (scanned on both sides), storage log,
holds and in-use period, with the forms to record a hand-over, a storage reading, the unit's
preparation for use and a QP's judgement of a hold. Each form runs the custody service the API
runs (`POST /api/v1/hand-overs`, `/packs/{unit_id}/storage-log`, `/packs/{unit_id}/prepare`,
`/holds/{hold_id}/judge`); this module only reads the form and shows the answer.

A unit of a site the person does not see is answered as an unknown one (404). A refusal is
shown on the unit's page in words, naming the field at fault; someone who records a step
without reading the chain (an operator: `pack.move` without `trace.read`) gets a page saying
what was recorded or refused, and hands units over by scan alone at the hand-over station
(`/hand-overs`, as `POST /api/v1/hand-overs`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from nearfab.bootstrap import App
from nearfab.common.errors import DomainError, ValidationFailed
from nearfab.custody import HandOver
from nearfab.custody.kit import declares_chain_identifier, hand_over_steps
from nearfab.custody.services.scope import authorize_pack
from nearfab.identity import Actor, Permission, User, can
from nearfab.uow import UnitOfWork
from nearfab.web.forms import form_text
from nearfab.web.pages import (
    _app,
    _check_csrf,
    _not_found,
    checked_step,
    hidden,
    page,
    render,
    templates,
    when,
)

router = APIRouter(include_in_schema=False)

FLASH, ERROR = "chain_flash", "chain_error"


def may_open(actor: Actor | None, permission: str) -> bool:
    """Whether the matrix gives the person's role `permission` (a link or a menu entry is
    shown only to those who may open it; the site is checked when the record is opened)."""
    return actor is not None and can(actor, Permission(permission))


templates.env.globals["may_open"] = may_open


def refusal_words(what: str, exc: DomainError) -> str:
    """A refusal for people: what was refused, the field at fault and why (with the code)."""
    field = f" — {exc.field}" if exc.field else ""
    code = f" ({exc.code})" if exc.code else ""
    return f"{what}: refused{code}{field}: {exc.message}"


def _names(uow: UnitOfWork, ids: Iterable[str | None]) -> dict[str, str]:
    wanted = {i for i in ids if i}
    if not wanted:
        return {}
    rows = uow.session.execute(select(User.id, User.full_name).where(User.id.in_(wanted)))
    return {uid: name for uid, name in rows}


def chain_view(application: App, uow: UnitOfWork, actor: Actor, unit_id: str) -> dict[str, Any]:
    """What the chain page shows: the custody service's `unit_chain` (it checks the reader's
    sites), the steps of the unit's family and who did what, by name."""
    found = application.custody.unit_chain(uow, actor, unit_id)
    unit = found.unit
    batch = application.production.get(uow, unit.batch_id)
    master_file = application.master_files.get(uow, batch.master_file_id)
    kit = application.families.get(master_file.product_family).labels
    steps = hand_over_steps(kit)
    people: list[str | None] = [h.handed_by for h in found.hand_overs]
    people += [h.held_by for h in found.holds] + [h.decided_by for h in found.holds]
    people += [found.in_use.prepared_by] if found.in_use is not None else []
    names = _names(uow, people)
    accepted = [h for h in found.hand_overs if h.outcome == "accepted"]
    at = accepted[-1].to_step if accepted else (steps[0] if steps else "")
    after = steps[steps.index(at) + 1 :] if at in steps else ()
    following = after[0] if after else ""
    open_hold = next((h for h in found.holds if h.decision is None), None)
    sites = {batch.site_id, application.orders.get(uow, unit.order_id).site_id}
    return {
        "unit": unit,
        "batch": batch,
        "hand_overs": found.hand_overs,
        "holds": found.holds,
        "storage_log": found.storage_log,
        "in_use": found.in_use,
        "steps": steps,
        "at_step": at,
        "next_step": following,
        "open_hold": open_hold,
        # the family checks its chain identifier on both sides, and the patient at the bedside
        "identifier": declares_chain_identifier(kit),
        "bedside": bool(steps) and following == steps[-1],
        "names": names,
        "now": uow.clock.now(),
        "may": {
            name: can(actor, permission, one_of=sites)
            for name, permission in (
                ("hand_over", Permission.PACKS_MOVE),
                ("prepare", Permission.PACKS_MOVE),
                ("readings", Permission.READINGS_RECORD),
                ("judge", Permission.HOLD_DECIDE),
                ("dispense", Permission.DISPENSE),
            )
        },
    }


@router.get("/packs/{unit_id}/chain", response_class=HTMLResponse)
def chain_page(
    request: Request, unit_id: str, actor: Annotated[Actor, page(Permission.TRACE_READ)]
) -> Response:
    application = _app(request)
    flash, error = request.session.pop(FLASH, None), request.session.pop(ERROR, None)
    try:
        with application.uow() as uow:
            view = chain_view(application, uow, actor, unit_id)
    except DomainError as exc:
        return _not_found(request, actor, exc, unit_id)
    return render(request, "chain/unit.html", actor, chain=view, flash=flash, error=error)


def form_time(name: str, text: str) -> datetime:
    """A time from a form (`datetime-local` gives no zone: UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(
            f"{name}: {text!r} is not a date and time (YYYY-MM-DDTHH:MM)", field=name
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def form_number(name: str, text: str) -> float:
    """A form field's finite number, or a refusal naming the field."""
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValidationFailed(f"{name}: {text!r} is not a number", field=name)
    return value


async def _record(
    request: Request,
    actor: Actor,
    unit_id: str,
    permission: Permission,
    what: str,
    step: Callable[[App, UnitOfWork, dict[str, str]], tuple[str, str]],
) -> Response:
    """Read the form, check the unit's sites (another site's unit: 404, before the form is
    read further) and the CSRF token, run the custody use case; back to the unit's page with
    what happened, or, for someone who may not read the chain, a page saying it."""
    form = await form_text(request)
    application = _app(request)

    def scope() -> None:
        with application.uow() as uow:
            authorize_pack(uow, actor, unit_id, permission)

    try:
        await run_in_threadpool(scope)
    except DomainError as exc:
        return _not_found(request, actor, exc, unit_id)
    try:
        target, message = await run_in_threadpool(
            checked_step, request, application, form, step, actor
        )
        status, ok = 200, True
    except DomainError as exc:
        # a scan naming another site's unit is answered as an unknown unit
        shown = hidden(exc) if exc.code == "other_site" else exc
        target, message = unit_id, refusal_words(what, shown)
        status, ok = shown.http_status, False
    reader = await run_in_threadpool(_may_read, application, actor, target)
    if not reader:
        return render(
            request,
            "chain/recorded.html",
            actor,
            message=message,
            ok=ok,
            status_code=status,
        )
    request.session[FLASH if ok else ERROR] = message
    return RedirectResponse(f"/packs/{target}/chain", status_code=303)


def _may_read(application: App, actor: Actor, unit_id: str) -> bool:
    try:
        with application.uow() as uow:
            authorize_pack(uow, actor, unit_id, Permission.TRACE_READ)
    except DomainError:
        return False
    return True


def _hand_over_form(app: App, uow: UnitOfWork, actor: Actor, form: dict[str, str]) -> HandOver:
    """The hand-over a form asks for (the chain page's and the hand-over station's)."""
    return app.custody.hand_over(
        uow,
        actor,
        scan=form.get("scan", ""),
        from_step=form.get("from_step", ""),
        to_step=form.get("to_step", ""),
        received_scan=form.get("received_scan", ""),
        identifier=form.get("identifier") or None,
        received_identifier=form.get("received_identifier") or None,
        patient=form.get("patient") or None,
    )


@router.post("/packs/{unit_id}/hand-overs")
async def hand_over(
    request: Request, unit_id: str, actor: Annotated[Actor, page(Permission.PACKS_MOVE)]
) -> Response:
    """A hand-over from one step of the chain to the next: the giving side's scan and the
    receiving side's, the chain identifier each side read off the unit (a family that has
    one) and the patient at the bedside; a mismatch is refused and holds the unit until a QP
    judges it."""

    def step(app: App, uow: UnitOfWork, form: dict[str, str]) -> tuple[str, str]:
        row = _hand_over_form(app, uow, actor, form)
        checked = "; patient checked" if row.patient_checked else ""
        return row.unit_id, f"Hand-over {row.from_step} → {row.to_step}: {row.outcome}{checked}"

    return await _record(request, actor, unit_id, Permission.PACKS_MOVE, "Hand-over", step)


@router.post("/packs/{unit_id}/storage-log")
async def storage_reading(
    request: Request, unit_id: str, actor: Annotated[Actor, page(Permission.READINGS_RECORD)]
) -> Response:
    """One storage log reading of the unit, judged by its family (an excursion holds it)."""

    def step(app: App, uow: UnitOfWork, form: dict[str, str]) -> tuple[str, str]:
        if not form.get("read_at", "").strip():
            raise ValidationFailed("read_at: give the time of the reading", field="read_at")
        if not form.get("value", "").strip():
            raise ValidationFailed("value: give the reading", field="value")
        read_at = form_time("read_at", form["read_at"])
        value = form_number("value", form["value"])
        result = app.custody.log_storage(
            uow,
            actor,
            unit_ids=[unit_id],
            readings=[(read_at, value)],
            unit=form.get("unit", "").strip() or "Cel",
        )
        (row,) = result.readings
        if row.excursion:
            return unit_id, f"Storage reading {row.value:g} {row.unit}: excursion, unit held"
        return unit_id, f"Storage reading {row.value:g} {row.unit}: within the storage rule"

    return await _record(
        request, actor, unit_id, Permission.READINGS_RECORD, "Storage reading", step
    )


@router.post("/packs/{unit_id}/prepare")
async def prepare(
    request: Request, unit_id: str, actor: Annotated[Actor, page(Permission.PACKS_MOVE)]
) -> Response:
    """The unit (scanned) is prepared for use: its in-use period starts now."""

    def step(app: App, uow: UnitOfWork, form: dict[str, str]) -> tuple[str, str]:
        period = app.custody.prepare(uow, actor, scan=form.get("scan", ""), unit_id=unit_id)
        until = f"; use by {when(period.use_by, '%Y-%m-%d %H:%M UTC')}" if period.use_by else ""
        return unit_id, f"Prepared for use{until}"

    return await _record(request, actor, unit_id, Permission.PACKS_MOVE, "Preparation", step)


@router.post("/packs/{unit_id}/holds/{hold_id}/judge")
async def judge_hold(
    request: Request,
    unit_id: str,
    hold_id: str,
    actor: Annotated[Actor, page(Permission.HOLD_DECIDE)],
) -> Response:
    """A QP's judgement of the unit's hold: resume the chain, or reject the unit for good."""

    def step(app: App, uow: UnitOfWork, form: dict[str, str]) -> tuple[str, str]:
        row = app.custody.judge_hold(
            uow,
            actor,
            hold_id=hold_id,
            decision=form.get("decision", ""),
            reason=form.get("reason", ""),
        )
        return row.unit_id, f"Hold {row.id}: judged ({row.decision})"

    return await _record(request, actor, unit_id, Permission.HOLD_DECIDE, "Judgement", step)


# --- the hand-over station: by scan, for those who move units without reading the chain ------
def _station(request: Request, actor: Actor, *, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    application = _app(request)
    steps: list[str] = []
    for family in application.families:  # every family's steps, offered as suggestions
        steps += [s for s in hand_over_steps(family.labels) if s not in steps]
    ctx.setdefault("flash", None)
    ctx.setdefault("error", None)
    ctx.setdefault("unit_id", None)
    ctx.setdefault("form", {})
    return render(request, "chain/station.html", actor, steps=steps, status_code=status_code, **ctx)


@router.get("/hand-overs", response_class=HTMLResponse)
def station_page(
    request: Request, actor: Annotated[Actor, page(Permission.PACKS_MOVE)]
) -> Response:
    """A hand-over by scan alone (`POST /api/v1/hand-overs`): for the micro-factory's or the
    store's staff, who hand units on without reading their chain."""
    return _station(request, actor)


@router.post("/hand-overs", response_class=HTMLResponse)
async def station_hand_over(
    request: Request, actor: Annotated[Actor, page(Permission.PACKS_MOVE)]
) -> Response:
    form = await form_text(request)
    application = _app(request)

    def run() -> HandOver:
        _check_csrf(request, form.get("csrf_token", ""))
        with application.uow() as uow:
            return _hand_over_form(application, uow, actor, form)

    kept = {k: form.get(k, "") for k in ("from_step", "to_step")}
    try:
        row = await run_in_threadpool(run)
    except DomainError as exc:
        # a scan naming another site's unit is answered as an unknown unit
        shown = hidden(exc) if exc.code == "other_site" else exc
        return _station(
            request,
            actor,
            error=refusal_words("Hand-over", shown),
            form=kept,
            status_code=shown.http_status,
        )
    reader = await run_in_threadpool(_may_read, application, actor, row.unit_id)
    checked = "; patient checked" if row.patient_checked else ""
    return _station(
        request,
        actor,
        flash=f"Hand-over {row.from_step} → {row.to_step}: {row.outcome}{checked}",
        unit_id=row.unit_id if reader else None,
    )
