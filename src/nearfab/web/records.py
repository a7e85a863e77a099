"""Batch-page forms of the batch-record controls: sign a step, verify a critical entry, open a
deviation, mark the audit trail reviewed. Each posts, runs one use case, and goes back to the
batch page with what happened (the page is `pages.batch_page`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from nearfab.bootstrap import App
from nearfab.common.errors import DomainError
from nearfab.identity import Actor, Permission
from nearfab.quality.exceptional import REQUESTED_BY
from nearfab.quality.labresults import ENTERED_BY, typed_value
from nearfab.uow import UnitOfWork
from nearfab.web import worklist
from nearfab.web.forms import form_text, signature
from nearfab.web.pages import (
    _app,
    _check_csrf,
    _need_login,
    page,
    signer_of,
    signing,
    web_actor,
)

router = APIRouter(include_in_schema=False)

ENTRY_PREFIX = "entry."


async def _post(
    request: Request,
    batch_id: str,
    done: str,
    step: Callable[[App, UnitOfWork, Actor, dict[str, Any]], object],
) -> Response:
    """Read the form, check its CSRF token, run the use case in a worker thread, and go back to
    the batch page with a message (or the refusal)."""
    form = await form_text(request)
    actor = await run_in_threadpool(web_actor, request)
    if actor is None:
        return _need_login(request)
    application = _app(request)

    def run() -> None:
        _check_csrf(request, form.get("csrf_token", ""))
        # an e-signature (a password in the form) is throttled like the login
        with signing(request, signer_of(actor, form)), application.uow() as uow:
            step(application, uow, actor, form)

    # a form of the worklist page: back there, a refusal shown in it (web/worklist.py)
    back = form.get("return_to") == worklist.RETURN_TO
    try:
        await run_in_threadpool(run)
    except DomainError as exc:
        what = done.split(":")[0]
        if back:
            return await run_in_threadpool(
                worklist.refused_here, request, actor, what, exc, batch_id
            )
        request.session["batch_error"] = f"{what}: refused ({exc.code}): {exc.message}"
    else:
        if back:
            request.session[worklist.FLASH] = done
            return RedirectResponse("/worklist", status_code=303)
        request.session["batch_flash"] = done
    return RedirectResponse(f"/batches/{batch_id}#record-steps", status_code=303)


@router.post(
    "/batches/{batch_id}/steps/{code}/sign", dependencies=[page(Permission.BATCH_STEP_SIGN)]
)
async def sign_step(request: Request, batch_id: str, code: str) -> Response:
    def step(app: App, uow: UnitOfWork, actor: Actor, form: dict[str, Any]) -> object:
        entry = {
            k.removeprefix(ENTRY_PREFIX): v for k, v in form.items() if k.startswith(ENTRY_PREFIX)
        }
        return app.quality.records.sign_step(
            uow,
            actor,
            batch_id,
            code,
            entry=entry,
            password=form.get("password", ""),
            meaning=form.get("meaning", "performed by"),
            username=form.get("username") or None,
            totp=form.get("totp") or None,
        )

    return await _post(request, batch_id, f"Step {code}: signed (performed by)", step)


@router.post(
    "/batches/{batch_id}/steps/{code}/verify", dependencies=[page(Permission.BATCH_ENTRY_VERIFY)]
)
async def verify_step(request: Request, batch_id: str, code: str) -> Response:
    def step(app: App, uow: UnitOfWork, actor: Actor, form: dict[str, Any]) -> object:
        return app.quality.records.verify_step(
            uow,
            actor,
            batch_id,
            code,
            password=form.get("password", ""),
            meaning=form.get("meaning", "verified by"),
            username=form.get("username") or None,
            totp=form.get("totp") or None,
        )

    return await _post(request, batch_id, f"Step {code}: entry verified (verified by)", step)


@router.post("/batches/{batch_id}/deviations", dependencies=[page(Permission.DEVIATION_OPEN)])
async def open_deviation(request: Request, batch_id: str) -> Response:
    def step(app: App, uow: UnitOfWork, actor: Actor, form: dict[str, Any]) -> object:
        return app.quality.records.open_deviation(
            uow,
            actor,
            batch_id,
            description=form.get("description", ""),
            step=form.get("step") or None,
        )

    return await _post(request, batch_id, "Deviation: opened", step)


@router.post(
    "/batches/{batch_id}/audit-trail-review", dependencies=[page(Permission.AUDIT_TRAIL_REVIEW)]
)
async def review_audit_trail(request: Request, batch_id: str) -> Response:
    def step(app: App, uow: UnitOfWork, actor: Actor, form: dict[str, Any]) -> object:
        return app.quality.records.review_audit_trail(
            uow,
            actor,
            batch_id,
            password=form.get("password", ""),
            meaning=form.get("meaning", "audit trail reviewed"),
            username=form.get("username") or None,
            totp=form.get("totp") or None,
        )

    return await _post(request, batch_id, "Audit trail: marked reviewed", step)


@router.post(
    "/batches/{batch_id}/followups/{test}/result",
    dependencies=[page(Permission.RELEASE_FOLLOWUP_ENTER)],
)
async def followup_result(request: Request, batch_id: str, test: str) -> Response:
    """QA or a QP enters (e-signed) a result that was pending at release; a second entry is a
    correction and needs its reason."""

    def step(app: App, uow: UnitOfWork, actor: Actor, form: dict[str, Any]) -> object:
        return app.quality.followups.enter_result(
            uow,
            actor,
            batch_id,
            test,
            outcome=form.get("outcome", ""),
            detail=form.get("detail", ""),
            reason=form.get("reason") or None,
            password=form.get("password", ""),
            meaning=form.get("meaning", "result entered by"),
            username=form.get("username") or None,
            totp=form.get("totp") or None,
        )

    return await _post(request, batch_id, f"Result of {test}: entered", step)


RESULT_PREFIX = "result."


@router.post("/batches/{batch_id}/lab-results", dependencies=[page(Permission.LAB_RESULT_ENTER)])
async def lab_results(request: Request, batch_id: str) -> Response:
    """QA or a QP enters (e-signed, as the analyst) the laboratory's results: one field per
    key the product takes (`result.<key>`), those left empty not entered; a result already
    entered needs the reason for its correction."""

    def step(app: App, uow: UnitOfWork, actor: Actor, form: dict[str, Any]) -> object:
        results = {
            k.removeprefix(RESULT_PREFIX): typed_value(v)
            for k, v in form.items()
            if k.startswith(RESULT_PREFIX) and v.strip()
        }
        return app.quality.lab_results.enter(
            uow,
            actor,
            batch_id,
            results=results,
            method=form.get("method", ""),
            reason=form.get("reason") or None,
            password=form.get("password", ""),
            meaning=form.get("meaning") or ENTERED_BY,
            username=form.get("username") or None,
            totp=form.get("totp") or None,
        )

    return await _post(request, batch_id, "Laboratory results: entered (signed)", step)


@router.post(
    "/batches/{batch_id}/exceptional-release",
    dependencies=[page(Permission.RELEASE_EXCEPTIONAL_REQUEST)],
)
async def request_exceptional_release(request: Request, batch_id: str) -> Response:
    """The treating physician asks (e-signed) for the exceptional release of an
    out-of-specification batch; back to the order page with what happened."""
    form = await form_text(request)
    actor = await run_in_threadpool(web_actor, request)
    if actor is None:
        return _need_login(request)
    application = _app(request)

    def run() -> str:
        with application.uow() as uow:
            order_id = application.production.get(uow, batch_id).order_id
        _check_csrf(request, form.get("csrf_token", ""))
        with signing(request, actor), application.uow() as uow:  # an e-signature: throttled
            application.quality.exceptional.request(
                uow,
                actor,
                batch_id,
                circumstances=form.get("circumstances", ""),
                meaning=form.get("meaning") or REQUESTED_BY,
                **signature(
                    form.get("password", ""), form.get("username", ""), form.get("totp", "")
                ),
            )
        return order_id

    try:
        order_id = await run_in_threadpool(run)
    except DomainError as exc:
        request.session["order_error"] = f"Exceptional release: refused ({exc.code}): {exc.message}"
        with application.uow() as uow:
            try:
                order_id = application.production.get(uow, batch_id).order_id
            except DomainError:
                order_id = "unknown"
    else:
        request.session["order_flash"] = "Exceptional release: requested (signed)"
    return RedirectResponse(f"/orders/{order_id}", status_code=303)
