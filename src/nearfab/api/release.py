"""/api/v1 routes of release follow-up and exceptional release: results pending at release
entered later (e-signed; a correction needs its reason), the notices a failed result sends the
treating prescriber, and the exceptional release of an out-of-specification batch (the
treating physician's signed request, then the QP's signed release). Also a batch's laboratory
results, entered before the QP's decision (e-signed by the analyst)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field

from nearfab.api.deps import AppDep, UowDep, allowed, client_of, login_throttle
from nearfab.api.schemas import DecisionIn
from nearfab.api.security import throttled
from nearfab.bootstrap import App
from nearfab.common.errors import Refused
from nearfab.identity import Actor, ESignatureIn, Permission, authorize_declared
from nearfab.quality.exceptional import REQUESTED_BY
from nearfab.quality.followup import followup_dict, notice_dict
from nearfab.quality.labresults import ENTERED_BY, METHOD_MAX
from nearfab.quality.schemas import (
    ExceptionalOut,
    FollowUpOut,
    LabResultsOut,
    NoticeOut,
    ReviewOut,
)
from nearfab.readmodels import review_dict
from nearfab.replication.releases import ControlReleases
from nearfab.replication.schemas import RemoteDossierDetailOut, RemoteDossierOut, RemoteReleaseOut
from nearfab.uow import UnitOfWork

router = APIRouter(prefix="/api/v1", tags=["quality"])


class ResultIn(ESignatureIn):
    """The result of a test that was pending at release; `reason` makes it a correction of
    the result entered before (without one, a second entry is refused)."""

    outcome: Literal["pass", "fail"]
    detail: str = Field(max_length=2000)
    reason: str | None = Field(default=None, max_length=2000)
    meaning: str = "result entered by"


class LabResultsIn(ESignatureIn):
    """One entry of the batch's laboratory results, e-signed by the analyst: test key -> value
    (the keys and values the product's family takes; GET lists the keys), the method or
    reference, and for a correction of a result already entered its reason."""

    results: dict[str, Any] = Field(
        description="test key -> value (the keys GET lists for the batch's product)"
    )
    method: str = Field(max_length=METHOD_MAX, description="the method or reference")
    reason: str | None = Field(default=None, max_length=2000)
    meaning: str = ENTERED_BY


class ExceptionalRequestIn(ESignatureIn):
    """The treating physician's request: the exceptional circumstances, e-signed."""

    circumstances: str = Field(max_length=2000)
    meaning: str = REQUESTED_BY


class ExceptionalCertifyIn(ESignatureIn):
    """The QP's signature on an exceptional release, with the reason and the hash of the
    record shown (from GET /release/pending)."""

    reason: str | None = Field(default=None, max_length=2000)
    record_hash: str | None = Field(default=None, max_length=64)


class RemoteDecisionIn(ESignatureIn):
    """The control site's QP decision on a site node's batch: the decision, the reason (a
    rejection needs one) and the hash of the dossier shown (`shown_hash`, from GET
    /release/remote/{batch_id}): a newer dossier from the site is refused, look again."""

    decision: Literal["release", "reject"]
    reason: str | None = Field(default=None, max_length=2000)
    shown_hash: str = Field(min_length=64, max_length=64)
    # the release of an out-of-specification batch at the treating physician's request the
    # dossier carries (`exceptional_request`); the reason is then required
    exceptional: bool = False


def control_releases(application: App, actor: Actor, permission: Permission) -> ControlReleases:
    """The control node's queue of the sites' dossiers; elsewhere 409 `not_control_node`, once
    the caller's role is known to hold `permission` (a role without it is refused first)."""
    if application.remote_releases is None:
        authorize_declared(actor, permission)
        raise Refused(
            "this node receives no release dossiers: only the control node of a replicated "
            "network does (docs/replication.md)",
            field="node",
            code="not_control_node",
        )
    return application.remote_releases


def qp_decision(
    application: App,
    uow: UnitOfWork,
    actor: Actor,
    request: Request,
    batch_id: str,
    body: DecisionIn | ExceptionalCertifyIn,
    *,
    decision: str,
    exceptional: bool = False,
) -> dict[str, Any]:
    """The QP's e-signed decision on a batch (throttled like a login: it carries a password),
    answered with the release review as a fresh session reads it."""
    with throttled(login_throttle(request), actor.username, client_of(request)):
        review = application.quality.decide(
            uow,
            actor,
            batch_id,
            decision=decision,
            exceptional=exceptional,
            password=body.password,
            meaning=body.meaning,
            reason=body.reason,
            record_hash=body.record_hash,
            username=body.username,
            totp=body.totp,
        )
    with application.uow() as fresh:
        return review_dict(application, fresh, review)


@router.get("/release/followups", response_model=list[FollowUpOut])
def open_followups(
    actor: Annotated[Actor, allowed(Permission.RELEASE_FOLLOWUP_READ)],
    application: AppDep,
    uow: UowDep,
) -> list[dict[str, Any]]:
    """Results still pending after release, of the sites the caller sees."""
    fus = application.quality.followups.open_list(uow, actor)
    numbers = {fu.batch_id: application.production.get(uow, fu.batch_id).batch_number for fu in fus}
    return [
        followup_dict(application.quality.followups, uow, fu, numbers[fu.batch_id]) for fu in fus
    ]


@router.get("/batches/{batch_id}/followups", response_model=list[FollowUpOut])
def batch_followups(
    batch_id: str,
    actor: Annotated[Actor, allowed(Permission.RELEASE_FOLLOWUP_READ)],
    application: AppDep,
    uow: UowDep,
) -> list[dict[str, Any]]:
    """The batch's results pending at release, with every signed entry."""
    batch, fus = application.quality.followups.batch_followups(uow, actor, batch_id)
    return [followup_dict(application.quality.followups, uow, fu, batch.batch_number) for fu in fus]


@router.post("/batches/{batch_id}/followups/{test}/result", response_model=FollowUpOut)
def enter_result(
    batch_id: str,
    test: str,
    body: ResultIn,
    request: Request,
    actor: Annotated[Actor, allowed(Permission.RELEASE_FOLLOWUP_ENTER, gate=False)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Enter a result pending at release (QA or QP, e-signed). 409 `result_already_entered`
    for a second entry without a reason; a fail opens an investigation and notifies the
    treating prescriber of every patient who received the batch."""
    with throttled(login_throttle(request), actor.username, client_of(request)):
        fu = application.quality.followups.enter_result(
            uow,
            actor,
            batch_id,
            test,
            outcome=body.outcome,
            detail=body.detail,
            reason=body.reason,
            password=body.password,
            meaning=body.meaning,
            username=body.username,
            totp=body.totp,
        )
    fu_id = fu.id
    with application.uow() as fresh:
        return application.quality.followups.view(fresh, fu_id)


def lab_results_view(application: App, uow: UnitOfWork, actor: Actor, batch_id: str) -> Any:
    """The batch's laboratory results with the release review they feed."""
    out = application.quality.lab_results.batch_results(uow, actor, batch_id)
    review = application.quality.review_for(uow, batch_id)
    out["review"] = review_dict(application, uow, review) if review is not None else None
    return out


@router.get("/batches/{batch_id}/lab-results", response_model=LabResultsOut)
def batch_lab_results(
    batch_id: str,
    actor: Annotated[Actor, allowed(Permission.BATCH_READ)],
    application: AppDep,
    uow: UowDep,
) -> Any:
    """The batch's laboratory results: the keys its product takes, the results in force, every
    signed entry and correction, and the release review they feed."""
    return lab_results_view(application, uow, actor, batch_id)


@router.post("/batches/{batch_id}/lab-results", response_model=LabResultsOut)
def enter_lab_results(
    batch_id: str,
    body: LabResultsIn,
    request: Request,
    actor: Annotated[Actor, allowed(Permission.LAB_RESULT_ENTER, gate=False)],
    application: AppDep,
    uow: UowDep,
) -> Any:
    """Enter laboratory results of a batch (QA or a QP of its site, e-signed by the analyst).
    422 naming `lab_results.<key>` for a key or value the product does not take; 409
    `result_already_entered` for a second entry of a key without a reason, `batch_dispositioned`
    once the QP has decided (a result pending at release goes through its follow-up). The
    release proposal waiting for the QP is evaluated again with the results."""
    with throttled(login_throttle(request), actor.username, client_of(request)):
        application.quality.lab_results.enter(
            uow,
            actor,
            batch_id,
            results=body.results,
            method=body.method,
            reason=body.reason,
            **body.signing(),
        )
    with application.uow() as fresh:
        return lab_results_view(application, fresh, actor, batch_id)


@router.post("/batches/{batch_id}/exceptional-release", response_model=ExceptionalOut)
def request_exceptional(
    batch_id: str,
    body: ExceptionalRequestIn,
    request: Request,
    actor: Annotated[Actor, allowed(Permission.RELEASE_EXCEPTIONAL_REQUEST, gate=False)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The treating physician (a clinician of the patient's site) asks, e-signed, for the
    exceptional release of an out-of-specification batch."""
    with throttled(login_throttle(request), actor.username, client_of(request)):
        row = application.quality.exceptional.request(
            uow,
            actor,
            batch_id,
            circumstances=body.circumstances,
            password=body.password,
            meaning=body.meaning,
            username=body.username,
            totp=body.totp,
        )
    with application.uow() as fresh:
        found = application.quality.exceptional.for_batch(fresh, row.batch_id)
        assert found is not None
        return application.quality.exceptional.view(fresh, found)


@router.post("/batches/{batch_id}/exceptional-release/certify", response_model=ReviewOut)
def certify_exceptional(
    batch_id: str,
    body: ExceptionalCertifyIn,
    request: Request,
    actor: Annotated[Actor, allowed(Permission.RELEASE_DECIDE, gate=False)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The QP's signed exceptional release, after the treating physician's signed request
    (409 `physician_request_missing` without it)."""
    return qp_decision(
        application, uow, actor, request, batch_id, body, decision="release", exceptional=True
    )


@router.get("/notices", response_model=list[NoticeOut])
def notices(
    actor: Annotated[Actor, allowed(Permission.NOTICE_READ)],
    application: AppDep,
    uow: UowDep,
    unacknowledged: Annotated[bool, Query()] = False,
) -> list[dict[str, Any]]:
    """Notices to the treating prescribers of the caller's site (newest first)."""
    rows = application.quality.followups.notices(uow, actor, unacknowledged=unacknowledged)
    return [notice_dict(n) for n in rows]


@router.post("/notices/{notice_id}/acknowledge", response_model=NoticeOut)
def acknowledge_notice(
    notice_id: str,
    actor: Annotated[Actor, allowed(Permission.NOTICE_ACKNOWLEDGE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """A clinician of the ordering site has read the notice."""
    return notice_dict(application.quality.followups.acknowledge(uow, actor, notice_id))


# --- release across the network (replication/releases.py) -------------------------------------
@router.get("/release/remote", response_model=list[RemoteDossierOut])
def remote_dossiers(
    actor: Annotated[Actor, allowed(Permission.RELEASE_QUEUE_READ)],
    application: AppDep,
    uow: UowDep,
    decided: Annotated[bool, Query(description="also those already decided")] = False,
) -> list[dict[str, Any]]:
    """At the control node: the site nodes' batches waiting for a QP decision, each on its
    newest release dossier (what the site sent; blockers the site names), of the sites the
    caller sees. 409 `not_control_node` on any other node."""
    queue = control_releases(application, actor, Permission.RELEASE_QUEUE_READ)
    return [d.to_dict() for d in queue.read(uow, actor, waiting_only=not decided)]


@router.get("/release/remote/{batch_id}", response_model=RemoteDossierDetailOut)
def remote_dossier(
    batch_id: str,
    actor: Annotated[Actor, allowed(Permission.RELEASE_QUEUE_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """A site node's newest dossier of the batch with what the QP signs (the batch record,
    its signed steps and results, the proposal, the deviations) and its `shown_hash`."""
    queue = control_releases(application, actor, Permission.RELEASE_QUEUE_READ)
    return queue.newest(uow, batch_id, actor).detail()


@router.post("/release/remote/{batch_id}/decision", response_model=RemoteReleaseOut)
def remote_decision(
    batch_id: str,
    body: RemoteDecisionIn,
    request: Request,
    actor: Annotated[Actor, allowed(Permission.RELEASE_DECIDE, gate=False)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The control site's QP releases or rejects a site node's batch, e-signed (throttled like
    a login), on the dossier whose `shown_hash` they were shown. The decision goes to the site
    node, which records it with the QP's signature or says on record why not."""
    queue = control_releases(application, actor, Permission.RELEASE_DECIDE)
    with throttled(login_throttle(request), actor.username, client_of(request)):
        return queue.decide(
            uow,
            actor,
            batch_id,
            decision=body.decision,
            password=body.password,
            meaning=body.meaning,
            reason=body.reason,
            shown_hash=body.shown_hash,
            username=body.username,
            totp=body.totp,
            exceptional=body.exceptional,
        )
