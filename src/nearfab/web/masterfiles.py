"""Master files on the web (docs/master-files.md): every version with its status
(`/master-files`), and one version with what it fixes for every site and the QP's e-signed
approval (`/master-files/{id}`). The same use case as `POST /api/v1/master-files/{id}/approve`
(MasterFileService.approve): an approval is the network's, so only a control-site QP is
offered it; making a version effective goes through change control (`/qa/change-controls`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nearfab.common.errors import DomainError
from nearfab.identity import Actor, Permission, can_network
from nearfab.masterfiles import MasterFileStatus
from nearfab.web.forms import signature
from nearfab.web.pages import _app, _check_csrf, decided_here, page, render, signing

router = APIRouter(include_in_schema=False)
FLASH = "master_file_flash"
LIST = "/master-files"


@router.get(LIST, response_class=HTMLResponse)
def master_files_page(
    request: Request, actor: Annotated[Actor, page(Permission.MASTER_FILE_READ)]
) -> Response:
    application = _app(request)
    with application.uow() as uow:
        rows = sorted(application.master_files.list_all(uow), key=lambda mf: (mf.code, -mf.version))
        sites = {s.id: s.code for s in application.network.list_sites(uow)}
    return render(
        request,
        "masterfiles/list.html",
        actor,
        rows=rows,
        sites=sites,
        flash=request.session.pop(FLASH, None),
    )


@router.get(LIST + "/{mf_id}", response_class=HTMLResponse)
def master_file_page(
    request: Request,
    mf_id: str,
    actor: Annotated[Actor, page(Permission.MASTER_FILE_READ)],
) -> Response:
    application = _app(request)
    with application.uow() as uow:
        mf = application.master_files.get(uow, mf_id)  # NotFound: the 404 page
        sites = {s.id: s.code for s in application.network.list_sites(uow)}
        approval_valid = (
            application.master_files.approval_is_valid(uow, mf) if mf.approved_at else None
        )
    return render(
        request,
        "masterfiles/version.html",
        actor,
        mf=mf,
        sites=sites,
        approval_valid=approval_valid,
        may_approve=mf.status == MasterFileStatus.DRAFT.value
        and can_network(actor, Permission.MASTER_FILE_APPROVE)
        and decided_here(_app(request)),
        flash=request.session.pop(FLASH, None),
    )


@router.post(LIST + "/{mf_id}/approve")
def approve_form(
    request: Request,
    mf_id: str,
    actor: Annotated[Actor, page(Permission.MASTER_FILE_APPROVE)],
    meaning: Annotated[str, Form()] = "QP approval of master file",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    totp: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """The QP approves a drafted version with an e-signature bound to its content's hash."""
    application = _app(request)
    try:
        _check_csrf(request, csrf_token)
        with signing(request, actor), application.uow() as uow:
            mf = application.master_files.approve(
                uow,
                actor,
                mf_id,
                meaning=meaning.strip() or "QP approval of master file",
                **signature(password, username, totp),
            )
            words = f"{mf.code} v{mf.version} approved (signature {mf.approval_signature_id})."
    except DomainError as exc:
        request.session[FLASH] = f"Refused: {exc.message}"
        return RedirectResponse(f"{LIST}/{mf_id}", status_code=303)
    request.session[FLASH] = words
    return RedirectResponse(f"{LIST}/{mf_id}", status_code=303)
