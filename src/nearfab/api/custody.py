"""/api/v1 routes for the chain of custody: EPCIS capture and query, verification at dispense,
undo of a dispense, trace, recall, the ledger check, and the follow-up of custody alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from nearfab.api.deps import AppDep, UowDep, allowed
from nearfab.api.schemas import PatientIdentifiersIn
from nearfab.bootstrap import App
from nearfab.common.errors import Refused
from nearfab.custody import (
    Container,
    EpcisInvalid,
    HandOver,
    InUsePeriod,
    StorageReading,
    UnitHold,
)
from nearfab.custody.schemas import (
    BackwardTraceOut,
    ContainerOut,
    CustodyAlertOut,
    DestroyOut,
    EpcisCaptureOut,
    EpcisQueryDocumentOut,
    ForwardTraceOut,
    HandOverOut,
    InUseOut,
    LedgerReportOut,
    RecallCreatedOut,
    StorageLogOut,
    UndoDispenseOut,
    UnitChainOut,
    UnitHoldOut,
    VerifyOut,
)
from nearfab.custody.services.alerts import alert_dict
from nearfab.identity import Actor, Permission, authorize_declared
from nearfab.replication import site_alerts
from nearfab.replication.schemas import SiteAlertOut
from nearfab.uow import UnitOfWork

router = APIRouter(prefix="/api/v1")


class VerifyIn(PatientIdentifiersIn):
    scan: str = Field(min_length=1, max_length=400, description="scanner output or element string")


class UndoIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class PackIn(BaseModel):
    unit_ids: list[str] = Field(min_length=1, max_length=1000)
    to_site_id: str = Field(min_length=1, max_length=64, description="site id or code")


class UnpackIn(BaseModel):
    at_site_id: str | None = Field(default=None, max_length=64, description="site id or code")


class DestroyIn(BaseModel):
    unit_ids: list[str] = Field(min_length=1, max_length=1000)
    site_id: str = Field(min_length=1, max_length=64, description="site id or code")
    reason: str = Field(min_length=1, max_length=1000)


class RecallIn(BaseModel):
    lot: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=1000)


class HandOverIn(BaseModel):
    scan: str = Field(max_length=400, description="the giving side's scan of the unit")
    from_step: str = Field(max_length=32, description="the step handing the unit over")
    to_step: str = Field(max_length=32, description="the step receiving it")
    received_scan: str = Field(max_length=400, description="the receiving side's scan")
    identifier: str | None = Field(
        default=None,
        max_length=64,
        description="the family's chain identifier as the giving side scanned it (required"
        " when the unit's family has one)",
    )
    received_identifier: str | None = Field(
        default=None,
        max_length=64,
        description="the chain identifier as the receiving side scanned it",
    )
    patient: str | None = Field(
        default=None,
        max_length=64,
        description="the patient's identifier as presented (the bedside check: the hand-over to"
        " the chain's last step of a family with a chain identifier)",
    )


class ReadingIn(BaseModel):
    read_at: datetime = Field(description="when it was read, with its time zone")
    value: float


class StorageLogIn(BaseModel):
    readings: list[ReadingIn] = Field(max_length=10_000)
    unit: str = Field(default="Cel", max_length=16, description="UCUM unit of the readings")


class PrepareIn(BaseModel):
    scan: str = Field(max_length=400, description="the scan of the unit being prepared")


class JudgeIn(BaseModel):
    decision: Literal["resume", "reject"]
    reason: str = Field(min_length=1, max_length=1000)


# --- EPCIS -----------------------------------------------------------------------------------
@router.post("/epcis/capture", tags=["custody"], status_code=201, response_model=EpcisCaptureOut)
def epcis_capture(
    document: Annotated[Any, Body()],
    actor: Annotated[Actor, allowed(Permission.EPCIS_CAPTURE)],
    application: AppDep,
    uow: UowDep,
) -> Any:
    """Store an EPCIS 2.0 JSON-LD document's events, all or none. 400 with every schema error
    when invalid; events already held (same event hash) are reported as duplicates."""
    try:
        result = application.custody_chain.epcis.capture(uow, actor, document)
    except EpcisInvalid as exc:
        return JSONResponse(status_code=400, content={"error": exc.to_dict(), "errors": exc.errors})
    return result.to_dict()


@router.get("/epcis/events", tags=["custody"], response_model=EpcisQueryDocumentOut)
def epcis_events(
    actor: Annotated[Actor, allowed(Permission.EPCIS_QUERY)],
    application: AppDep,
    uow: UowDep,
    epc: Annotated[str | None, Query(description="EPC URN or Digital Link")] = None,
    biz_step: Annotated[str | None, Query(alias="bizStep")] = None,
    disposition: str | None = None,
    ge_event_time: Annotated[datetime | None, Query(alias="GE_eventTime")] = None,
    lt_event_time: Annotated[datetime | None, Query(alias="LT_eventTime")] = None,
    location: Annotated[str | None, Query(description="readPoint or bizLocation")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """EPCISQueryDocument of the events matching every filter given, among those the caller
    may read: their sites' events; partners' captured events for the control site and
    auditors only."""
    return application.custody_chain.epcis.search_document(
        uow,
        actor,
        epc=epc,
        biz_step=biz_step,
        disposition=disposition,
        ge_time=ge_event_time,
        lt_time=lt_event_time,
        location=location,
        limit=limit,
    )


# --- verification at dispense ----------------------------------------------------------------
@router.post("/verify", tags=["custody"], response_model=VerifyOut)
def verify(
    body: VerifyIn,
    actor: Annotated[Actor, allowed(Permission.PACK_VERIFY)],
    application: AppDep,
) -> dict[str, Any]:
    """One status for a scanned pack: ok, wrong_patient, expired, recalled, not_released,
    rejected, already_dispensed, integrity_failure (its record differs from what the QP's
    release signed: tampered with), held (stopped in its chain of identity until a QP
    decides), in_use_expired (prepared too long ago) or unknown (suspected falsified), with
    details. A pack of
    a site the verifier does not serve (neither its making nor its ordering site) answers
    unknown, whatever the patient; every verification is audited."""
    # the unit of work is opened here, on the route's worker thread, not by the `UowDep`
    # dependency: a generator dependency enters and leaves on worker threads of its own (two
    # more thread hops a request on the busiest route)
    with application.uow() as uow:
        result = application.custody_chain.custody.verify(
            uow, actor, scan=body.scan, patient=body.presented()
        )
    return result.to_dict()


@router.post("/packs/{unit_id}/undo-dispense", tags=["custody"], response_model=UndoDispenseOut)
def undo_dispense(
    unit_id: str,
    body: UndoIn,
    actor: Annotated[Actor, allowed(Permission.DISPENSE_UNDO)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    unit = application.custody_chain.custody.undo_dispense(
        uow, actor, unit_id=unit_id, reason=body.reason
    )
    return {"unit_id": unit.id, "serial": unit.serial, "status": unit.status}


# --- containers and destruction ------------------------------------------------------------
def _container(application: App, uow: UnitOfWork, container: Container) -> dict[str, Any]:
    units = application.custody_chain.custody.units_in_container(uow, container.sscc)
    return {
        "sscc": container.sscc,
        "digital_link": f"https://id.gs1.org/00/{container.sscc}",
        "status": container.status,
        "from_site_id": container.from_site_id,
        "to_site_id": container.to_site_id,
        "units": [{"unit_id": u.id, "serial": u.serial} for u in units],
    }


def _site_id(application: App, uow: UnitOfWork, site: str) -> str:
    return application.network.get_site(uow, site).id


@router.post("/containers", tags=["custody"], status_code=201, response_model=ContainerOut)
def container_pack(
    body: PackIn,
    actor: Annotated[Actor, allowed(Permission.PACKS_MOVE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Pack released packs into a new shipping container (SSCC) for a site: EPCIS
    AggregationEvent ADD, bizStep packing."""
    to_site = _site_id(application, uow, body.to_site_id)
    container = application.custody_chain.custody.pack(
        uow, actor, unit_ids=body.unit_ids, to_site_id=to_site
    )
    with application.uow() as fresh:
        return _container(application, fresh, container)


@router.post("/containers/{sscc}/unpack", tags=["custody"], response_model=ContainerOut)
def container_unpack(
    sscc: str,
    body: UnpackIn,
    actor: Annotated[Actor, allowed(Permission.PACKS_MOVE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """On receipt: take the packs out of the container (AggregationEvent DELETE, unpacking)."""
    at_site = _site_id(application, uow, body.at_site_id) if body.at_site_id else None
    container = application.custody_chain.custody.unpack(uow, actor, sscc=sscc, at_site_id=at_site)
    with application.uow() as fresh:
        return _container(application, fresh, container)


@router.post("/packs/destroy", tags=["custody"], response_model=DestroyOut)
def packs_destroy(
    body: DestroyIn,
    actor: Annotated[Actor, allowed(Permission.PACKS_DESTROY)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Destroy rejected, recalled or expired packs (QP or pharmacist, reason required)."""
    site = _site_id(application, uow, body.site_id)
    event = application.custody_chain.custody.destroy(
        uow, actor, unit_ids=body.unit_ids, site_id=site, reason=body.reason
    )
    return {"event_id": event.event_hash, "unit_ids": body.unit_ids, "status": "destroyed"}


# --- trace and recall ------------------------------------------------------------------------
@router.get("/trace/units/{unit_id}", tags=["custody"], response_model=BackwardTraceOut)
def trace_unit(
    unit_id: str,
    actor: Annotated[Actor, allowed(Permission.TRACE_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return application.custody_chain.trace.unit(uow, actor, unit_id)


@router.get("/trace/lots/{lot}", tags=["custody"], response_model=ForwardTraceOut)
def trace_lot(
    lot: str,
    actor: Annotated[Actor, allowed(Permission.TRACE_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return application.custody_chain.trace.lot(uow, actor, lot)


@router.get("/trace/machines/{machine_id}", tags=["custody"], response_model=ForwardTraceOut)
def trace_machine(
    machine_id: str,
    start: datetime,
    end: datetime,
    actor: Annotated[Actor, allowed(Permission.TRACE_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return application.custody_chain.trace.machine(uow, actor, machine_id, start, end)


@router.get(
    "/trace/master-files/{code}/{version}", tags=["custody"], response_model=ForwardTraceOut
)
def trace_master_file(
    code: str,
    version: Annotated[int, Path(ge=1, le=2**31)],
    actor: Annotated[Actor, allowed(Permission.TRACE_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return application.custody_chain.trace.master_file(uow, actor, code, version)


@router.post("/recalls", tags=["custody"], status_code=201, response_model=RecallCreatedOut)
def recall_create(
    body: RecallIn,
    actor: Annotated[Actor, allowed(Permission.RECALL_CREATE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    chain = application.custody_chain
    recall = chain.recalls.create(uow, actor, lot=body.lot, reason=body.reason)
    with application.uow() as fresh:
        rows = chain.recalls.report_rows(fresh, actor, recall.id)
    return {"recall_id": recall.id, "lot": recall.scope_ref, "units": len(rows), "rows": rows}


@router.get(
    "/recalls/{recall_id}/report",
    tags=["custody"],
    responses={200: {"content": {"text/csv": {}, "application/pdf": {}}}},
)
def recall_report(
    recall_id: str,
    actor: Annotated[Actor, allowed(Permission.RECALL_REPORT_READ)],
    application: AppDep,
    uow: UowDep,
    format: Literal["csv", "pdf"] = "csv",
) -> Response:
    recalls = application.custody_chain.recalls
    if format == "pdf":
        return Response(recalls.report_pdf(uow, actor, recall_id), media_type="application/pdf")
    return Response(recalls.report_csv(uow, actor, recall_id), media_type="text/csv")


@router.get("/custody/ledger/verify", tags=["custody"], response_model=LedgerReportOut)
def ledger_verify(
    actor: Annotated[Actor, allowed(Permission.LEDGER_VERIFY)],
    application: AppDep,
    uow: UowDep,
    all_signatures: bool = False,
) -> dict[str, Any]:
    return application.custody_chain.ledger.verify(uow, all_signatures=all_signatures).to_dict()


# --- the chain of identity: hand-overs, storage log, holds, in-use period ------------------
def _at(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _hand_over(row: HandOver) -> dict[str, Any]:
    return {
        "id": row.id,
        "unit_id": row.unit_id,
        "from_step": row.from_step,
        "to_step": row.to_step,
        "outcome": row.outcome,
        "reason": row.reason,
        "handed_at": row.handed_at.isoformat(),
        "handed_by": row.handed_by,
        "giver_identifier": row.giver_identifier,
        "receiver_identifier": row.receiver_identifier,
        "patient_checked": row.patient_checked,
    }


def _hold(row: UnitHold) -> dict[str, Any]:
    return {
        "id": row.id,
        "unit_id": row.unit_id,
        "source": row.source,
        "reason": row.reason,
        "held_at": row.held_at.isoformat(),
        "held_by": row.held_by,
        "decision": row.decision,
        "decided_at": _at(row.decided_at),
        "decided_by": row.decided_by,
        "decision_reason": row.decision_reason,
    }


def _reading(row: StorageReading) -> dict[str, Any]:
    return {
        "id": row.id,
        "unit_id": row.unit_id,
        "value": row.value,
        "unit": row.unit,
        "read_at": row.read_at.isoformat(),
        "excursion": row.excursion,
        "reason": row.reason,
        "hold_id": row.hold_id,
    }


def _in_use(row: InUsePeriod) -> dict[str, Any]:
    return {
        "unit_id": row.unit_id,
        "prepared_at": row.prepared_at.isoformat(),
        "prepared_by": row.prepared_by,
        "use_by": _at(row.use_by),
    }


@router.post("/hand-overs", tags=["custody"], status_code=201, response_model=HandOverOut)
def hand_over(
    body: HandOverIn,
    actor: Annotated[Actor, allowed(Permission.PACKS_MOVE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Hand a unit from one step of its chain to the next, scanned by both sides (and the
    family's chain identifier on both sides, the patient at the bedside, when the family has
    one). A mismatch (another unit, a label that disagrees with the record, not the next step,
    another chain identifier or patient) is refused (409), the unit held until a QP judges it;
    a held unit is refused (409 `held`)."""
    row = application.custody.hand_over(
        uow,
        actor,
        scan=body.scan,
        from_step=body.from_step,
        to_step=body.to_step,
        received_scan=body.received_scan,
        identifier=body.identifier,
        received_identifier=body.received_identifier,
        patient=body.patient,
    )
    return _hand_over(row)


@router.post(
    "/packs/{unit_id}/storage-log", tags=["custody"], status_code=201, response_model=StorageLogOut
)
def storage_log(
    unit_id: str,
    body: StorageLogIn,
    actor: Annotated[Actor, allowed(Permission.READINGS_RECORD)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Storage log readings of a unit in storage or shipment, each judged by its family; an
    excursion is recorded and holds the unit until a QP judges it."""
    result = application.custody.log_storage(
        uow,
        actor,
        unit_ids=[unit_id],
        readings=[(r.read_at, r.value) for r in body.readings],
        unit=body.unit,
    )
    return {
        "readings": [_reading(r) for r in result.readings],
        "holds": [_hold(h) for h in result.holds],
    }


@router.post("/packs/{unit_id}/prepare", tags=["custody"], status_code=201, response_model=InUseOut)
def prepare(
    unit_id: str,
    body: PrepareIn,
    actor: Annotated[Actor, allowed(Permission.PACKS_MOVE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Record that the unit (scanned) was prepared for use: its in-use period starts."""
    return _in_use(application.custody.prepare(uow, actor, scan=body.scan, unit_id=unit_id))


@router.post("/holds/{hold_id}/judge", tags=["custody"], response_model=UnitHoldOut)
def judge_hold(
    hold_id: str,
    body: JudgeIn,
    actor: Annotated[Actor, allowed(Permission.HOLD_DECIDE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """A QP's judgement of a hold: resume the unit's chain, or reject it for good."""
    row = application.custody.judge_hold(
        uow, actor, hold_id=hold_id, decision=body.decision, reason=body.reason
    )
    return _hold(row)


@router.get("/packs/{unit_id}/chain", tags=["custody"], response_model=UnitChainOut)
def unit_chain(
    unit_id: str,
    actor: Annotated[Actor, allowed(Permission.TRACE_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The unit's chain of identity: hand-overs, holds, storage log and in-use period."""
    found = application.custody.unit_chain(uow, actor, unit_id)
    return {
        "unit_id": found.unit.id,
        "serial": found.unit.serial,
        "status": found.unit.status,
        "hand_overs": [_hand_over(r) for r in found.hand_overs],
        "holds": [_hold(h) for h in found.holds],
        "storage_log": [_reading(r) for r in found.storage_log],
        "in_use": _in_use(found.in_use) if found.in_use is not None else None,
    }


# --- custody alerts: their follow-up (docs/custody.md, "Following up an alert") -------------
class AlertStatusIn(BaseModel):
    status: str = Field(
        max_length=64,
        description="acknowledged, patient_contacted, pack_recovered, pack_not_recoverable, "
        "closed; acknowledged on a closed alert reopens it",
    )
    note: str = Field(
        default="",
        max_length=20_000,
        description="what was done (required but for the first acknowledgement; at most "
        "2,000 characters)",
    )
    outcome: str | None = Field(
        default=None,
        max_length=64,
        description="when closing: pack_recovered, pack_not_recoverable, no_action_needed",
    )
    expected_status: str | None = Field(
        default=None,
        max_length=64,
        description="the status the caller saw: refused (409 alert_changed) if it has moved",
    )


@router.get("/custody/alerts", tags=["custody"], response_model=list[CustodyAlertOut])
def custody_alerts(
    actor: Annotated[Actor, allowed(Permission.TRACE_READ)],
    application: AppDep,
    uow: UowDep,
    status: Annotated[str, Query(max_length=16, description="all, open or closed")] = "all",
) -> list[dict[str, Any]]:
    """The custody alerts of the caller's site (every site's for a grant that reaches the
    network), open ones first, then newest first, each with its follow-up and history."""
    return [alert_dict(a, actor) for a in application.custody.alerts(uow, actor, status=status)]


@router.get("/custody/site-alerts", tags=["custody"], response_model=list[SiteAlertOut])
def custody_site_alerts(
    actor: Annotated[Actor, allowed(Permission.TRACE_READ)],
    application: AppDep,
    uow: UowDep,
    status: Annotated[str, Query(max_length=16, description="all, open or closed")] = "all",
) -> list[dict[str, Any]]:
    """At the control node: the site nodes' custody alerts, each in the newest state its node
    sent (docs/replication.md, "Custody alerts across the network"), of the sites the caller
    reads, open ones first; elsewhere 409 `not_control_node` once the role is checked."""
    if application.remote_releases is None:
        authorize_declared(actor, Permission.TRACE_READ)
        raise Refused(
            "this node receives no site node alerts: only the control node of a replicated "
            "network does (docs/replication.md)",
            field="node",
            code="not_control_node",
        )
    return site_alerts(uow, actor, status=status)


@router.get("/custody/alerts/{alert_id}", tags=["custody"], response_model=CustodyAlertOut)
def custody_alert(
    alert_id: str,
    actor: Annotated[Actor, allowed(Permission.TRACE_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """One custody alert of the caller's site, with its follow-up and history."""
    return alert_dict(application.custody.alert(uow, actor, alert_id), actor)


@router.post("/custody/alerts/{alert_id}/status", tags=["custody"], response_model=CustodyAlertOut)
def custody_alert_status(
    alert_id: str,
    body: AlertStatusIn,
    actor: Annotated[Actor, allowed(Permission.DISPENSE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Record a step of an alert's follow-up (a pharmacist of the alert's site): acknowledge,
    patient contacted, pack recovered or not recoverable, close with its outcome, or reopen a
    closed alert (status acknowledged, the note giving the reason). Audited in the same
    transaction; a refusal names the field."""
    application.custody.update_alert(
        uow,
        actor,
        alert_id,
        status=body.status,
        note=body.note,
        outcome=body.outcome,
        expected_status=body.expected_status,
    )
    with application.uow() as fresh:
        return alert_dict(application.custody.alert(fresh, actor, alert_id), actor)
