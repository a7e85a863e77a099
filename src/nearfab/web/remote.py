"""The control site's queue of the site nodes' batches (`/release/remote`, docs/replication.md,
"Release across the network"): each batch on its newest release dossier, what the QP signs
(the batch record, its signed steps, the proposal, the deviations) and the blockers the site
names, with the QP's signing form on the dossier shown. A site node and a network of one
database have no such queue: the page says so and the menu leaves it out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nearfab.common.errors import DomainError
from nearfab.identity import Actor, Permission, can
from nearfab.quality import signatory_title
from nearfab.web.forms import signature
from nearfab.web.pages import _app, _check_csrf, hidden, page, render, session_has_signed, signing

router = APIRouter(include_in_schema=False)


def _queue(request: Request, actor: Actor) -> list[dict[str, Any]]:
    application = _app(request)
    queue = application.remote_releases
    if queue is None:
        return []
    with application.uow() as uow:
        rows = []
        for d in queue.read(uow, actor, waiting_only=False):
            row = d.detail()
            signatory = str(d.dossier.get("signatory") or "qp")
            row["signatory_title"] = signatory_title(signatory)
            row["may_sign"] = (
                d.decision is None
                and signatory in actor.roles
                and can(actor, Permission.RELEASE_DECIDE, site_id=row["site_id"])
            )
            rows.append(row)
    return rows


def _render(request: Request, actor: Actor, *, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    application = _app(request)
    rows = _queue(request, actor)
    return render(
        request,
        "release_remote.html",
        actor,
        status_code=status_code,
        control=application.remote_releases is not None,
        waiting=[r for r in rows if r["decision"] is None],
        decided=[r for r in rows if r["decision"] is not None],
        session_signed=session_has_signed(application, actor),
        **ctx,
    )


@router.get("/release/remote", response_class=HTMLResponse)
def remote_page(
    request: Request, actor: Annotated[Actor, page(Permission.RELEASE_QUEUE_READ)]
) -> Response:
    return _render(request, actor, message=request.session.pop("flash", None), error=None)


@router.post("/release/remote/{batch_id}")
def remote_sign(
    request: Request,
    batch_id: str,
    actor: Annotated[Actor, page(Permission.RELEASE_DECIDE, gate=False)],
    decision: Annotated[str, Form()],
    meaning: Annotated[str, Form()],
    password: Annotated[str, Form()],
    shown_hash: Annotated[str, Form()],
    reason: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    totp: Annotated[str, Form()] = "",
    exceptional: Annotated[str, Form()] = "",
) -> Response:
    """The QP's signature on a site node's dossier (the one shown: `shown_hash`); throttled
    like every signing form."""
    application = _app(request)
    try:
        _check_csrf(request, csrf_token)
        from nearfab.api.release import control_releases

        queue = control_releases(application, actor, Permission.RELEASE_DECIDE)
        with signing(request, actor), application.uow() as uow:
            body = queue.decide(
                uow,
                actor,
                batch_id,
                decision=decision,
                meaning=meaning,
                reason=reason or None,
                shown_hash=shown_hash,
                exceptional=exceptional == "yes",
                **signature(password, username, totp),
            )
    except DomainError as exc:
        shown = hidden(exc, batch_id)  # another site's batch is answered as an unknown one
        return _render(
            request,
            actor,
            status_code=shown.http_status,
            message=None,
            error=f"Batch {batch_id} not signed: {shown.message}",
            failed_batch=batch_id,
        )
    request.session["flash"] = (
        f"Batch {body['batch_number']} {body['decision']} signed (signature "
        f"{body['signature']['id']}): it reaches its site node with the next replication pass."
    )
    return RedirectResponse("/release/remote", status_code=303)
