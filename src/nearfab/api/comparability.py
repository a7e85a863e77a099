"""/api/v1 routes: comparability between sites, proficiency testing (docs/comparability.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query

from nearfab.api.deps import AppDep, UowDep, allowed
from nearfab.comparability.schemas import (
    CapaCloseIn,
    ReportOut,
    ResultIn,
    RoundIn,
    RoundOut,
    SuspensionOut,
)
from nearfab.identity import Actor, Permission

router = APIRouter(prefix="/api/v1")
TAGS: list[str | Any] = ["comparability"]


@router.get("/comparability/{code}", tags=TAGS, response_model=ReportOut)
def comparability_report(
    code: str,
    actor: Annotated[Actor, allowed(Permission.COMPARABILITY_READ)],
    application: AppDep,
    uow: UowDep,
    by: Annotated[Literal["site", "machine", "material_lot", "month"], Query()] = "site",
) -> dict[str, Any]:
    """The master file's made batches, each site (machine, material lot or month) against the
    rest of the network: chart of means, TOST with the master file's margins, Cpk with
    Bissell's interval, the run rule and Hotelling T²; what drifts is flagged. Site staff see
    their own site's rows."""
    return application.comparability.report(uow, actor, code, by)


@router.get("/proficiency/rounds", tags=TAGS, response_model=list[RoundOut])
def proficiency_rounds(
    actor: Annotated[Actor, allowed(Permission.COMPARABILITY_READ)],
    application: AppDep,
    uow: UowDep,
) -> list[dict[str, Any]]:
    """Proficiency rounds: the network's for the control site; for site staff, the rounds their
    site takes part in, with their own site's result only."""
    return application.comparability.rounds(uow, actor)


@router.post("/proficiency/rounds", tags=TAGS, response_model=RoundOut, status_code=201)
def open_proficiency_round(
    body: Annotated[RoundIn, Body()],
    actor: Annotated[Actor, allowed(Permission.PROFICIENCY_ROUND)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The control site sends blind reference samples (or prints) to the sites named."""
    row = application.comparability.open_round(uow, actor, body.model_dump())
    return application.comparability.round(uow, actor, row.id)


@router.get("/proficiency/rounds/{round_id}", tags=TAGS, response_model=RoundOut)
def proficiency_round(
    round_id: str,
    actor: Annotated[Actor, allowed(Permission.COMPARABILITY_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return application.comparability.round(uow, actor, round_id)


@router.post(
    "/proficiency/rounds/{round_id}/results", tags=TAGS, response_model=RoundOut, status_code=201
)
def enter_proficiency_result(
    round_id: str,
    body: Annotated[ResultIn, Body()],
    actor: Annotated[Actor, allowed(Permission.PROFICIENCY_RESULT_ENTER)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """A site's result on the blind sample (once per site)."""
    application.comparability.enter_result(uow, actor, round_id, body.model_dump())
    return application.comparability.round(uow, actor, round_id)


@router.post("/proficiency/rounds/{round_id}/score", tags=TAGS, response_model=RoundOut)
def score_proficiency_round(
    round_id: str,
    actor: Annotated[Actor, allowed(Permission.PROFICIENCY_ROUND)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """ISO 13528 z-scores; each site with |z| > 3 is suspended from the master file."""
    application.comparability.score_round(uow, actor, round_id)
    return application.comparability.round(uow, actor, round_id)


@router.get("/proficiency/suspensions", tags=TAGS, response_model=list[SuspensionOut])
def proficiency_suspensions(
    actor: Annotated[Actor, allowed(Permission.COMPARABILITY_READ)],
    application: AppDep,
    uow: UowDep,
    site_id: str | None = None,
    master_file_code: str | None = None,
) -> list[dict[str, Any]]:
    """Suspensions, active and lifted (site staff: their own site's)."""
    return application.comparability.suspensions(
        uow, actor, site_id=site_id, master_file_code=master_file_code
    )


@router.post(
    "/proficiency/suspensions/{suspension_id}/close", tags=TAGS, response_model=SuspensionOut
)
def close_suspension_capa(
    suspension_id: str,
    body: Annotated[CapaCloseIn, Body()],
    actor: Annotated[Actor, allowed(Permission.PROFICIENCY_CAPA_CLOSE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The control site's QP closes the CAPA (e-signed): the suspension is lifted."""
    row = application.comparability.close_capa(uow, actor, suspension_id, body.model_dump())
    [found] = [
        s
        for s in application.comparability.suspensions(uow, actor, site_id=row.site_id)
        if s["id"] == row.id
    ]
    return found
