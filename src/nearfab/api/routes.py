"""/api/v1 routes. Each one: authenticate, call one service, shape the answer."""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request, Response

from nearfab.api.deps import AppDep, UowDep, allowed, client_of, login_throttle
from nearfab.api.release import qp_decision
from nearfab.api.schemas import (
    DecisionIn,
    DispenseIn,
    FaultIn,
    LotIn,
    LotStatusIn,
    MachineIn,
    MachineStatusIn,
    PatientIdentificationPolicyIn,
    QualificationIn,
    ReasonIn,
    RunIn,
    SignIn,
    SigningPolicyIn,
    SiteIn,
    SiteStatusIn,
    TokenIn,
    TokenOut,
    TrainingIn,
)
from nearfab.api.security import throttled
from nearfab.bootstrap import App
from nearfab.common.canonical import to_jsonable
from nearfab.common.errors import NotFound
from nearfab.custody.schemas import DispenseOut
from nearfab.custody.services.scope import authorize_pack
from nearfab.identity import Actor, ESignatureIn, Permission, authorize_network, site_filter
from nearfab.identity.account_schemas import MeOut
from nearfab.identity.schemas import PatientIdentityOut
from nearfab.masterfiles.schemas import MasterFileOut, MasterFileSigningPolicyOut
from nearfab.materials.schemas import LotOut
from nearfab.network.schemas import (
    FaultOut,
    MachineOut,
    MachineStatusOut,
    NetworkSiteOut,
    QualificationOut,
    QualificationRevokedOut,
    SiteOut,
    SitePatientIdentificationOut,
    SiteSigningPolicyOut,
    SiteStatusOut,
    TrainingOut,
)
from nearfab.orders.schemas import OrderRowOut, OrderStatusOut, SubmittedOrdersOut
from nearfab.production import Fault
from nearfab.production.schemas import (
    BatchAbandonedOut,
    BatchStartedOut,
    BuildAwaitingOut,
    RunSummaryOut,
    SignedTicketOut,
)
from nearfab.quality.schemas import PendingReviewOut, ReviewOut
from nearfab.readmodels import (
    batch_view,
    network_view,
    order_view,
    pending_view,
)
from nearfab.readschemas import BatchOut, OrderOut
from nearfab.scheduling.schemas import JobOut
from nearfab.uow import UnitOfWork

router = APIRouter(prefix="/api/v1")


def _row(obj: Any, *fields: str) -> dict[str, Any]:
    row: dict[str, Any] = to_jsonable({f: getattr(obj, f) for f in fields})
    return row


# --- identity --------------------------------------------------------------------------------
@router.post("/auth/token", response_model=TokenOut, tags=["identity"])
def token(body: TokenIn, request: Request, application: AppDep, uow: UowDep) -> TokenOut:
    """Exchange a username and password (and the TOTP code, when enrolled) for a bearer token:
    an API session with an idle timeout and an absolute lifetime. Five failures for one
    username from one client within 5 minutes hold further attempts back (429); five in a row
    from anywhere lock the account (`account_locked`). An expired or temporary password answers
    403 `password_expired` (POST /api/v1/auth/password)."""
    throttle, client = login_throttle(request), client_of(request)
    with throttled(throttle, body.username, client):
        value, user = application.users.issue_token(
            uow, body.username, body.password, totp=body.totp, client=client
        )
    return TokenOut(access_token=value, user_id=user.id, roles=list(user.roles))


@router.get("/me", tags=["identity"], response_model=MeOut)
def me(actor: Annotated[Actor, allowed(Permission.PROFILE_READ)]) -> dict[str, Any]:
    return {
        "user_id": actor.user_id,
        "username": actor.username,
        "name": actor.full_name,
        "roles": list(actor.roles),
        "site_id": actor.site_id,
    }


# GET /audit (review, filters, pagination) lives in api/audit.py


# --- network ---------------------------------------------------------------------------------
@router.get("/network", tags=["network"], response_model=list[NetworkSiteOut])
def network(
    actor: Annotated[Actor, allowed(Permission.NETWORK_READ)], application: AppDep, uow: UowDep
) -> list[dict[str, Any]]:
    """Sites with their machines and states."""
    return network_view(application, uow)


@router.post("/sites", status_code=201, tags=["network"], response_model=SiteOut)
def create_site(
    body: SiteIn,
    actor: Annotated[Actor, allowed(Permission.SITE_CREATE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    site = application.network.create_site(
        uow, actor, code=body.code, name=body.name, kind=body.kind
    )
    return _row(site, "id", "code", "name", "kind", "status")


@router.post("/sites/{site_id}/status", tags=["network"], response_model=SiteStatusOut)
def site_status(
    site_id: str,
    body: SiteStatusIn,
    actor: Annotated[Actor, allowed(Permission.SITE_STATUS)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    site = application.network.transition_site(
        uow,
        actor,
        site_id,
        body.status,
        reason=body.reason,
        regulatory_reference=body.regulatory_reference,
    )
    return _row(site, "id", "code", "status", "regulatory_reference")


@router.post(
    "/sites/{site_id}/signing-policy", tags=["network"], response_model=SiteSigningPolicyOut
)
def site_signing_policy(
    site_id: str,
    body: SigningPolicyIn,
    actor: Annotated[Actor, allowed(Permission.SIGNING_POLICY)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Whether signatures on this site's records need a TOTP code (admin or QP; audited)."""
    site = application.network.set_signing_policy(
        uow, actor, site_id, totp_for_signing=body.totp_for_signing, reason=body.reason
    )
    return _row(site, "id", "code", "totp_for_signing")


@router.post(
    "/sites/{site_id}/patient-identification",
    tags=["network"],
    response_model=SitePatientIdentificationOut,
)
def site_patient_identification(
    site_id: str,
    body: PatientIdentificationPolicyIn,
    actor: Annotated[Actor, allowed(Permission.SITE_CREATE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Whether this site's hand-overs need the date of birth as a second identifier, and the
    FHIR system of its hospital numbers (network admin; audited)."""
    site = application.network.set_patient_identification(
        uow,
        actor,
        site_id,
        birth_date_required=body.birth_date_required,
        mrn_system=body.mrn_system,
        reason=body.reason,
    )
    return _row(site, "id", "code", "birth_date_required", "mrn_system")


@router.post("/machines", status_code=201, tags=["network"], response_model=MachineOut)
def create_machine(
    body: MachineIn,
    actor: Annotated[Actor, allowed(Permission.MACHINE_REGISTER)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    m = application.network.register_machine(uow, actor, **body.model_dump())
    return _row(m, "id", "site_id", "name", "machine_type", "firmware", "status")


@router.post(
    "/machines/{machine_id}/qualifications",
    status_code=201,
    tags=["network"],
    response_model=QualificationOut,
)
def qualify(
    machine_id: str,
    body: QualificationIn,
    actor: Annotated[Actor, allowed(Permission.MACHINE_QUALIFY)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    q = application.network.qualify_machine(
        uow, actor, machine_id, body.master_file_code, valid_until=body.valid_until
    )
    return _row(q, "machine_id", "master_file_code", "qualified_at", "valid_until")


@router.post("/machines/{machine_id}/status", tags=["network"], response_model=MachineStatusOut)
def machine_status(
    machine_id: str,
    body: MachineStatusIn,
    actor: Annotated[Actor, allowed(Permission.MACHINE_STATE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Maintenance, back to available, or retired; with the reason."""
    m = application.network.set_machine_status(
        uow, actor, machine_id, body.status, reason=body.reason
    )
    return _row(m, "id", "name", "status")


@router.post(
    "/machines/{machine_id}/qualifications/{code}/revoke",
    tags=["network"],
    response_model=QualificationRevokedOut,
)
def revoke_qualification(
    machine_id: str,
    code: str,
    body: ReasonIn,
    actor: Annotated[Actor, allowed(Permission.MACHINE_QUALIFICATION_REVOKE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    q = application.network.revoke_qualification(uow, actor, machine_id, code, reason=body.reason)
    return _row(q, "machine_id", "master_file_code", "revoked")


@router.post(
    "/machines/{machine_id}/faults", status_code=202, tags=["network"], response_model=FaultOut
)
def inject_fault(
    machine_id: str,
    body: FaultIn,
    actor: Annotated[Actor, allowed(Permission.FAULT_INJECT)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Simulated machines only: inject a fault into the digital twin."""

    # a test of the whole network's reactions (alarms, replanning), never a site's own tool
    authorize_network(actor, Permission.FAULT_INJECT)
    machine = application.network.get_machine(uow, machine_id)
    fault = Fault(kind=body.kind, severity=body.severity, from_unit=body.from_unit)
    application.fleet.inject_fault(machine, fault)
    return {"machine_id": machine.id, "fault": fault.describe()}


@router.post(
    "/users/{user_id}/training", status_code=201, tags=["network"], response_model=TrainingOut
)
def training(
    user_id: str,
    body: TrainingIn,
    actor: Annotated[Actor, allowed(Permission.TRAINING_RECORD)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    t = application.network.record_training(
        uow, actor, user_id, body.master_file_code, valid_until=body.valid_until
    )
    return _row(t, "user_id", "master_file_code", "trained_at", "valid_until")


@router.post("/network/run", tags=["network"], response_model=RunSummaryOut)
def run(
    body: RunIn, actor: Annotated[Actor, allowed(Permission.NETWORK_RUN)], application: AppDep
) -> dict[str, Any]:
    """Advance the simulated machines until only people can move things on."""
    authorize_network(actor, Permission.NETWORK_RUN)  # every site's machines move
    summary = application.runner.run_until_idle() if body.until_idle else application.runner.step()
    return summary.to_dict()


# --- master files and materials --------------------------------------------------------------
MF_FIELDS = (
    "id",
    "code",
    "version",
    "title",
    "product_family",
    "status",
    "accepted_codes",
    "design_envelope",
    "process_parameters",
    "cqa_specs",
    "release_rule",
    "material_code",
    "shelf_life_days",
    "storage",
    "gtin",
    "units_per_pack",
    "allowed_site_ids",
    "comparability",
    "dose_rule",
    "approved_at",
    "approval_signature_id",
    "effective_from",
)


@router.get("/patients/{patient_id}/identity", tags=["orders"], response_model=PatientIdentityOut)
def patient_identity(
    patient_id: str,
    actor: Annotated[Actor, allowed(Permission.PATIENT_IDENTITY_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Identifying data (name, NHS number, birth date) for a patient of the actor's site, for
    the roles that need it (pharmacist, clinician); every read is itself audited."""
    return application.orders.patient_identity(uow, actor, patient_id)


@router.get("/master-files", tags=["master files"], response_model=list[MasterFileOut])
def master_files(
    actor: Annotated[Actor, allowed(Permission.MASTER_FILE_READ)], application: AppDep, uow: UowDep
) -> list[dict[str, Any]]:
    return [_row(mf, *MF_FIELDS) for mf in application.master_files.list_all(uow)]


@router.post("/master-files", status_code=201, tags=["master files"], response_model=MasterFileOut)
def draft_master_file(
    actor: Annotated[Actor, allowed(Permission.MASTER_FILE_DRAFT)],
    application: AppDep,
    uow: UowDep,
    body: dict[str, Any] = Body(),
) -> dict[str, Any]:
    return _row(application.master_files.draft(uow, actor, body), *MF_FIELDS)


@router.post("/master-files/{mf_id}/approve", tags=["master files"], response_model=MasterFileOut)
def approve_master_file(
    mf_id: str,
    body: SignIn,
    request: Request,
    actor: Annotated[Actor, allowed(Permission.MASTER_FILE_APPROVE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    with throttled(login_throttle(request), actor.username, client_of(request)):
        mf = application.master_files.approve(
            uow,
            actor,
            mf_id,
            password=body.password,
            meaning=body.meaning,
            username=body.username,
            totp=body.totp,
        )
    return _row(mf, *MF_FIELDS)


@router.post("/master-files/{mf_id}/effective", tags=["master files"], response_model=MasterFileOut)
def effective_master_file(
    mf_id: str,
    actor: Annotated[Actor, allowed(Permission.MASTER_FILE_EFFECTIVE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return _row(application.master_files.make_effective(uow, actor, mf_id), *MF_FIELDS)


LOT_FIELDS = (
    "id",
    "lot_number",
    "material_code",
    "description",
    "site_id",
    "supplier",
    "expiry",
    "status",
    "quantity_g",
    "attributes",
    "assay_pct",
)


@router.post(
    "/master-files/{mf_id}/signing-policy",
    tags=["master files"],
    response_model=MasterFileSigningPolicyOut,
)
def master_file_signing_policy(
    mf_id: str,
    body: SigningPolicyIn,
    actor: Annotated[Actor, allowed(Permission.SIGNING_POLICY)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Whether signatures on this product's records need a TOTP code (admin or QP; audited)."""
    mf = application.master_files.set_signing_policy(
        uow, actor, mf_id, totp_for_signing=body.totp_for_signing, reason=body.reason
    )
    return _row(mf, "id", "code", "version", "totp_for_signing")


@router.post("/master-files/{mf_id}/withdraw", tags=["master files"], response_model=MasterFileOut)
def withdraw_master_file(
    mf_id: str,
    body: ReasonIn,
    actor: Annotated[Actor, allowed(Permission.MASTER_FILE_WITHDRAW)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return _row(
        application.master_files.withdraw(uow, actor, mf_id, reason=body.reason), *MF_FIELDS
    )


@router.get("/material-lots", tags=["materials"], response_model=list[LotOut])
def lots(
    actor: Annotated[Actor, allowed(Permission.LOT_READ)], application: AppDep, uow: UowDep
) -> list[dict[str, Any]]:
    return [
        _row(lot, *LOT_FIELDS)
        for lot in application.materials.list_lots(uow, site_filter(actor, Permission.LOT_READ))
    ]


@router.post("/material-lots", status_code=201, tags=["materials"], response_model=LotOut)
def receive_lot(
    body: LotIn,
    actor: Annotated[Actor, allowed(Permission.LOT_RECEIVE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return _row(application.materials.receive_lot(uow, actor, **body.model_dump()), *LOT_FIELDS)


@router.post("/material-lots/{lot_id}/status", tags=["materials"], response_model=LotOut)
def lot_status(
    lot_id: str,
    body: LotStatusIn,
    actor: Annotated[Actor, allowed(Permission.LOT_STATUS)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    lot = application.materials.set_status(uow, actor, lot_id, body.status, reason=body.reason)
    return _row(lot, *LOT_FIELDS)


# --- orders and production -------------------------------------------------------------------
@router.post(
    "/orders",
    status_code=201,
    tags=["orders"],
    response_model=SubmittedOrdersOut,
    responses={
        409: {"description": "the prescription was already received (names its order)"},
        413: {"description": "the body is larger than a prescription may be"},
    },
)
def submit_order(
    actor: Annotated[Actor, allowed(Permission.ORDER_SUBMIT)],
    application: AppDep,
    uow: UowDep,
    body: dict[str, Any] = Body(description="FHIR R4 MedicationRequest or Bundle"),
    site: Annotated[
        str | None,
        Query(
            max_length=64,
            description="the ordering site (id or code); else the prescriber's organisation, "
            "else the submitting user's own point-of-care site",
        ),
    ] = None,
    resubmit_of: Annotated[
        str | None,
        Query(
            max_length=64,
            description="the cancelled order this prescription is submitted again for",
        ),
    ] = None,
) -> dict[str, Any]:
    """Take a FHIR prescription in: all of its MedicationRequests or none. Every order belongs
    to a site; the same prescription (identifier and patient) is taken once
    (docs/prescriptions.md)."""
    orders = application.orders.submit(uow, actor, body, site_id=site, resubmit_of=resubmit_of)
    return {
        "orders": [
            _row(
                o,
                "id",
                "status",
                "site_id",
                "resubmit_of",
                "medication",
                "dose_value",
                "dose_unit",
                "units",
                "patient_group",
                "design",
                "stop_reason",
            )
            for o in orders
        ]
    }


@router.get("/orders", tags=["orders"], response_model=list[OrderRowOut])
def list_orders(
    actor: Annotated[Actor, allowed(Permission.ORDER_READ)],
    application: AppDep,
    uow: UowDep,
    status: str | None = None,
    prescription_id: Annotated[
        str | None,
        Query(
            max_length=255,
            description="the prescription ID (MedicationRequest identifier, as on a paper "
            "copy): the orders of that prescription (audited)",
        ),
    ] = None,
) -> list[dict[str, Any]]:
    return [
        _row(
            o,
            "id",
            "status",
            "medication",
            "dose_value",
            "dose_unit",
            "units",
            "master_file_code",
            "created_at",
            "need_by",
        )
        for o in application.orders.list_orders(
            uow, status, actor=actor, prescription_id=prescription_id
        )
    ]


@router.get("/orders/{order_id}", tags=["orders"], response_model=OrderOut)
def get_order(
    order_id: str,
    actor: Annotated[Actor, allowed(Permission.ORDER_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The order with its jobs, batches, release, packs and timeline."""
    return order_view(application, uow, actor, order_id)


@router.post("/orders/{order_id}/schedule", status_code=201, tags=["orders"], response_model=JobOut)
def schedule(
    order_id: str,
    actor: Annotated[Actor, allowed(Permission.ORDER_SCHEDULE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    job = application.scheduling.schedule(uow, actor, order_id)
    return _row(
        job, "id", "order_id", "machine_id", "site_id", "planned_start", "planned_finish", "status"
    )


@router.post("/orders/{order_id}/cancel", tags=["orders"], response_model=OrderStatusOut)
def cancel_order(
    order_id: str,
    body: ReasonIn,
    actor: Annotated[Actor, allowed(Permission.ORDER_CANCEL)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Cancel an order that has not started (a scheduled one together with its job)."""
    order = application.scheduling.cancel_order(uow, actor, order_id, reason=body.reason)
    return _row(order, "id", "status")


@router.post("/orders/{order_id}/unschedule", tags=["orders"], response_model=OrderStatusOut)
def unschedule_order(
    order_id: str,
    body: ReasonIn,
    actor: Annotated[Actor, allowed(Permission.ORDER_SCHEDULE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Take a scheduled order off its machine before it starts (the job is cancelled)."""
    order = application.scheduling.unschedule(uow, actor, order_id, reason=body.reason)
    return _row(order, "id", "status")


@router.post("/orders/{order_id}/replan", tags=["orders"], response_model=OrderStatusOut)
def replan_order(
    order_id: str,
    body: ReasonIn,
    actor: Annotated[Actor, allowed(Permission.ORDER_REPLAN)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """A failed order goes back to planning (a new batch is made from scratch)."""
    return _row(application.orders.replan(uow, actor, order_id, reason=body.reason), "id", "status")


@router.post("/jobs/{job_id}/ticket", tags=["production"], response_model=SignedTicketOut)
def ticket(
    job_id: str,
    actor: Annotated[Actor, allowed(Permission.TICKET_ISSUE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The control site signs the job ticket (Ed25519)."""
    return application.production.issue_ticket(uow, actor, job_id).to_dict()


class BuildApprovalIn(ESignatureIn):
    """The control site's approval of one build, e-signed; without a meaning the signature
    states "<site kind> build approval"."""

    meaning: str = ""


@router.get("/builds/awaiting-approval", tags=["production"], response_model=list[BuildAwaitingOut])
def builds_awaiting_approval(
    actor: Annotated[Actor, allowed(Permission.RELEASE_QUEUE_READ)],
    application: AppDep,
    uow: UowDep,
) -> list[Any]:
    """Planned builds whose product's family wants the control site's approval at their site."""
    return [row.to_dict() for row in application.production.builds_awaiting_approval(uow, actor)]


@router.post("/jobs/{job_id}/build-approval", tags=["production"], response_model=SignedTicketOut)
def approve_build(
    job_id: str,
    body: BuildApprovalIn,
    request: Request,
    actor: Annotated[Actor, allowed(Permission.BUILD_APPROVE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The control site's e-signed approval of a build, which signs its job ticket (the
    ticket's `build_approval` names the signature); throttled like a login."""
    with throttled(login_throttle(request), actor.username, client_of(request)):
        ticket = application.production.approve_build(
            uow,
            actor,
            job_id,
            password=body.password,
            meaning=body.meaning,
            username=body.username,
            totp=body.totp,
        )
    return ticket.to_dict()


@router.post("/jobs/{job_id}/start", tags=["production"], response_model=BatchStartedOut)
def start(
    job_id: str,
    actor: Annotated[Actor, allowed(Permission.BATCH_START)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """An operator starts a ticketed job: gate checks, material drawn, batch record opened."""
    batch = application.production.start_batch(uow, actor, job_id)
    return _row(batch, "id", "batch_number", "status", "machine_id", "material_lot_number")


@router.post("/batches/{batch_id}/abandon", tags=["production"], response_model=BatchAbandonedOut)
def abandon(
    batch_id: str,
    body: ReasonIn,
    actor: Annotated[Actor, allowed(Permission.BATCH_ABANDON)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Close a batch whose machine will never report: failed, with the reason on record."""
    batch = application.production.abandon(uow, actor, batch_id, reason=body.reason)
    return _row(batch, "id", "batch_number", "status", "failure_reason")


@router.get("/batches/{batch_id}", tags=["production"], response_model=BatchOut)
def get_batch(
    batch_id: str,
    actor: Annotated[Actor, allowed(Permission.BATCH_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The electronic batch record."""
    return batch_view(application, uow, actor, batch_id)


# --- release, labels, dispense ---------------------------------------------------------------
@router.get("/release/pending", tags=["quality"], response_model=list[PendingReviewOut])
def pending(
    actor: Annotated[Actor, allowed(Permission.RELEASE_QUEUE_READ)],
    application: AppDep,
    uow: UowDep,
) -> list[dict[str, Any]]:
    return pending_view(application, uow, actor)


@router.post("/batches/{batch_id}/decision", tags=["quality"], response_model=ReviewOut)
def decide(
    batch_id: str,
    body: DecisionIn,
    request: Request,
    actor: Annotated[Actor, allowed(Permission.RELEASE_DECIDE, gate=False)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """QP release or rejection, signed with the QP's password and the stated meaning; the
    first signing of a session also needs `username`, and `totp` when the site demands it."""
    return qp_decision(application, uow, actor, request, batch_id, body, decision=body.decision)


def _pack_in_scope(application: App, uow: UnitOfWork, actor: Actor, unit_id: str) -> None:
    """A pack's label is shown to the making site's and the ordering site's staff (the check
    the web label page makes too)."""
    authorize_pack(uow, actor, unit_id, Permission.TRACE_READ)


@router.get(
    "/packs/{unit_id}/label",
    tags=["custody"],
    responses={200: {"content": {"image/png": {}, "application/pdf": {}}}},
)
def pack_label(
    unit_id: str,
    actor: Annotated[Actor, allowed(Permission.TRACE_READ)],
    application: AppDep,
    uow: UowDep,
    format: Literal["png", "pdf"] = "png",
) -> Response:
    from nearfab.custody import render_label

    _pack_in_scope(application, uow, actor, unit_id)
    contents = application.custody.labels(uow, unit_id)
    if not contents:
        raise NotFound(f"no label for {unit_id!r}", field="unit_id")
    media = "image/png" if format == "png" else "application/pdf"
    return Response(render_label(contents[0], format), media_type=media)


@router.get(
    "/packs/{unit_id}/datamatrix",
    tags=["custody"],
    responses={200: {"content": {"image/svg+xml": {}, "image/png": {}}}},
)
def pack_datamatrix(
    unit_id: str,
    actor: Annotated[Actor, allowed(Permission.TRACE_READ)],
    application: AppDep,
    uow: UowDep,
    format: Literal["svg", "png"] = "svg",
) -> Response:
    """The pack's GS1 DataMatrix symbol alone (ECC 200, FNC1), as SVG or PNG, for label
    printers driven by other software."""
    from nearfab.custody import datamatrix_image, datamatrix_svg

    _pack_in_scope(application, uow, actor, unit_id)
    contents = application.custody.labels(uow, unit_id)
    if not contents:
        raise NotFound(f"no label for {unit_id!r}", field="unit_id")
    data = contents[0].identifier.datamatrix_data()
    if format == "svg":
        return Response(datamatrix_svg(data), media_type="image/svg+xml")
    out = io.BytesIO()
    datamatrix_image(data).save(out, format="PNG")
    return Response(out.getvalue(), media_type="image/png")


@router.post("/dispense", tags=["custody"], response_model=DispenseOut)
def dispense(
    body: DispenseIn,
    actor: Annotated[Actor, allowed(Permission.DISPENSE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Check a scanned pack against the patient, identified by NHS number, hospital number
    (MRN), wristband scan, prescription ID or pseudonym (and birth date where the site requires
    it); record the hand-over or refuse with why. The answer's `patient` says how the patient
    was identified, with name and birth date for a role that may read identity."""
    result = application.custody.dispense(uow, actor, scan=body.scan, patient=body.presented())
    match = result.patient_match
    return {
        "dispense_id": result.dispense.id,
        "unit_id": result.unit.id,
        "serial": result.unit.serial,
        "status": result.unit.status,
        "order_complete": result.order_complete,
        "patient": match.to_dict() if match is not None else None,
    }
