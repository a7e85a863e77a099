"""The node page (`/node`, docs/replication.md): which node this is, its link to the broker,
what waits in its outbox, and per origin what it received. At a site node it says which
decisions wait for the control site; in a network of one database it says there are no nodes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from nearfab.common.errors import DomainError
from nearfab.identity import Actor, Permission
from nearfab.replication.overview import node_overview
from nearfab.web.pages import _app, page, render

router = APIRouter(include_in_schema=False)

# what a site node leaves to the control site (common/node.py), in the words of the page
WAITS_FOR_CONTROL = (
    "QP release and rejection of batches",
    "master-file changes, and change controls",
    "a site's signing policy, and QP assignment",
    "the approval of a home build",
)


@router.get("/node", response_class=HTMLResponse)
def node_page(request: Request, actor: Annotated[Actor, page(Permission.AUDIT_READ)]) -> Response:
    application = _app(request)
    service = application.replication
    if service is None:
        return render(request, "node.html", actor, overview=None, waits=WAITS_FOR_CONTROL)
    link = application.link.state() if application.link is not None else None
    moving = None  # at the control node: the orders moving between sites the reader sees
    try:
        with application.uow() as uow:
            overview = node_overview(uow, actor, service, link)
            if overview.control and application.transfers is not None:
                moving = application.transfers.states(
                    uow, actor, permission=Permission.AUDIT_READ, now=uow.clock.now()
                )
    except DomainError as exc:  # the role passed the page's check; a refusal is still a page
        return render(request, "node.html", actor, status_code=403, error=exc.message)
    return render(
        request, "node.html", actor, overview=overview, waits=WAITS_FOR_CONTROL, moving=moving
    )
