"""/api/v1 routes: adverse events traced to the pack, batch, machine, site, material lots and
every other patient exposed (docs/pharmacovigilance.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import Response

from nearfab.api.deps import AppDep, UowDep, allowed
from nearfab.identity import Actor, Permission
from nearfab.vigilance.schemas import AdverseEventOut, AdverseEventTraceOut
from nearfab.vigilance.services import event_dict

router = APIRouter(prefix="/api/v1")
TAGS: list[Any] = ["pharmacovigilance"]


@router.post("/adverse-events", tags=TAGS, response_model=AdverseEventOut, status_code=201)
def report_adverse_event(
    body: Annotated[
        dict[str, Any],
        Body(description="A FHIR R4 AdverseEvent, or {scan, description, seriousness, onset_at}"),
    ],
    actor: Annotated[Actor, allowed(Permission.ADVERSE_EVENT_REPORT)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """An adverse event against the pack it names (its GS1 scan or id); audited."""
    return event_dict(application.vigilance.report(uow, actor, body))


@router.get("/adverse-events/{event_id}/trace", tags=TAGS, response_model=AdverseEventTraceOut)
def adverse_event_trace(
    event_id: str,
    actor: Annotated[Actor, allowed(Permission.TRACE_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The pack backward (batch, machine, site, material lots, release) and every pack made
    from the same lots, with the other patients exposed."""
    return application.vigilance.trace(uow, actor, event_id)


@router.get("/adverse-events/{event_id}/trace.csv", tags=TAGS, response_class=Response)
def adverse_event_trace_csv(
    event_id: str,
    actor: Annotated[Actor, allowed(Permission.TRACE_READ)],
    application: AppDep,
    uow: UowDep,
) -> Response:
    text = application.vigilance.trace_csv(uow, actor, event_id)
    return Response(
        text,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="adverse-event-{event_id}.csv"'},
    )


@router.get("/adverse-events/{event_id}/trace.pdf", tags=TAGS, response_class=Response)
def adverse_event_trace_pdf(
    event_id: str,
    actor: Annotated[Actor, allowed(Permission.TRACE_READ)],
    application: AppDep,
    uow: UowDep,
) -> Response:
    pdf = application.vigilance.trace_pdf(uow, actor, event_id)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="adverse-event-{event_id}.pdf"'},
    )
