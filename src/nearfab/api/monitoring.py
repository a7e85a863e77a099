"""/api/v1 routes for telemetry, SPC/MSPC models, control-chart data and alarms."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from nearfab.api.deps import AppDep, UowDep, allowed, attachment, client_of, login_throttle
from nearfab.api.security import throttled
from nearfab.bootstrap import App
from nearfab.common.canonical import to_jsonable
from nearfab.common.errors import Forbidden
from nearfab.identity import (
    Actor,
    ESignatureIn,
    Permission,
    can,
    is_network_wide,
)
from nearfab.monitoring import alarm_dict, model_dict
from nearfab.monitoring.schemas import (
    AlarmOut,
    CapabilityOut,
    ContributionsOut,
    ModelDetailOut,
    ModelOut,
    MspcChartOut,
    RunChartsOut,
)
from nearfab.telemetry.schemas import (
    DeadLetterOut,
    GapOut,
    ReadingsOut,
    RetentionOut,
    SeriesOut,
    TelemetryMachineOut,
)
from nearfab.uow import UnitOfWork

router = APIRouter(prefix="/api/v1")


class TrainIn(BaseModel):
    kind: Literal["spc", "mspc", "batch"]
    master_file_code: str = Field(min_length=1, max_length=64)
    machine_type: str = Field(min_length=1, max_length=64)
    runs: list[str] | None = Field(
        default=None, description="qualified runs (job ids); all released runs when omitted"
    )
    alpha: float = Field(default=0.99, gt=0.5, lt=1)
    components: int | None = Field(default=None, ge=1, le=1000)
    grid_points: int = Field(
        default=50, ge=5, le=1000, description="batch models: points of elapsed time per run"
    )
    fill: Literal["zero", "current"] = Field(
        default="zero", description="batch models: how a running batch's future is filled"
    )


class ApproveIn(ESignatureIn):  # the one e-signature input; only the meaning has a default
    meaning: str = "QP approval of monitoring model"


class NoteIn(BaseModel):
    note: str


class CloseIn(BaseModel):
    disposition: Literal["no_impact", "assignable_cause_fixed", "deviation_raised", "false_alarm"]
    note: str


class RetentionIn(BaseModel):
    older_than_days: int = Field(
        ge=30, le=36_500, description="raw readings older than this are thinned"
    )
    bucket_s: int = Field(default=60, ge=1, le=86_400)
    reason: str


def _in_scope(
    application: App,
    uow: UnitOfWork,
    actor: Actor,
    permission: Permission,
    *,
    machine_id: str | None = None,
    run: str | None = None,
) -> None:
    """Telemetry and charts are a site's records: site staff name a machine or run of their
    own site; control-site staff and auditors see every site."""
    if is_network_wide(actor):
        return
    if machine_id is None and run is None:
        raise Forbidden(
            "staff of a site read telemetry by machine or run of their own site",
            field="machine_id",
            code="other_site",
        )
    # the same service-level checks the monitoring pages make
    if machine_id is not None:
        application.monitoring.authorize_machine(uow, actor, machine_id, permission)
    if run is not None:
        application.monitoring.authorize_run(uow, actor, run, permission)


# --- telemetry -------------------------------------------------------------------------------
@router.get("/telemetry/machines", tags=["telemetry"], response_model=list[TelemetryMachineOut])
def telemetry_machines(
    actor: Annotated[Actor, allowed(Permission.TELEMETRY_READ)], application: AppDep, uow: UowDep
) -> list[dict[str, Any]]:
    """Each machine's telemetry session: online, PackML state, current run, last message."""
    return [
        to_jsonable(
            {
                "machine_id": m.machine_id,
                "site_id": m.site_id,
                "online": m.online,
                "state": m.state,
                "run": m.run,
                "session": m.bd_seq,
                "last_seq": m.high_water,
                "firmware": m.firmware,
                "metrics": m.metrics,
                "birth_at": m.birth_at,
                "last_seen_at": m.last_seen_at,
            }
        )
        for m in application.telemetry.machines(uow)
        if can(actor, Permission.TELEMETRY_READ, site_id=m.site_id)
    ]


@router.get("/telemetry/series", tags=["telemetry"], response_model=list[SeriesOut])
def telemetry_series(
    actor: Annotated[Actor, allowed(Permission.TELEMETRY_READ)],
    application: AppDep,
    uow: UowDep,
    machine_id: str | None = None,
    run: str | None = None,
) -> list[dict[str, Any]]:
    _in_scope(application, uow, actor, Permission.TELEMETRY_READ, machine_id=machine_id, run=run)
    return [
        {"machine_id": s.machine_id, "run": s.run, "metric": s.metric, "unit": s.unit}
        for s in application.telemetry.series(uow, machine_id=machine_id, run=run)
    ]


@router.get("/telemetry/readings", tags=["telemetry"], response_model=ReadingsOut)
def telemetry_readings(
    actor: Annotated[Actor, allowed(Permission.TELEMETRY_READ)],
    application: AppDep,
    uow: UowDep,
    metric: str = Query(),
    machine_id: str | None = None,
    run: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    max_points: int | None = Query(default=None, ge=2, le=100_000),
) -> dict[str, Any]:
    """One metric over time; with `max_points` the answer is bucketed (mean, min, max)."""
    _in_scope(application, uow, actor, Permission.TELEMETRY_READ, machine_id=machine_id, run=run)
    data = application.telemetry.query(
        uow,
        metric=metric,
        machine_id=machine_id,
        run=run,
        start=start,
        end=end,
        max_points=max_points,
    )
    return {
        "machine_id": data.machine_id,
        "run": data.run,
        "metric": data.metric,
        "unit": data.unit,
        "downsampled": data.downsampled,
        "points": [
            {"at": p.at.isoformat(), "value": p.value, "min": p.low, "max": p.high, "n": p.n}
            for p in data.points
        ],
    }


@router.get("/telemetry/export.csv", tags=["telemetry"], response_class=Response)
def telemetry_csv(
    actor: Annotated[Actor, allowed(Permission.TELEMETRY_READ)],
    application: AppDep,
    uow: UowDep,
    machine_id: str | None = None,
    run: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Response:
    _in_scope(application, uow, actor, Permission.TELEMETRY_READ, machine_id=machine_id, run=run)
    out = io.StringIO()
    application.telemetry.export_csv(uow, out, machine_id=machine_id, run=run, start=start, end=end)
    name = run or machine_id or "telemetry"
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers=attachment(f"{name}.csv"),
    )


@router.get("/telemetry/dead-letters", tags=["telemetry"], response_model=list[DeadLetterOut])
def dead_letters(
    actor: Annotated[Actor, allowed(Permission.DEAD_LETTERS_READ)],
    application: AppDep,
    uow: UowDep,
    limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """Messages that could not be stored, newest first, with the reason."""
    return [
        to_jsonable(
            {
                "id": d.id,
                "received_at": d.received_at,
                "topic": d.topic,
                "machine_id": d.machine_id,
                "code": d.code,
                "reason": d.reason,
                "payload": d.payload,
            }
        )
        for d in application.telemetry.dead_letters(uow, limit=limit)
    ]


@router.get("/telemetry/gaps", tags=["telemetry"], response_model=list[GapOut])
def gaps(
    actor: Annotated[Actor, allowed(Permission.TELEMETRY_READ)],
    application: AppDep,
    uow: UowDep,
    machine_id: str | None = None,
    run: str | None = None,
) -> list[dict[str, Any]]:
    _in_scope(application, uow, actor, Permission.TELEMETRY_READ, machine_id=machine_id, run=run)
    return [
        to_jsonable(
            {
                "machine_id": g.machine_id,
                "session": g.bd_seq,
                "from_seq": g.from_seq,
                "to_seq": g.to_seq,
                "missing": g.missing,
                "run": g.run,
                "opened_at": g.opened_at,
                "closed_at": g.closed_at,
            }
        )
        for g in application.telemetry.gaps(uow, machine_id=machine_id, run=run)
    ]


@router.post("/telemetry/retention", tags=["telemetry"], response_model=RetentionOut)
def retention(
    body: RetentionIn,
    actor: Annotated[Actor, allowed(Permission.TELEMETRY_RETENTION)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, int]:
    """Thin raw readings older than N days (≥ 30) into per-bucket mean/min/max; audited."""
    return application.telemetry.apply_retention(
        uow,
        actor,
        older_than=timedelta(days=body.older_than_days),
        bucket_s=body.bucket_s,
        reason=body.reason,
    )


# --- models ----------------------------------------------------------------------------------
@router.get("/monitoring/models", tags=["monitoring"], response_model=list[ModelOut])
def models(
    actor: Annotated[Actor, allowed(Permission.MONITORING_READ)],
    application: AppDep,
    uow: UowDep,
    status: str | None = None,
) -> list[dict[str, Any]]:
    return [model_dict(m) for m in application.monitoring.models(uow, status=status)]


@router.post("/monitoring/models", status_code=201, tags=["monitoring"], response_model=ModelOut)
def train(
    body: TrainIn,
    actor: Annotated[Actor, allowed(Permission.MODEL_TRAIN)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Fit a draft SPC or MSPC model from qualified runs (released batches)."""
    model = application.monitoring.train(
        uow,
        actor,
        kind=body.kind,
        master_file_code=body.master_file_code,
        machine_type=body.machine_type,
        runs=body.runs,
        alpha=body.alpha,
        components=body.components,
        grid_points=body.grid_points,
        fill=body.fill,
    )
    return model_dict(model)


@router.get("/monitoring/models/{model_id}", tags=["monitoring"], response_model=ModelDetailOut)
def model(
    model_id: str,
    actor: Annotated[Actor, allowed(Permission.MONITORING_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    found = application.monitoring.get_model(uow, model_id)
    return {
        **model_dict(found),
        "params": found.params,
        "approval_valid": application.monitoring.approval_valid(uow, found),
    }


@router.post("/monitoring/models/{model_id}/approve", tags=["monitoring"], response_model=ModelOut)
def approve(
    model_id: str,
    body: ApproveIn,
    request: Request,
    actor: Annotated[Actor, allowed(Permission.MODEL_APPROVE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """QP approval by e-signature (password again, and the meaning); retires the old version."""
    with throttled(login_throttle(request), actor.username, client_of(request)):
        model = application.monitoring.approve(
            uow,
            actor,
            model_id,
            password=body.password,
            meaning=body.meaning,
            username=body.username,
            totp=body.totp,
        )
    return model_dict(model)


@router.post("/monitoring/models/{model_id}/retire", tags=["monitoring"], response_model=ModelOut)
def retire(
    model_id: str,
    body: NoteIn,
    actor: Annotated[Actor, allowed(Permission.MODEL_RETIRE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return model_dict(application.monitoring.retire(uow, actor, model_id, reason=body.note))


@router.get("/monitoring/capability", tags=["monitoring"], response_model=list[CapabilityOut])
def capability(
    actor: Annotated[Actor, allowed(Permission.MONITORING_READ)],
    application: AppDep,
    uow: UowDep,
    master_file_code: str = Query(min_length=1),
    machine_type: str = Query(min_length=1),
    run: list[str] | None = Query(default=None, description="qualified runs; all when omitted"),
    confidence: float = Query(0.95, gt=0.5, lt=1),
) -> list[dict[str, Any]]:
    """Cp, Cpk, Pp, Ppk with confidence intervals per process parameter over qualified runs,
    against the effective master file's limits."""
    return application.monitoring.capability(
        uow,
        master_file_code=master_file_code,
        machine_type=machine_type,
        runs=run,
        confidence=confidence,
    )


# --- charts ----------------------------------------------------------------------------------
@router.get("/monitoring/runs/{run}/charts", tags=["monitoring"], response_model=RunChartsOut)
def run_charts(
    run: str,
    actor: Annotated[Actor, allowed(Permission.MONITORING_READ)],
    application: AppDep,
    uow: UowDep,
    model_id: str | None = None,
) -> dict[str, Any]:
    """Control-chart data per metric of a run: values, limits, EWMA, flagged points."""
    _in_scope(application, uow, actor, Permission.MONITORING_READ, run=run)
    return application.charts.control_charts(uow, run, model_id=model_id)


@router.get("/monitoring/runs/{run}/mspc", tags=["monitoring"], response_model=MspcChartOut)
def run_mspc(
    run: str,
    actor: Annotated[Actor, allowed(Permission.MONITORING_READ)],
    application: AppDep,
    uow: UowDep,
    model_id: str | None = None,
) -> dict[str, Any]:
    """Hotelling T² and SPE per sample of a run, with the model's limits."""
    _in_scope(application, uow, actor, Permission.MONITORING_READ, run=run)
    return application.charts.mspc_chart(uow, run, model_id=model_id)


@router.get(
    "/monitoring/runs/{run}/contributions", tags=["monitoring"], response_model=ContributionsOut
)
def run_contributions(
    run: str,
    actor: Annotated[Actor, allowed(Permission.MONITORING_READ)],
    application: AppDep,
    uow: UowDep,
    index: int = Query(ge=0, le=10_000_000),
    model_id: str | None = None,
) -> dict[str, Any]:
    """Each variable's contribution to T² and SPE for one sample of a run."""
    _in_scope(application, uow, actor, Permission.MONITORING_READ, run=run)
    return application.charts.contributions(uow, run, index, model_id=model_id)


# --- alarms ----------------------------------------------------------------------------------
@router.get("/alarms", tags=["monitoring"], response_model=list[AlarmOut])
def alarms(
    actor: Annotated[Actor, allowed(Permission.MONITORING_READ)],
    application: AppDep,
    uow: UowDep,
    status: Literal["open", "acknowledged", "closed"] | None = None,
    open_only: bool = Query(False, alias="open"),
    batch_id: str | None = None,
    run: str | None = None,
    machine_id: str | None = None,
    site_id: str | None = None,
    limit: int = Query(200, ge=1, le=1000),
) -> list[dict[str, Any]]:
    return [
        alarm_dict(a)
        for a in application.monitoring.visible_alarms(
            uow,
            actor,
            status=status,
            open_only=open_only,
            batch_id=batch_id,
            run=run,
            machine_id=machine_id,
            site_id=site_id,
            limit=limit,
        )
    ]


@router.get("/alarms/{alarm_id}", tags=["monitoring"], response_model=AlarmOut)
def alarm(
    alarm_id: str,
    actor: Annotated[Actor, allowed(Permission.MONITORING_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return alarm_dict(application.monitoring.read_alarm(uow, actor, alarm_id))


@router.post("/alarms/{alarm_id}/acknowledge", tags=["monitoring"], response_model=AlarmOut)
def acknowledge(
    alarm_id: str,
    body: NoteIn,
    actor: Annotated[Actor, allowed(Permission.ALARM_ACKNOWLEDGE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return alarm_dict(application.monitoring.acknowledge(uow, actor, alarm_id, note=body.note))


@router.post("/alarms/{alarm_id}/close", tags=["monitoring"], response_model=AlarmOut)
def close(
    alarm_id: str,
    body: CloseIn,
    actor: Annotated[Actor, allowed(Permission.ALARM_CLOSE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Close with a documented disposition; the batch can then be released by the QP."""
    return alarm_dict(
        application.monitoring.close(
            uow, actor, alarm_id, disposition=body.disposition, note=body.note
        )
    )
