"""/api/v1 routes of the batch-record controls: master-file steps signed in order, critical
entries verified by a second person, deviations, the QP's audit-trail review, and the QPs
assigned to certify a master file's batches (quality-and-release.md)."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict, cast

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from nearfab.api.deps import AppDep, UowDep, allowed
from nearfab.bootstrap import App
from nearfab.common.canonical import to_jsonable
from nearfab.common.schemas import Out, Timestamp, shaped
from nearfab.identity import (
    Actor,
    AuditEntryOut,
    ESignatureIn,
    Permission,
    approval_dict,
    audit_entry_out,
    authorize,
)
from nearfab.identity.account_schemas import ApprovalOut
from nearfab.uow import UnitOfWork

router = APIRouter(prefix="/api/v1")


# the e-signature components are `ESignatureIn`'s (password, meaning, username, totp); each
# control only gives the meaning a default, and a step its entry values
class StepSignIn(ESignatureIn):
    entry: dict[str, Any] = Field(default_factory=dict)
    meaning: str = "performed by"


class VerifyIn(ESignatureIn):
    meaning: str = "verified by"


class ReviewIn(ESignatureIn):
    meaning: str = "audit trail reviewed"


class Signing(TypedDict):
    """The e-signature components a batch-record control takes, as keyword arguments."""

    password: str
    meaning: str
    username: str | None
    totp: str | None


def _signing(body: ESignatureIn) -> Signing:
    return cast(Signing, body.signing())


class DeviationIn(BaseModel):
    description: str
    # the master-file step this deviation lets be skipped, if any
    step: str | None = None


class AssignIn(BaseModel):
    user: str  # user id or username
    reason: str


class UnassignIn(BaseModel):
    reason: str


class BatchTrailOut(Out):
    """Every audit row about a batch, the hash of those rows, and how far a QP reviewed them."""

    batch_id: str
    batch_number: str
    trail_hash: str
    rows: list[AuditEntryOut]
    reviewed_through: int | None
    review_current: bool


class StepPerformedOut(Out):
    """Who performed a manual step (printed name and user id), when, the meaning, the entry
    values and whether the signature still holds."""

    by_id: str
    by: str
    at: Timestamp
    meaning: str
    entry: dict[str, Any] | None
    signature_id: str
    signature_valid: bool | None
    deviation_id: str | None


class StepVerifiedOut(Out):
    """The second person's verification of a critical entry."""

    by_id: str
    by: str | None
    at: Timestamp | None
    meaning: str | None
    signature_id: str | None
    signature_valid: bool | None


class StepOut(Out):
    """A master-file step of a batch and what has happened to it."""

    position: int
    code: str
    title: str
    manual: bool
    critical: bool
    entry_fields: dict[str, str]
    status: str = Field(
        description="pending | recorded | performed | awaiting_verification | verified"
    )
    recorded_at: Timestamp | None = Field(description="A machine step: when it was recorded")
    excused_by_deviation: str | None = Field(description="The open deviation naming the step")
    performed: StepPerformedOut | None
    verified: StepVerifiedOut | None


class BatchDeviationOut(Out):
    id: str
    kind: str
    step: str | None
    status: str
    description: str
    opened_at: Timestamp
    opened_by: str


class ReviewStateOut(Out):
    """The latest audit-trail review of the batch, and whether rows were added since."""

    id: str
    reviewed_by_id: str
    reviewed_by: str
    reviewed_at: Timestamp
    rows: int
    last_audit_id: int
    trail_hash: str
    signature_id: str
    current: bool
    rows_since: int


class ReleaseBlockerOut(Out):
    """A reason a release would be refused now (the error it would be refused with)."""

    code: str
    field: str | None
    message: str


class RecordControlsOut(Out):
    """The batch-record controls of a batch: its steps, open deviations naming a step, the
    audit-trail review and what blocks release now."""

    batch_id: str
    batch_number: str
    status: str
    master_file: str = Field(description="code and version, e.g. 'PARA500 v2'")
    steps: list[StepOut]
    deviations: list[BatchDeviationOut]
    audit_trail_review: ReviewStateOut | None
    release_blockers: list[ReleaseBlockerOut]
    may_certify: bool


class DeviationOpenedOut(Out):
    """A deviation as opened."""

    id: str
    batch_id: str
    kind: str
    step: str | None
    description: str
    status: str
    opened_at: Timestamp


class QpAssignmentOut(Out):
    """A QP assigned (or once assigned) to certify a master file's batches."""

    master_file_code: str
    user_id: str
    active: bool
    assigned_at: Timestamp
    assigned_by: str
    reason: str
    unassigned_at: Timestamp | None
    unassigned_by: str | None


# --- the view shared by the API, the CLI and the batch page --------------------------------------
@shaped(RecordControlsOut)
def record_controls_view(
    application: App, uow: UnitOfWork, actor: Actor, batch_id: str
) -> dict[str, Any]:
    """The batch's master-file steps with their status and signatures, the open deviations
    naming a step, the latest audit-trail review, and why a release is blocked now (for the
    batch's signatory, the role its family names: also whether they are assigned to its master
    file, `may_certify`)."""
    records = application.quality.records
    batch = application.production.get(uow, batch_id)
    authorize(actor, Permission.BATCH_READ, site_id=batch.site_id)
    valid = records.signature_checks(uow, batch.id)
    excused = records.excused_steps(uow, batch.id)
    steps = []
    for s in application.production.step_states(uow, batch):
        signoff = s.signoff
        steps.append(
            {
                "position": s.position,
                "code": s.code,
                "title": s.title,
                "manual": s.manual,
                "critical": s.critical,
                "entry_fields": s.entry_fields,
                "status": s.status,
                "recorded_at": s.recorded_at,
                "excused_by_deviation": excused.get(s.code),
                "performed": None
                if signoff is None
                else {
                    "by_id": signoff.performed_by,
                    "by": signoff.performed_by_name,
                    "at": signoff.performed_at,
                    "meaning": signoff.performed_meaning,
                    "entry": signoff.entry,
                    "signature_id": signoff.signature_id,
                    "signature_valid": valid.get(signoff.signature_id),
                    "deviation_id": signoff.deviation_id,
                },
                "verified": None
                if signoff is None or signoff.verified_by is None
                else {
                    "by_id": signoff.verified_by,
                    "by": signoff.verified_by_name,
                    "at": signoff.verified_at,
                    "meaning": signoff.verified_meaning,
                    "signature_id": signoff.verify_signature_id,
                    "signature_valid": valid.get(signoff.verify_signature_id or ""),
                },
            }
        )
    state = records.review_state(uow, batch)
    review = state.review
    # the "not assigned" blocker is for whoever signs this batch: its family's signatory (a QP
    # for a medicine, the responsible person for a device), as QualityService.decide checks it
    signatory = application.quality.signatory_for(uow, batch)
    signs = application.quality.may_sign(actor, signatory)
    blockers = records.release_blockers(uow, actor if signs else None, batch, signatory)
    out: dict[str, Any] = to_jsonable(
        {
            "batch_id": batch.id,
            "batch_number": batch.batch_number,
            "status": batch.status,
            "master_file": f"{batch.master_file_code} v{batch.master_file_version}",
            "steps": steps,
            "deviations": [
                {
                    "id": d.id,
                    "kind": d.kind,
                    "step": d.step_code,
                    "status": d.status,
                    "description": d.description,
                    "opened_at": d.opened_at,
                    "opened_by": d.opened_by,
                }
                for d in application.quality.deviations(uow, batch.id)
            ],
            "audit_trail_review": None
            if review is None
            else {
                "id": review.id,
                "reviewed_by_id": review.reviewed_by,
                "reviewed_by": review.reviewed_by_name,
                "reviewed_at": review.reviewed_at,
                "rows": review.row_count,
                "last_audit_id": review.last_audit_id,
                "trail_hash": review.trail_hash,
                "signature_id": review.signature_id,
                "current": state.current,
                "rows_since": state.rows_since,
            },
            "release_blockers": [b.to_dict() for b in blockers],
            "may_certify": signs
            and application.master_files.is_assigned_qp(
                uow, batch.master_file_code, actor.user_id, signatory
            ),
        }
    )
    return out


class SignoffOut(Out):
    """A master-file step as signed: who performed it (printed name and user id), when, the
    meaning and the signature; the second person's verification of a critical entry."""

    id: str
    batch_id: str
    code: str
    position: int
    entry: dict[str, Any] | None
    performed_by: str
    performed_by_id: str
    performed_at: Timestamp
    performed_meaning: str
    signature_id: str
    deviation_id: str | None
    verified_by: str | None
    verified_by_id: str | None
    verified_at: Timestamp | None
    verified_meaning: str | None
    verify_signature_id: str | None


class AuditTrailReviewOut(Out):
    """A QP's signed review of a batch's audit trail, bound to the hash of its rows."""

    id: str
    batch_id: str
    reviewed_by: str
    reviewed_by_id: str
    reviewed_at: Timestamp
    rows: int
    last_audit_id: int
    trail_hash: str
    signature_id: str


@shaped(SignoffOut)
def signoff_dict(signoff: Any) -> dict[str, Any]:
    out: dict[str, Any] = to_jsonable(
        {
            "id": signoff.id,
            "batch_id": signoff.batch_id,
            "code": signoff.code,
            "position": signoff.position,
            "entry": signoff.entry,
            "performed_by": signoff.performed_by_name,
            "performed_by_id": signoff.performed_by,
            "performed_at": signoff.performed_at,
            "performed_meaning": signoff.performed_meaning,
            "signature_id": signoff.signature_id,
            "deviation_id": signoff.deviation_id,
            "verified_by": signoff.verified_by_name,
            "verified_by_id": signoff.verified_by,
            "verified_at": signoff.verified_at,
            "verified_meaning": signoff.verified_meaning,
            "verify_signature_id": signoff.verify_signature_id,
        }
    )
    return out


@shaped(QpAssignmentOut)
def qp_dict(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = to_jsonable(
        {
            "master_file_code": row.master_file_code,
            "user_id": row.user_id,
            "active": row.active,
            "assigned_at": row.assigned_at,
            "assigned_by": row.assigned_by,
            "reason": row.reason,
            "unassigned_at": row.unassigned_at,
            "unassigned_by": row.unassigned_by,
        }
    )
    return out


# --- routes ------------------------------------------------------------------------------------
@router.get("/batches/{batch_id}/steps", tags=["production"], response_model=RecordControlsOut)
def steps(
    batch_id: str,
    actor: Annotated[Actor, allowed(Permission.BATCH_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The master-file steps of the batch with who performed and verified each, the audit-trail
    review, and what blocks release now."""
    return record_controls_view(application, uow, actor, batch_id)


@router.post(
    "/batches/{batch_id}/steps/{code}/sign", tags=["production"], response_model=SignoffOut
)
def sign_step(
    batch_id: str,
    code: str,
    body: StepSignIn,
    actor: Annotated[Actor, allowed(Permission.BATCH_STEP_SIGN)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Perform a manual step: its entry values and the signer's e-signature ("performed by").
    409 `out_of_sequence` before an earlier step (unless an open deviation names it), 409
    `unverified_entry` while an earlier critical entry waits for its second person."""
    signoff = application.quality.records.sign_step(
        uow, actor, batch_id, code, entry=body.entry, **_signing(body)
    )
    return signoff_dict(signoff)


@router.post(
    "/batches/{batch_id}/steps/{code}/verify", tags=["production"], response_model=SignoffOut
)
def verify_step(
    batch_id: str,
    code: str,
    body: VerifyIn,
    actor: Annotated[Actor, allowed(Permission.BATCH_ENTRY_VERIFY)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """A second person verifies a critical entry ("verified by"); 409 `same_person` for its
    performer."""
    signoff = application.quality.records.verify_step(uow, actor, batch_id, code, **_signing(body))
    return signoff_dict(signoff)


@router.post(
    "/batches/{batch_id}/deviations",
    status_code=201,
    tags=["quality"],
    response_model=DeviationOpenedOut,
)
def open_deviation(
    batch_id: str,
    body: DeviationIn,
    actor: Annotated[Actor, allowed(Permission.DEVIATION_OPEN)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Open a deviation on a batch; naming a step lets later steps be signed before it."""
    dev = application.quality.records.open_deviation(
        uow, actor, batch_id, description=body.description, step=body.step
    )
    out: dict[str, Any] = to_jsonable(
        {
            "id": dev.id,
            "batch_id": dev.batch_id,
            "kind": dev.kind,
            "step": dev.step_code,
            "description": dev.description,
            "status": dev.status,
            "opened_at": dev.opened_at,
        }
    )
    return out


@router.post(
    "/batches/{batch_id}/audit-trail-review",
    status_code=201,
    tags=["quality"],
    response_model=AuditTrailReviewOut,
)
def review_audit_trail(
    batch_id: str,
    body: ReviewIn,
    actor: Annotated[Actor, allowed(Permission.AUDIT_TRAIL_REVIEW)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """A QP signs that the batch's audit trail was reviewed, bound to the hash of its rows."""
    review = application.quality.records.review_audit_trail(uow, actor, batch_id, **_signing(body))
    out: dict[str, Any] = to_jsonable(
        {
            "id": review.id,
            "batch_id": review.batch_id,
            "reviewed_by": review.reviewed_by_name,
            "reviewed_by_id": review.reviewed_by,
            "reviewed_at": review.reviewed_at,
            "rows": review.row_count,
            "last_audit_id": review.last_audit_id,
            "trail_hash": review.trail_hash,
            "signature_id": review.signature_id,
        }
    )
    return out


@router.get("/batches/{batch_id}/audit-trail", tags=["quality"], response_model=BatchTrailOut)
def batch_audit_trail(
    batch_id: str,
    actor: Annotated[Actor, allowed(Permission.AUDIT_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Every audit row about the batch (batch, job, order, release review, steps, deviations),
    their hash, and the latest review."""
    return batch_trail_view(application, uow, actor, batch_id)


@shaped(BatchTrailOut)
def batch_trail_view(
    application: App, uow: UnitOfWork, actor: Actor, batch_id: str
) -> dict[str, Any]:
    records = application.quality.records
    batch = application.production.get(uow, batch_id)
    authorize(actor, Permission.AUDIT_READ, site_id=batch.site_id)
    rows = records.trail(uow, batch)
    state = records.review_state(uow, batch)
    out: dict[str, Any] = to_jsonable(
        {
            "batch_id": batch.id,
            "batch_number": batch.batch_number,
            "trail_hash": records.trail_hash(batch.id, rows),
            "rows": [audit_entry_out(r) for r in rows],
            "reviewed_through": state.review.last_audit_id if state.review else None,
            "review_current": state.current,
        }
    )
    return out


@router.get("/master-files/{code}/qps", tags=["master files"], response_model=list[QpAssignmentOut])
def master_file_qps(
    code: str,
    actor: Annotated[Actor, allowed(Permission.MASTER_FILE_READ)],
    application: AppDep,
    uow: UowDep,
    active: bool | None = Query(default=None),
) -> list[dict[str, Any]]:
    """The QPs assigned to certify the master file's batches (with past assignments)."""
    rows = application.master_files.qps(uow, code)
    return [qp_dict(r) for r in rows if active is None or r.active == active]


@router.post(
    "/master-files/{code}/qps",
    status_code=201,
    tags=["master files"],
    response_model=ApprovalOut,
)
def assign_qp(
    code: str,
    body: AssignIn,
    actor: Annotated[Actor, allowed(Permission.MASTER_FILE_QP_ASSIGN)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Ask for a QP to certify the master file's batches (admin; a reason is required): a
    pending approval request, applied when another control-site administrator approves it
    (POST /api/v1/approvals/{id}/approve)."""
    request = application.master_files.assign_qp(uow, actor, code, body.user, reason=body.reason)
    return dict(to_jsonable(approval_dict(request)))


@router.post(
    "/master-files/{code}/qps/{user_id}/unassign",
    tags=["master files"],
    response_model=QpAssignmentOut,
)
def unassign_qp(
    code: str,
    user_id: str,
    body: UnassignIn,
    actor: Annotated[Actor, allowed(Permission.MASTER_FILE_QP_ASSIGN)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """End a QP's assignment; they can no longer certify the master file's batches."""
    return qp_dict(
        application.master_files.unassign_qp(uow, actor, code, user_id, reason=body.reason)
    )
