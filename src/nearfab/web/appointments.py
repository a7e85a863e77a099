"""The collection appointment of an order whose product starts from the patient's own material:
the booked collection against its run's slot, the run, the target administration and the hours
from collection to administration, with earlier appointments; what the family requires before
the collection (eligibility, consent: e-signed by the ordering site's clinician) and the
collection itself (the patient and the chain identifier off its label); the forms to record an
agreed collection date and to re-book after a failed run. The same scheduling use cases as
`/api/v1/plan/collections/{order_id}` (+ `/rebook`, `/pre-collection`, `/collected`); the order
page shows the current appointment (`order_collection`, a template function)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import pass_context
from jinja2.runtime import Context
from starlette.concurrency import run_in_threadpool

from nearfab.bootstrap import App
from nearfab.common.errors import DomainError, ValidationFailed
from nearfab.identity import Actor, Permission, authorize, can
from nearfab.uow import UnitOfWork
from nearfab.web.chain import form_time, refusal_words
from nearfab.web.forms import form_text
from nearfab.web.pages import (
    _app,
    _not_found,
    checked_step,
    page,
    render,
    templates,
    when,
)

router = APIRouter(include_in_schema=False)

FLASH, ERROR = "collection_flash", "collection_error"
_MINUTE = "%Y-%m-%d %H:%M UTC"


@pass_context
def order_collection(context: Context, order_id: str) -> dict[str, Any] | None:
    """The order's collection view for the order page, or None when the order needs none or
    the reader may not see it (the scheduling service decides both)."""
    request, actor = context.get("request"), context.get("actor")
    if request is None or actor is None:
        return None
    application = _app(request)
    try:
        with application.uow() as uow:
            view: dict[str, Any] = application.scheduling.collection_view(uow, actor, order_id)
    except DomainError:
        return None
    return view


templates.env.globals["order_collection"] = order_collection


@router.get("/orders/{order_id}/collection", response_class=HTMLResponse)
def collection_page(
    request: Request, order_id: str, actor: Annotated[Actor, page(Permission.ORDER_READ)]
) -> Response:
    application = _app(request)
    flash, error = request.session.pop(FLASH, None), request.session.pop(ERROR, None)
    view: dict[str, Any] | None = None
    before: dict[str, Any] | None = None
    note: str | None = None
    try:
        with application.uow() as uow:
            order = application.orders.get(uow, order_id)
            authorize(actor, Permission.ORDER_READ, site_id=order.site_id)
            status, site = order.status, order.site_id
            try:
                view = application.scheduling.collection_view(uow, actor, order_id)
                before = application.scheduling.pre_collection_view(uow, actor, order_id)
            except DomainError as exc:
                if exc.code != "no_collection":
                    raise
                note, before = exc.message, None
    except DomainError as exc:
        return _not_found(request, actor, exc, order_id)
    return render(
        request,
        "chain/collection.html",
        actor,
        order_id=order_id,
        order_status=status,
        view=view,
        note=note,
        flash=flash,
        error=error,
        before=before,
        may_record=can(actor, Permission.ORDER_PRIORITY, site_id=site),
        may_rebook=can(actor, Permission.ORDER_REPLAN, site_id=site),
        may_pre_record=can(actor, Permission.COLLECTION_PRE_RECORD, site_id=site),
        may_collect=can(actor, Permission.COLLECTION_RECORD, site_id=site),
    )


def _when(name: str, text: str, *, required: bool) -> datetime | None:
    """A time from the form (UTC when it names no zone); None when empty and not required."""
    if not text.strip():
        if required:
            raise ValidationFailed(f"{name}: give the date and time", field=name)
        return None
    return form_time(name, text)


async def _post(
    request: Request,
    actor: Actor,
    order_id: str,
    permission: Permission,
    what: str,
    step: Callable[[App, UnitOfWork, dict[str, str]], str],
) -> Response:
    """The order's site first (another site's order: 404), then the CSRF token and the use
    case; back to the collection page with what happened or the refusal in words."""
    form = await form_text(request)
    application = _app(request)

    def scope() -> None:
        with application.uow() as uow:
            authorize(actor, permission, site_id=application.orders.get(uow, order_id).site_id)

    try:
        await run_in_threadpool(scope)
    except DomainError as exc:
        return _not_found(request, actor, exc, order_id)
    try:
        request.session[FLASH] = await run_in_threadpool(
            checked_step, request, application, form, step, actor
        )
    except DomainError as exc:
        request.session[ERROR] = refusal_words(what, exc)
    return RedirectResponse(f"/orders/{order_id}/collection", status_code=303)


@router.post("/orders/{order_id}/collection/date")
async def record_collection(
    request: Request, order_id: str, actor: Annotated[Actor, page(Permission.ORDER_PRIORITY)]
) -> Response:
    """Record the agreed (or slipped) collection date, with a reason: the run moves with it."""

    def step(app: App, uow: UnitOfWork, form: dict[str, str]) -> str:
        at = _when("collection_at", form.get("collection_at", ""), required=True)
        assert at is not None
        row = app.scheduling.record_collection(
            uow, actor, order_id, at, reason=form.get("reason", "")
        )
        return f"Collection date recorded: {when(row.collection_at, _MINUTE)}"

    return await _post(request, actor, order_id, Permission.ORDER_PRIORITY, "Collection date", step)


@router.post("/orders/{order_id}/collection/rebook")
async def rebook_collection(
    request: Request, order_id: str, actor: Annotated[Actor, page(Permission.ORDER_REPLAN)]
) -> Response:
    """After a failed run: a new slot for a new collection (on the date given, if any)."""

    def step(app: App, uow: UnitOfWork, form: dict[str, str]) -> str:
        at = _when("collection_at", form.get("collection_at", ""), required=False)
        row = app.scheduling.rebook_after_failure(
            uow, actor, order_id, reason=form.get("reason", ""), collection_at=at
        )
        return f"Re-booked: a new collection on {when(row.collection_at, _MINUTE)}"

    return await _post(request, actor, order_id, Permission.ORDER_REPLAN, "Re-booking", step)


@router.post("/orders/{order_id}/collection/pre-collection")
async def record_pre_collection(
    request: Request,
    order_id: str,
    actor: Annotated[Actor, page(Permission.COLLECTION_PRE_RECORD)],
) -> Response:
    """A clinician of the ordering site records, e-signed, one of the records the order's
    family requires before the collection (eligibility, consent) with its document."""

    def step(app: App, uow: UnitOfWork, form: dict[str, str]) -> str:
        row = app.scheduling.record_pre_collection(
            uow,
            actor,
            order_id,
            kind=form.get("kind", ""),
            reference=form.get("reference", ""),
            statement=form.get("statement", ""),
            password=form.get("password", ""),
            username=form.get("username") or None,
            totp=form.get("totp") or None,
            meaning=form.get("meaning") or None,
        )
        return f"{row.kind.capitalize()}: recorded (signed)"

    return await _post(
        request, actor, order_id, Permission.COLLECTION_PRE_RECORD, "Before the collection", step
    )


@router.post("/orders/{order_id}/collection/collected")
async def record_collected(
    request: Request, order_id: str, actor: Annotated[Actor, page(Permission.COLLECTION_RECORD)]
) -> Response:
    """The collection happened: the patient's identifier as presented and the family's chain
    identifier scanned off the collection's label (the time: now, unless given)."""

    def step(app: App, uow: UnitOfWork, form: dict[str, str]) -> str:
        at = _when("collected_at", form.get("collected_at", ""), required=False)
        row = app.scheduling.record_collected(
            uow,
            actor,
            order_id,
            identifier=form.get("identifier") or None,
            patient=form.get("patient") or None,
            collected_at=at,
            reason=form.get("reason", "").strip() or "collected",
        )
        return f"Collection recorded at {when(row.collected_at, _MINUTE)}"

    return await _post(request, actor, order_id, Permission.COLLECTION_RECORD, "Collection", step)
