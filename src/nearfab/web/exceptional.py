"""The exceptional release of an out-of-specification batch, on a page of its own: the failed
release checks, the treating physician's signed request (its form posts to
`web.records.request_exceptional_release`) and the QP's signed certification, the same
use cases as `/api/v1/batches/{id}/exceptional-release` (+ `/certify`). And the notices a
result failed after release sends to the treating prescriber: read, and acknowledged by a
clinician of the ordering site (`/api/v1/notices`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nearfab.api.deps import client_of, login_throttle
from nearfab.api.security import throttled
from nearfab.common.errors import DomainError
from nearfab.identity import Actor, Permission, can
from nearfab.quality import signatory_title
from nearfab.readmodels import order_view
from nearfab.web.chain import refusal_words
from nearfab.web.forms import signature
from nearfab.web.pages import (
    _app,
    _check_csrf,
    _not_found,
    decided_here,
    hidden,
    page,
    render,
    session_has_signed,
)

router = APIRouter(include_in_schema=False)

FLASH, ERROR = "exceptional_flash", "exceptional_error"


@router.get("/batches/{batch_id}/exceptional-release", response_class=HTMLResponse)
def exceptional_page(
    request: Request, batch_id: str, actor: Annotated[Actor, page(Permission.ORDER_READ)]
) -> Response:
    """The batch's release review as the order's readers see it (a clinician reads orders, not
    batch records), with the request form for the treating physician and the certification
    form for the QP."""
    application = _app(request)
    flash, error = request.session.pop(FLASH, None), request.session.pop(ERROR, None)
    try:
        with application.uow() as uow:
            batch = application.production.get(uow, batch_id)
            order = order_view(application, uow, actor, batch.order_id)
            order_site = application.orders.get(uow, batch.order_id).site_id
            number, batch_site = batch.batch_number, batch.site_id
            # the certification form only for the role the product's family names to sign
            signatory = application.quality.signatory_for(uow, batch)
            signs = application.quality.may_sign(actor, signatory)
    except DomainError as exc:
        return _not_found(request, actor, exc, batch_id)
    review: dict[str, Any] | None = next(
        (r for r in order["reviews"] if r.get("batch_id") == batch_id), None
    )
    return render(
        request,
        "chain/exceptional.html",
        actor,
        batch_id=batch_id,
        batch_number=number,
        order=order,
        review=review,
        flash=flash,
        error=error,
        may_request=can(actor, Permission.RELEASE_EXCEPTIONAL_REQUEST, site_id=order_site),
        signatory_title=signatory_title(signatory),
        may_certify=signs
        and can(actor, Permission.RELEASE_DECIDE, one_of={batch_site, order_site})
        and decided_here(application),
        session_signed=session_has_signed(application, actor),
    )


@router.post("/batches/{batch_id}/exceptional-release/certify")
def certify(
    request: Request,
    batch_id: str,
    actor: Annotated[Actor, page(Permission.RELEASE_DECIDE, gate=False)],
    password: Annotated[str, Form()] = "",
    meaning: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    totp: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """The QP's signed exceptional release (after the physician's signed request). As the
    release queue's decision, the role and the site are the service's to refuse: every
    refused attempt at a QP decision is itself a record."""
    application = _app(request)
    try:
        _check_csrf(request, csrf_token)
        throttle = login_throttle(request)
        with throttled(throttle, actor.username, client_of(request)), application.uow() as uow:
            review = application.quality.decide(
                uow,
                actor,
                batch_id,
                decision="release",
                exceptional=True,
                meaning=meaning or "QP exceptional release",
                reason=reason or None,
                **signature(password, username, totp),
            )
    except DomainError as exc:
        shown = hidden(exc, batch_id)
        # the wrong role (a QP for a device's batch): not allowed, as the release queue says
        not_allowed = exc.code in ("forbidden", "wrong_signatory")
        if shown is not exc or not_allowed:
            return render(
                request,
                "not_found.html",
                actor,
                title="Not allowed" if not_allowed else None,
                error=shown.message,
                status_code=shown.http_status,
            )
        request.session[ERROR] = refusal_words("Exceptional release", exc)
    else:
        request.session[FLASH] = (
            f"Exceptional release: batch {review.status} (signature {review.signature_id})"
        )
    return RedirectResponse(f"/batches/{batch_id}/exceptional-release", status_code=303)


# --- notices to the treating prescriber -------------------------------------------------------
NOTICE_FLASH, NOTICE_ERROR = "notice_flash", "notice_error"


@router.get("/notices", response_class=HTMLResponse)
def notices_page(
    request: Request, actor: Annotated[Actor, page(Permission.NOTICE_READ)]
) -> Response:
    """The notices of the sites the person sees (a clinician: their own site's), newest
    first; a clinician of the ordering site acknowledges each."""
    application = _app(request)
    with application.uow() as uow:
        notices = application.quality.followups.notices(uow, actor)
        rows = [
            {
                "notice": n,
                "may_acknowledge": n.acknowledged_at is None
                and can(actor, Permission.NOTICE_ACKNOWLEDGE, site_id=n.site_id),
            }
            for n in notices
        ]
    return render(
        request,
        "chain/notices.html",
        actor,
        rows=rows,
        flash=request.session.pop(NOTICE_FLASH, None),
        error=request.session.pop(NOTICE_ERROR, None),
    )


@router.post("/notices/{notice_id}/acknowledge")
def acknowledge_notice(
    request: Request,
    notice_id: str,
    actor: Annotated[Actor, page(Permission.NOTICE_ACKNOWLEDGE)],
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    application = _app(request)
    try:
        _check_csrf(request, csrf_token)
        with application.uow() as uow:
            application.quality.followups.acknowledge(uow, actor, notice_id)
    except DomainError as exc:
        # another site's notice is answered as an unknown one
        request.session[NOTICE_ERROR] = refusal_words("Acknowledgement", hidden(exc, notice_id))
    else:
        request.session[NOTICE_FLASH] = f"Notice {notice_id}: acknowledged"
    return RedirectResponse("/notices", status_code=303)
