"""/api/v1 routes: a dose adjusted from the patient's observations (docs/dose-adjustment.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from nearfab.api.deps import AppDep, UowDep, allowed
from nearfab.identity import Actor, Permission
from nearfab.orders.dose_schemas import (
    DoseDecisionIn,
    DoseProposalOut,
    ObservationOut,
    ObservationsRecordedOut,
)
from nearfab.orders.doseadjust import observation_dict, proposal_dict

router = APIRouter(prefix="/api/v1")
TAGS: list[Any] = ["dose adjustment"]


@router.post(
    "/orders/{order_id}/observations",
    tags=TAGS,
    response_model=ObservationsRecordedOut,
    status_code=201,
)
def record_observations(
    order_id: str,
    body: Annotated[dict[str, Any], Body(description="A FHIR R4 Observation or a Bundle of them")],
    actor: Annotated[Actor, allowed(Permission.ORDER_OBSERVATION_RECORD)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Observations of the order's patient (body weight LOINC 29463-7, body height 8302-2, a
    drug level...): kept against the pseudonymous patient, all or none. When the order's master
    file has a dose rule, the proposal it gives now (or `note`: why none). A proposal changes
    no dose by itself."""
    done = application.dose_adjustment.record_observations(uow, actor, order_id, body)
    return {
        "observations": [observation_dict(r) for r in done.observations],
        "proposal": proposal_dict(done.proposal) if done.proposal else None,
        "note": done.note,
    }


@router.get("/orders/{order_id}/observations", tags=TAGS, response_model=list[ObservationOut])
def list_observations(
    order_id: str,
    actor: Annotated[Actor, allowed(Permission.ORDER_READ)],
    application: AppDep,
    uow: UowDep,
) -> list[dict[str, Any]]:
    """The order's patient's observations, newest first."""
    return application.dose_adjustment.observations(uow, actor, order_id)


@router.post(
    "/orders/{order_id}/dose-proposals",
    tags=TAGS,
    response_model=DoseProposalOut,
    status_code=201,
)
def propose_dose(
    order_id: str,
    actor: Annotated[Actor, allowed(Permission.ORDER_OBSERVATION_RECORD)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The dose the master file's rule gives now from the latest observations (refused naming
    what is missing); an open older proposal is superseded."""
    return proposal_dict(application.dose_adjustment.propose(uow, actor, order_id))


@router.get("/orders/{order_id}/dose-proposals", tags=TAGS, response_model=list[DoseProposalOut])
def list_proposals(
    order_id: str,
    actor: Annotated[Actor, allowed(Permission.ORDER_READ)],
    application: AppDep,
    uow: UowDep,
) -> list[dict[str, Any]]:
    return application.dose_adjustment.proposals(uow, actor, order_id)


@router.post("/dose-proposals/{proposal_id}/accept", tags=TAGS, response_model=DoseProposalOut)
def accept_proposal(
    proposal_id: str,
    body: Annotated[DoseDecisionIn, Body()],
    actor: Annotated[Actor, allowed(Permission.DOSE_DECIDE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """A clinician of the order's site accepts the dose (e-signed): a new version of the order
    (`new_order_id`) carries it for the batches to come."""
    row = application.dose_adjustment.accept(uow, actor, proposal_id, body.model_dump())
    return proposal_dict(row)


@router.post("/dose-proposals/{proposal_id}/reject", tags=TAGS, response_model=DoseProposalOut)
def reject_proposal(
    proposal_id: str,
    body: Annotated[DoseDecisionIn, Body()],
    actor: Annotated[Actor, allowed(Permission.DOSE_DECIDE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """A clinician rejects the dose (e-signed, with `reason`); the order is unchanged."""
    row = application.dose_adjustment.reject(uow, actor, proposal_id, body.model_dump())
    return proposal_dict(row)
