"""The worklist page (issue 13 item 3): the steps due now on the open batches of the person's
sites, the critical entries waiting for them as a second person, and for a QP the audit trails
to review and the batches ready to certify (`nearfab.worklist.worklist_view`).

Its forms post to the batch page's routes (web/records.py: one signing path) with
`return_to=worklist`, which brings the person back here with what happened."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from nearfab.common.errors import DomainError
from nearfab.identity import Actor, Permission
from nearfab.web.pages import _app, hidden, human, page, render
from nearfab.worklist import worklist_view

router = APIRouter(include_in_schema=False)

RETURN_TO = "worklist"  # the forms' `return_to` value that brings the signer back here
FLASH = "worklist_flash"  # what the last signature posted from here did


def worklist_response(
    request: Request,
    actor: Actor,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The worklist page, with a refusal shown in it (`error`, answered with its status)."""
    application = _app(request)
    with application.uow() as uow:
        work = worklist_view(application, uow, actor)
    return render(
        request,
        "worklist.html",
        actor,
        work=work,
        message=request.session.pop(FLASH, None),
        error=error,
        status_code=status_code,
    )


def refused_here(
    request: Request, actor: Actor, what: str, exc: DomainError, batch_id: str
) -> HTMLResponse:
    """A signature posted from the worklist and refused: the worklist with the refusal in
    words; another site's batch is answered as an unknown one (`pages.hidden`)."""
    shown = hidden(exc, batch_id)
    code = f" ({human(shown.code)})" if shown.code else ""
    return worklist_response(
        request,
        actor,
        error=f"{what}: refused{code}: {shown.message}",
        status_code=shown.http_status,
    )


@router.get("/worklist", response_class=HTMLResponse)
def worklist_page(
    request: Request, actor: Annotated[Actor, page(Permission.BATCH_ENTRY_VERIFY)]
) -> Response:
    return worklist_response(request, actor)
