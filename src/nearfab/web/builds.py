"""The control site's approval of builds on the web (`/builds/approvals`): the planned builds
whose product's family wants the control site's approval at their kind of site (a device built
at a patient's home), each with the e-signature form of the role the family names. The same use
cases as `/api/v1/builds/awaiting-approval` and `/api/v1/jobs/{job_id}/build-approval`
(ProductionService); approving is network-level (the control site's staff only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nearfab.bootstrap import App
from nearfab.common.errors import DomainError
from nearfab.identity import Actor, Permission
from nearfab.production import approval_meaning
from nearfab.uow import UnitOfWork
from nearfab.web.pages import _app, decided_here, form_action, page, render

router = APIRouter(include_in_schema=False)
FLASH = "build_flash"
LIST = "/builds/approvals"


def _refused(request: Request, exc: DomainError) -> Response:
    request.session[FLASH] = f"Refused: {exc.message}"
    return RedirectResponse(LIST, status_code=303)


@router.get("/builds/approvals", response_class=HTMLResponse)
def builds_page(
    request: Request, actor: Annotated[Actor, page(Permission.RELEASE_QUEUE_READ)]
) -> Response:
    application = _app(request)
    with application.uow() as uow:
        rows = application.production.builds_awaiting_approval(uow, actor)
    return render(
        request,
        "builds/approvals.html",
        actor,
        rows=rows,
        meanings={row.job_id: approval_meaning(row.site_kind) for row in rows},
        decides_here=decided_here(application),
        flash=request.session.pop(FLASH, None),
    )


@router.post("/builds/{job_id}/approve")
def approve_build_form(
    request: Request,
    job_id: str,
    actor: Annotated[Actor, page(Permission.BUILD_APPROVE)],
    meaning: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    totp: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """The approver's e-signature: the build's job ticket is signed with it."""

    def act(application: App, uow: UnitOfWork) -> tuple[str, str]:
        ticket = application.production.approve_build(
            uow,
            actor,
            job_id,
            password=password,
            meaning=meaning,
            username=username or None,
            totp=totp or None,
        )
        approval = ticket.payload["build_approval"]
        return (
            f"Build {job_id} approved ({approval['meaning']}, signature "
            f"{approval['signature_id']}): its job ticket is signed.",
            LIST,
        )

    return form_action(
        request,
        csrf_token,
        act,
        flash_key=FLASH,
        refused=lambda exc: _refused(request, exc),
        signer=actor,  # an e-signature: throttled like the login
    )
