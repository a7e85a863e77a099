"""Change control of a master file on the web (docs/central-qa.md): the list of change
controls with the form that raises one (`/qa/change-controls`), and one change control with its
impact on every site, the QP's e-signed decision and its implementation
(`/qa/change-controls/{id}`). The same use cases as `/api/v1/change-controls`
(ChangeControlService); a change control is the network's record, so raising, deciding and
implementing are network-level (the control site's staff)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nearfab.bootstrap import App
from nearfab.common.errors import DomainError, NotFound, ValidationFailed
from nearfab.identity import Actor, Permission, can_network
from nearfab.masterfiles import ChangeControlStatus, MasterFileStatus
from nearfab.uow import UnitOfWork
from nearfab.web.forms import signature
from nearfab.web.pages import _app, decided_here, form_action, page, render

router = APIRouter(include_in_schema=False)
FLASH = "change_flash"
LIST = "/qa/change-controls"
# the versions a change control may propose (ChangeControlService.raise_change checks it too)
PROPOSABLE = (MasterFileStatus.DRAFT.value, MasterFileStatus.APPROVED.value)


def _refused(request: Request, exc: DomainError, change_id: str | None = None) -> Response:
    """Said on the page the form came from; a change control that does not exist sends the
    person back to the list (every QA reader sees every change control: nothing to hide)."""
    request.session[FLASH] = f"Refused: {exc.message}"
    if change_id is None or isinstance(exc, NotFound):
        return RedirectResponse(LIST, status_code=303)
    return RedirectResponse(f"{LIST}/{change_id}", status_code=303)


@router.get("/qa/change-controls", response_class=HTMLResponse)
def change_controls_page(
    request: Request, actor: Annotated[Actor, page(Permission.QA_READ)]
) -> Response:
    application = _app(request)
    with application.uow() as uow:
        rows = application.change_controls.list(uow, actor)
        proposable = [
            {"id": mf.id, "code": mf.code, "version": mf.version, "status": mf.status}
            for mf in application.master_files.list_all(uow)
            if mf.status in PROPOSABLE
        ]
    return render(
        request,
        "qa/change_controls.html",
        actor,
        rows=list(reversed(rows)),  # newest first
        proposable=proposable,
        may_raise=can_network(actor, Permission.CHANGE_CONTROL_RAISE)
        and decided_here(_app(request)),
        flash=request.session.pop(FLASH, None),
    )


@router.post("/qa/change-controls")
def raise_change_form(
    request: Request,
    actor: Annotated[Actor, page(Permission.CHANGE_CONTROL_RAISE)],
    proposed_master_file_id: Annotated[str, Form()] = "",
    title: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Propose a new master-file version; the service assesses and keeps its impact."""

    def act(application: App, uow: UnitOfWork) -> tuple[str, str]:
        row = application.change_controls.raise_change(
            uow,
            actor,
            {
                "proposed_master_file_id": proposed_master_file_id,
                "title": title,
                "description": description,
                "reason": reason,
            },
        )
        return f"Change control {row.id} raised; the QP decides it.", f"{LIST}/{row.id}"

    return form_action(
        request, csrf_token, act, flash_key=FLASH, refused=lambda exc: _refused(request, exc)
    )


@router.get("/qa/change-controls/{change_id}", response_class=HTMLResponse)
def change_control_page(
    request: Request, change_id: str, actor: Annotated[Actor, page(Permission.QA_READ)]
) -> Response:
    application = _app(request)
    try:
        with application.uow() as uow:
            row = application.change_controls.get(uow, change_id)
            proposed = application.master_files.get(uow, row.proposed_master_file_id)
            version_status = proposed.status
            people = {  # who raised, decided and implemented it, by name
                uid: application.users.get(uow, uid).full_name
                for uid in (row.raised_by, row.decided_by, row.implemented_by)
                if uid
            }
    except NotFound as exc:  # back to the list, which says so (a network record: none hidden)
        request.session[FLASH] = f"Not found: {exc.message}"
        return RedirectResponse(LIST, status_code=303)
    return render(
        request,
        "qa/change_control.html",
        actor,
        cc=row,
        version_status=version_status,
        people=people,
        may_decide=row.status == ChangeControlStatus.RAISED
        and can_network(actor, Permission.CHANGE_CONTROL_APPROVE)
        and decided_here(_app(request)),
        may_implement=row.status == ChangeControlStatus.APPROVED
        and can_network(actor, Permission.MASTER_FILE_EFFECTIVE)
        and decided_here(_app(request)),
        flash=request.session.pop(FLASH, None),
    )


@router.post("/qa/change-controls/{change_id}/decide")
def decide_change_form(
    request: Request,
    change_id: str,
    actor: Annotated[Actor, page(Permission.CHANGE_CONTROL_APPROVE)],
    decision: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    totp: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """The QP approves or rejects the change with an e-signature."""

    def act(application: App, uow: UnitOfWork) -> tuple[str, str]:
        if decision not in ("approve", "reject"):
            raise ValidationFailed("decision: approve or reject", field="decision")
        row = application.change_controls.decide(
            uow,
            actor,
            change_id,
            {
                "approve": decision == "approve",
                "reason": reason,
                **signature(password, username, totp),
            },
        )
        message = f"Change control {change_id} {row.status} (signature {row.signature_id})."
        return message, f"{LIST}/{change_id}"

    return form_action(
        request,
        csrf_token,
        act,
        flash_key=FLASH,
        refused=lambda exc: _refused(request, exc, change_id),
        signer=actor,  # an e-signature: throttled like the login
    )


@router.post("/qa/change-controls/{change_id}/implement")
def implement_change_form(
    request: Request,
    change_id: str,
    actor: Annotated[Actor, page(Permission.MASTER_FILE_EFFECTIVE)],
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """The approved change's version is made effective (the previous one superseded)."""

    def act(application: App, uow: UnitOfWork) -> tuple[str, str]:
        row = application.change_controls.implement(uow, actor, change_id)
        words = f"{row.master_file_code} v{row.to_version}"
        return f"Change control {change_id} implemented: {words} is effective.", (
            f"{LIST}/{change_id}"
        )

    return form_action(
        request,
        csrf_token,
        act,
        flash_key=FLASH,
        refused=lambda exc: _refused(request, exc, change_id),
    )
