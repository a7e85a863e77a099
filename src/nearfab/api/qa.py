"""/api/v1 routes: the network's quality system (docs/central-qa.md): the central QA view,
CAPAs, complaints, owners and due dates, change control of master files, and the annual
report per master file (JSON, CSV, PDF)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body
from fastapi.responses import Response

from nearfab.api.deps import AppDep, UowDep, allowed
from nearfab.identity import Actor, Permission
from nearfab.masterfiles.changecontrol import ChangeControlIn, ChangeDecisionIn
from nearfab.qaschemas import (
    AnnualReportOut,
    AssignmentOut,
    CapaOut,
    CentralQaOut,
    ChangeControlOut,
    ComplaintOut,
    row_dict,
)
from nearfab.qaviews import annual_report, annual_report_csv, annual_report_pdf, central_qa
from nearfab.quality.qms import (
    AssignIn,
    CapaCloseIn,
    CapaIn,
    ComplaintCloseIn,
    ComplaintIn,
    InvestigateIn,
)

router = APIRouter(prefix="/api/v1")
_CLOSE = str(CapaCloseIn.model_json_schema())
TAGS: list[str | Any] = ["quality"]


def _cc(row: Any) -> dict[str, Any]:
    return row_dict(row, ChangeControlOut)


@router.get("/qa", tags=TAGS, response_model=CentralQaOut)
def central_qa_view(
    actor: Annotated[Actor, allowed(Permission.QA_READ)], application: AppDep, uow: UowDep
) -> dict[str, Any]:
    """Open deviations, complaints, CAPAs and change controls with owner, due date and
    overdue; counts by site and owner; items opened per month per site. Site QA see their own
    site's items; the control site's QA see every site."""
    return central_qa(application, uow, actor)


@router.post("/qa/capas", tags=TAGS, response_model=CapaOut, status_code=201)
def open_capa(
    body: Annotated[CapaIn, Body()],
    actor: Annotated[Actor, allowed(Permission.QA_RECORD)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    row = application.qms.open_capa(uow, actor, body.model_dump(mode="json"))
    return row_dict(row, CapaOut)


@router.get("/qa/capas/{capa_id}", tags=TAGS, response_model=CapaOut)
def get_capa(
    capa_id: str,
    actor: Annotated[Actor, allowed(Permission.QA_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return row_dict(application.qms.capa(uow, actor, capa_id), CapaOut)


@router.post("/qa/capas/{capa_id}/close", tags=TAGS, response_model=CapaOut)
def close_capa(
    capa_id: str,
    body: Annotated[dict[str, Any], Body(description=_CLOSE)],
    actor: Annotated[Actor, allowed(Permission.CAPA_CLOSE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """A QP closes the CAPA, its effectiveness checked: an e-signature. The body (CapaCloseIn:
    effectiveness, password, username, totp) is read after the CAPA's site is checked, so a
    signature is never attempted on another site's CAPA."""
    row = application.qms.close_capa(uow, actor, capa_id, body)
    return row_dict(row, CapaOut)


@router.post("/qa/complaints", tags=TAGS, response_model=ComplaintOut, status_code=201)
def record_complaint(
    body: Annotated[ComplaintIn, Body()],
    actor: Annotated[Actor, allowed(Permission.QA_RECORD)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Who reported what, about which pack (serial) or batch; with owner and due date."""
    row = application.qms.record_complaint(uow, actor, body.model_dump(mode="json"))
    return row_dict(row, ComplaintOut)


@router.get("/qa/complaints/{complaint_id}", tags=TAGS, response_model=ComplaintOut)
def get_complaint(
    complaint_id: str,
    actor: Annotated[Actor, allowed(Permission.QA_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return row_dict(application.qms.complaint(uow, actor, complaint_id), ComplaintOut)


@router.post("/qa/complaints/{complaint_id}/investigate", tags=TAGS, response_model=ComplaintOut)
def investigate_complaint(
    complaint_id: str,
    body: Annotated[InvestigateIn, Body()],
    actor: Annotated[Actor, allowed(Permission.QA_RECORD)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    row = application.qms.investigate_complaint(uow, actor, complaint_id, body.model_dump())
    return row_dict(row, ComplaintOut)


@router.post("/qa/complaints/{complaint_id}/close", tags=TAGS, response_model=ComplaintOut)
def close_complaint(
    complaint_id: str,
    body: Annotated[ComplaintCloseIn, Body()],
    actor: Annotated[Actor, allowed(Permission.QA_RECORD)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    row = application.qms.close_complaint(uow, actor, complaint_id, body.model_dump())
    return row_dict(row, ComplaintOut)


@router.post("/qa/assignments/{item_kind}/{item_id}", tags=TAGS, response_model=AssignmentOut)
def assign_item(
    item_kind: Literal["deviation", "complaint", "capa", "change_control"],
    item_id: str,
    body: Annotated[AssignIn, Body()],
    actor: Annotated[Actor, allowed(Permission.QA_RECORD)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Name (or change) the owner and due date of a quality item."""
    row = application.qms.assign(uow, actor, item_kind, item_id, body.model_dump(mode="json"))
    return row_dict(row, AssignmentOut)


@router.get("/change-controls", tags=TAGS, response_model=list[ChangeControlOut])
def change_controls(
    actor: Annotated[Actor, allowed(Permission.QA_READ)],
    application: AppDep,
    uow: UowDep,
    master_file_code: str | None = None,
) -> list[dict[str, Any]]:
    return [_cc(r) for r in application.change_controls.list(uow, actor, master_file_code)]


@router.post("/change-controls", tags=TAGS, response_model=ChangeControlOut, status_code=201)
def raise_change_control(
    body: Annotated[ChangeControlIn, Body()],
    actor: Annotated[Actor, allowed(Permission.CHANGE_CONTROL_RAISE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Propose a new master-file version; the impact on every site is assessed and kept."""
    return _cc(application.change_controls.raise_change(uow, actor, body.model_dump()))


@router.get("/change-controls/{change_id}", tags=TAGS, response_model=ChangeControlOut)
def get_change_control(
    change_id: str,
    actor: Annotated[Actor, allowed(Permission.QA_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return _cc(application.change_controls.get(uow, change_id))


@router.post("/change-controls/{change_id}/decide", tags=TAGS, response_model=ChangeControlOut)
def decide_change_control(
    change_id: str,
    body: Annotated[ChangeDecisionIn, Body()],
    actor: Annotated[Actor, allowed(Permission.CHANGE_CONTROL_APPROVE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The QP approves or rejects the change (e-signed)."""
    return _cc(application.change_controls.decide(uow, actor, change_id, body.model_dump()))


@router.post("/change-controls/{change_id}/implement", tags=TAGS, response_model=ChangeControlOut)
def implement_change_control(
    change_id: str,
    actor: Annotated[Actor, allowed(Permission.MASTER_FILE_EFFECTIVE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The approved change's version is made effective (the previous one superseded)."""
    return _cc(application.change_controls.implement(uow, actor, change_id))


@router.get("/annual-reports/{code}/{year}", tags=TAGS, response_model=AnnualReportOut)
def get_annual_report(
    code: str,
    year: int,
    actor: Annotated[Actor, allowed(Permission.ANNUAL_REPORT_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """What the control site reports to its regulator for one master file and year."""
    return annual_report(application, uow, actor, code, year)


@router.get(
    "/annual-reports/{code}/{year}/export",
    tags=TAGS,
    responses={200: {"content": {"text/csv": {}, "application/pdf": {}}}},
)
def export_annual_report(
    code: str,
    year: int,
    actor: Annotated[Actor, allowed(Permission.ANNUAL_REPORT_READ)],
    application: AppDep,
    uow: UowDep,
    format: Literal["csv", "pdf"] = "csv",
) -> Response:
    report = annual_report(application, uow, actor, code, year)
    name = f"annual-report-{code}-{year}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "pdf":
        return Response(annual_report_pdf(report), media_type="application/pdf", headers=headers)
    return Response(annual_report_csv(report), media_type="text/csv", headers=headers)
