"""Monitoring use cases: train, approve and retire SPC/MSPC models; handle alarms.

A model is trained from qualified runs (runs whose batch a QP released) of one product on one
machine type, is a draft until a QP approves it with an e-signature bound to its content, and is
then the one used for scoring; approving a newer version retires the older one. Alarms are raised
by the scorer (`scoring.Monitor`) and closed by a person with a documented disposition; an alarm
that is not closed keeps its batch from an automatic release proposal and from release."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import select

from nearfab.common.canonical import to_jsonable
from nearfab.common.errors import NotFound, Refused, ValidationFailed, require_reason
from nearfab.common.ids import new_id
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    SignatureService,
    audit,
    audited_transition,
    authorize,
    authorize_network,
    site_filter,
)
from nearfab.masterfiles import MasterFileService
from nearfab.monitoring.enums import (
    ALARM_TRANSITIONS,
    MODEL_TRANSITIONS,
    AlarmDisposition,
    AlarmStatus,
    ModelKind,
    ModelStatus,
)
from nearfab.monitoring.events import MonitoringModelsChanged
from nearfab.monitoring.logic.capability import capability
from nearfab.monitoring.models import Alarm, MonitoringModel
from nearfab.monitoring.training import TrainingData, fit_mspc, fit_spc
from nearfab.network import NetworkService
from nearfab.production import BatchRecord, ProductionService
from nearfab.telemetry import TelemetryService, complete_samples
from nearfab.uow import UnitOfWork

OPEN_STATUSES = (AlarmStatus.OPEN.value, AlarmStatus.ACKNOWLEDGED.value)
MIN_TRAINING_RUNS = 3


class MonitoringService:
    def __init__(
        self,
        telemetry: TelemetryService,
        production: ProductionService,
        network: NetworkService,
        signatures: SignatureService,
        master_files: MasterFileService | None = None,
    ) -> None:
        self._master_files = master_files
        self._telemetry = telemetry
        self._production = production
        self._network = network
        self._signatures = signatures

    # --- models -----------------------------------------------------------------------------

    def qualified_runs(
        self, uow: UnitOfWork, master_file_code: str, machine_type: str
    ) -> list[str]:
        """Runs that may train a model: released batches of the product on that machine type,
        whose telemetry ended complete."""
        released = uow.session.scalars(
            select(BatchRecord)
            .where(
                BatchRecord.status == "released",
                BatchRecord.master_file_code == master_file_code,
            )
            .order_by(BatchRecord.started_at)
        )
        runs = []
        for batch in released:
            machine = self._network.get_machine(uow, batch.machine_id)
            if machine.machine_type != machine_type:
                continue
            tel = self._telemetry.run(uow, batch.job_id)
            if tel is not None and tel.end_state == "COMPLETE":
                runs.append(batch.job_id)
        return runs

    def _check_training_run(
        self, uow: UnitOfWork, run: str, master_file_code: str, machine_type: str
    ) -> None:
        batch = uow.session.scalar(select(BatchRecord).where(BatchRecord.job_id == run))
        if batch is None:
            raise ValidationFailed(f"run {run!r} has no batch record", field="runs")
        if batch.status != "released":
            raise Refused(
                f"run {run} (batch {batch.batch_number}) is {batch.status}: only runs of "
                "released batches qualify as training data",
                field="runs",
                code="run_not_qualified",
            )
        if batch.master_file_code != master_file_code:
            raise ValidationFailed(
                f"run {run} made {batch.master_file_code}, not {master_file_code}", field="runs"
            )
        machine = self._network.get_machine(uow, batch.machine_id)
        if machine.machine_type != machine_type:
            raise ValidationFailed(
                f"run {run} ran on a {machine.machine_type}, not a {machine_type}", field="runs"
            )
        tel = self._telemetry.run(uow, run)
        if tel is None or tel.end_state != "COMPLETE":
            raise Refused(
                f"run {run} has no complete telemetry", field="runs", code="run_not_qualified"
            )
        if self._telemetry.gaps(uow, run=run):
            raise Refused(
                f"run {run} lost telemetry messages (gap)", field="runs", code="run_not_qualified"
            )

    def _training_data(self, uow: UnitOfWork, runs: Sequence[str]) -> TrainingData:
        metrics: list[str] = sorted(
            {s.metric for r in runs for s in self._telemetry.series(uow, run=r)}
        )
        per_run: dict[str, dict[str, list[float]]] = {}
        rows: list[list[float]] = []
        samples_per_run: list[int] = []
        for run in runs:
            points = self._telemetry.run_points(uow, run, metrics)
            per_run[run] = {m: [v for _, v in points[m]] for m in metrics}
            samples = complete_samples(points, metrics)
            rows.extend(vector for _, vector in samples)
            samples_per_run.append(len(samples))
        return TrainingData(
            metrics=metrics,
            per_run=per_run,
            matrix=np.asarray(rows, dtype=float).reshape(-1, len(metrics)),
            samples_per_run=samples_per_run,
        )

    def train(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        kind: ModelKind | str,
        master_file_code: str,
        machine_type: str,
        runs: Sequence[str] | None = None,
        alpha: float = 0.99,
        components: int | None = None,
    ) -> MonitoringModel:
        """Fit a draft model from qualified runs (all of them when `runs` is None)."""
        # a model is fitted on runs of every site and then judges every site's runs
        authorize_network(actor, Permission.MODEL_TRAIN)
        try:
            kind = ModelKind(kind)
        except ValueError:
            raise ValidationFailed(
                f"kind must be spc or mspc, not {kind!r}", field="kind"
            ) from None
        if not 0.5 < alpha < 1:
            raise ValidationFailed("alpha must be between 0.5 and 1 (e.g. 0.99)", field="alpha")
        chosen = (
            list(runs)
            if runs is not None
            else self.qualified_runs(uow, master_file_code, machine_type)
        )
        if len(set(chosen)) != len(chosen):
            raise ValidationFailed("a run is listed twice", field="runs")
        if len(chosen) < MIN_TRAINING_RUNS:
            raise Refused(
                f"{len(chosen)} qualified run(s) of {master_file_code} on {machine_type}; a model "
                f"needs at least {MIN_TRAINING_RUNS}",
                field="runs",
                code="too_few_runs",
            )
        for run in chosen:
            self._check_training_run(uow, run, master_file_code, machine_type)
        data = self._training_data(uow, chosen)
        if kind is ModelKind.SPC:
            params = fit_spc(data, alpha=alpha)
        else:
            params = fit_mspc(data, alpha=alpha, components=components)
        latest = uow.session.scalar(
            select(MonitoringModel.version)
            .where(
                MonitoringModel.kind == kind.value,
                MonitoringModel.master_file_code == master_file_code,
                MonitoringModel.machine_type == machine_type,
            )
            .order_by(MonitoringModel.version.desc())
            .limit(1)
        )
        model = MonitoringModel(
            id=new_id("mon"),
            kind=kind.value,
            master_file_code=master_file_code,
            machine_type=machine_type,
            version=(latest or 0) + 1,
            status=ModelStatus.DRAFT.value,
            metrics=data.metrics,
            params=params,
            training={
                "runs": chosen,
                "samples": int(data.matrix.shape[0]),
                "readings": sum(len(v) for s in data.per_run.values() for v in s.values()),
                "alpha": alpha,
            },
            created_at=uow.clock.now(),
            created_by=actor.user_id,
            approved_at=None,
            approved_by=None,
            approval_signature_id=None,
        )
        uow.session.add(model)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "monitoring_model",
            model.id,
            new={
                "kind": model.kind,
                "master_file_code": master_file_code,
                "machine_type": machine_type,
                "version": model.version,
                "training": model.training,
            },
        )
        uow.commit()
        return model

    def get_model(self, uow: UnitOfWork, model_id: str) -> MonitoringModel:
        model = uow.session.get(MonitoringModel, model_id)
        if model is None:
            raise NotFound(f"no monitoring model {model_id!r}", field="model_id")
        return model

    def models(self, uow: UnitOfWork, *, status: str | None = None) -> list[MonitoringModel]:
        stmt = select(MonitoringModel).order_by(
            MonitoringModel.master_file_code, MonitoringModel.kind, MonitoringModel.version
        )
        if status is not None:
            stmt = stmt.where(MonitoringModel.status == status)
        return list(uow.session.scalars(stmt))

    def active_models(self, uow: UnitOfWork) -> list[MonitoringModel]:
        return self.models(uow, status=ModelStatus.APPROVED.value)

    def approve(
        self,
        uow: UnitOfWork,
        actor: Actor,
        model_id: str,
        *,
        password: str,
        meaning: str,
        username: str | None = None,
        totp: str | None = None,
    ) -> MonitoringModel:
        """QP approval by e-signature; the previous approved version is retired with it."""
        authorize_network(actor, Permission.MODEL_APPROVE)
        model = self.get_model(uow, model_id)
        if model.created_by == actor.user_id:
            raise Refused(
                "the person who trained a model cannot approve it (four eyes)",
                field="model_id",
                code="same_person",
            )
        sig = self._signatures.sign(
            uow,
            actor,
            password=password,
            meaning=meaning,
            record_type="monitoring_model",
            record_id=model.id,
            content=model.content(),
            username=username,
            totp=totp,
        )
        for old in uow.session.scalars(
            select(MonitoringModel).where(
                MonitoringModel.kind == model.kind,
                MonitoringModel.master_file_code == model.master_file_code,
                MonitoringModel.machine_type == model.machine_type,
                MonitoringModel.status == ModelStatus.APPROVED.value,
            )
        ):
            audited_transition(
                uow,
                actor,
                old,
                ModelStatus.RETIRED,
                MODEL_TRANSITIONS,
                entity_type="monitoring_model",
                label="monitoring model",
                reason=f"superseded by version {model.version}",
            )
        audited_transition(
            uow,
            actor,
            model,
            ModelStatus.APPROVED,
            MODEL_TRANSITIONS,
            entity_type="monitoring_model",
            label="monitoring model",
            reason=meaning,
            extra={"signature_id": sig.id},
        )
        model.approved_at = uow.clock.now()
        model.approved_by = actor.user_id
        model.approval_signature_id = sig.id
        uow.emit(MonitoringModelsChanged(model.id))
        uow.commit()
        return model

    def retire(
        self, uow: UnitOfWork, actor: Actor, model_id: str, *, reason: str
    ) -> MonitoringModel:
        authorize_network(actor, Permission.MODEL_RETIRE)
        require_reason(reason, "retiring a monitoring model")
        model = self.get_model(uow, model_id)
        audited_transition(
            uow,
            actor,
            model,
            ModelStatus.RETIRED,
            MODEL_TRANSITIONS,
            entity_type="monitoring_model",
            label="monitoring model",
            reason=reason,
        )
        uow.emit(MonitoringModelsChanged(model.id))
        uow.commit()
        return model

    def approval_valid(self, uow: UnitOfWork, model: MonitoringModel) -> bool | None:
        """Whether the approval signature still matches the model (None if never approved)."""
        if model.approval_signature_id is None:
            return None
        sigs = self._signatures.signatures_for(uow, "monitoring_model", model.id)
        sig = next((s for s in sigs if s.id == model.approval_signature_id), None)
        return sig is not None and self._signatures.is_valid(sig, model.content())

    def capability(
        self,
        uow: UnitOfWork,
        *,
        master_file_code: str,
        machine_type: str,
        runs: Sequence[str] | None = None,
        confidence: float = 0.95,
    ) -> list[dict[str, Any]]:
        """Cp, Cpk, Pp, Ppk with confidence intervals of every process parameter over qualified
        runs, against the limits of the effective master file. Within-run sigma comes from the
        moving range; on autocorrelated telemetry it underestimates, so Pp/Ppk (overall sigma)
        are the figures to judge a process by."""
        if self._master_files is None:
            raise ValidationFailed("capability needs the master files", field="master_file_code")
        mf = self._master_files.effective_for_code(uow, master_file_code)
        chosen = (
            list(runs)
            if runs is not None
            else self.qualified_runs(uow, master_file_code, machine_type)
        )
        if len(chosen) < 1:
            raise Refused(
                f"no qualified run of {master_file_code} on {machine_type}",
                field="runs",
                code="too_few_runs",
            )
        for run in chosen:
            self._check_training_run(uow, run, master_file_code, machine_type)
        data = self._training_data(uow, chosen)
        out: list[dict[str, Any]] = []
        for metric in data.metrics:
            spec = (mf.process_parameters or {}).get(metric) or {}
            values = [v for r in chosen for v in data.per_run[r][metric]]
            report = capability(
                values, lsl=spec.get("low"), usl=spec.get("high"), confidence=confidence
            )
            out.append(
                {
                    "metric": metric,
                    "unit": spec.get("unit"),
                    "target": spec.get("target"),
                    "runs": len(chosen),
                    **to_jsonable(dataclasses.asdict(report)),
                }
            )
        return out

    # --- alarms -----------------------------------------------------------------------------

    def alarms(
        self,
        uow: UnitOfWork,
        *,
        status: str | None = None,
        open_only: bool = False,
        batch_id: str | None = None,
        run: str | None = None,
        machine_id: str | None = None,
        site_id: str | None = None,
        limit: int = 200,
    ) -> list[Alarm]:
        stmt = select(Alarm).order_by(Alarm.raised_at.desc(), Alarm.id.desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(Alarm.status == AlarmStatus(status).value)
        if open_only:
            stmt = stmt.where(Alarm.status.in_(OPEN_STATUSES))
        if batch_id is not None:
            stmt = stmt.where(Alarm.batch_id == batch_id)
        if run is not None:
            stmt = stmt.where(Alarm.run == run)
        if machine_id is not None:
            stmt = stmt.where(Alarm.machine_id == machine_id)
        if site_id is not None:
            stmt = stmt.where(Alarm.site_id == site_id)
        return list(uow.session.scalars(stmt))

    def get_alarm(self, uow: UnitOfWork, alarm_id: str) -> Alarm:
        alarm = uow.session.get(Alarm, alarm_id)
        if alarm is None:
            raise NotFound(f"no alarm {alarm_id!r}", field="alarm_id")
        return alarm

    # --- scoping: the one check the API and the pages make before showing a site's record ---

    def read_alarm(
        self,
        uow: UnitOfWork,
        actor: Actor,
        alarm_id: str,
        permission: Permission = Permission.MONITORING_READ,
    ) -> Alarm:
        """One alarm, for someone who may read it at the alarm's site."""
        authorize(actor, permission)  # the role first: no hints to others
        alarm = self.get_alarm(uow, alarm_id)
        authorize(actor, permission, site_id=alarm.site_id)
        return alarm

    def visible_alarms(
        self, uow: UnitOfWork, actor: Actor, *, site_id: str | None = None, **filters: Any
    ) -> list[Alarm]:
        """Alarms of the sites the actor sees (asking for another site by name is refused)."""
        scope = site_filter(actor, Permission.MONITORING_READ, site_id)
        return self.alarms(uow, site_id=scope, **filters)

    def run_site(self, uow: UnitOfWork, run: str) -> str:
        """The site a run (job id) was made at: its batch record's, else its telemetry's."""
        batch = uow.session.scalar(select(BatchRecord).where(BatchRecord.job_id == run))
        if batch is not None:
            return batch.site_id
        found = self._telemetry.run(uow, run)
        if found is None:
            raise NotFound(f"no run {run!r}", field="run")
        return found.site_id

    def authorize_run(
        self,
        uow: UnitOfWork,
        actor: Actor,
        run: str,
        permission: Permission = Permission.MONITORING_READ,
    ) -> None:
        """A run's charts, MSPC and telemetry are records of the site that made it."""
        authorize(actor, permission)
        authorize(actor, permission, site_id=self.run_site(uow, run))

    def authorize_machine(
        self,
        uow: UnitOfWork,
        actor: Actor,
        machine_id: str,
        permission: Permission = Permission.MONITORING_READ,
    ) -> None:
        """A machine's charts and telemetry are records of the machine's site."""
        authorize(actor, permission)
        authorize(actor, permission, site_id=self._network.get_machine(uow, machine_id).site_id)

    def acknowledge(self, uow: UnitOfWork, actor: Actor, alarm_id: str, *, note: str) -> Alarm:
        """Someone is looking into it; the alarm still blocks release."""
        alarm = self.get_alarm(uow, alarm_id)
        authorize(actor, Permission.ALARM_ACKNOWLEDGE, site_id=alarm.site_id)
        require_reason(note, "acknowledging an alarm")
        audited_transition(
            uow,
            actor,
            alarm,
            AlarmStatus.ACKNOWLEDGED,
            ALARM_TRANSITIONS,
            entity_type="alarm",
            label="alarm",
            reason=note,
            site_id=alarm.site_id,
        )
        uow.commit()
        return alarm

    def close(
        self,
        uow: UnitOfWork,
        actor: Actor,
        alarm_id: str,
        *,
        disposition: AlarmDisposition | str,
        note: str,
    ) -> Alarm:
        """Close an alarm with a documented disposition (what was found, what was done)."""
        authorize(actor, Permission.ALARM_CLOSE)  # the role first: no hints to others
        try:
            disposition = AlarmDisposition(disposition)
        except ValueError:
            known = ", ".join(d.value for d in AlarmDisposition)
            raise ValidationFailed(
                f"disposition {disposition!r} is not one of {known}", field="disposition"
            ) from None
        alarm = self.get_alarm(uow, alarm_id)
        authorize(actor, Permission.ALARM_CLOSE, site_id=alarm.site_id)
        require_reason(note, "closing an alarm")
        audited_transition(
            uow,
            actor,
            alarm,
            AlarmStatus.CLOSED,
            ALARM_TRANSITIONS,
            entity_type="alarm",
            label="alarm",
            reason=note,
            site_id=alarm.site_id,
            extra={"disposition": disposition.value},
        )
        alarm.disposition = disposition.value
        alarm.disposition_note = note.strip()
        alarm.closed_by = actor.user_id
        alarm.closed_at = uow.clock.now()
        uow.commit()
        return alarm

    def release_blockers(self, uow: UnitOfWork, batch_id: str) -> list[str]:
        """Why a batch cannot be released automatically: its alarms not yet dispositioned."""
        stmt = (
            select(Alarm)
            .where(Alarm.batch_id == batch_id, Alarm.status.in_(OPEN_STATUSES))
            .order_by(Alarm.first_at)
        )
        return [a.describe() for a in uow.session.scalars(stmt)]


def alarm_dict(alarm: Alarm) -> dict[str, Any]:
    return {
        "id": alarm.id,
        "source": alarm.source,
        "rule": alarm.rule,
        "severity": alarm.severity,
        "status": alarm.status,
        "site_id": alarm.site_id,
        "machine_id": alarm.machine_id,
        "run": alarm.run,
        "batch_id": alarm.batch_id,
        "metric": alarm.metric,
        "model_id": alarm.model_id,
        "message": alarm.message,
        "value": alarm.value,
        "limit": alarm.limit,
        "first_at": alarm.first_at.isoformat(),
        "last_at": alarm.last_at.isoformat(),
        "count": alarm.count,
        "details": alarm.details,
        "disposition": alarm.disposition,
        "disposition_note": alarm.disposition_note,
        "closed_by": alarm.closed_by,
        "closed_at": alarm.closed_at.isoformat() if alarm.closed_at else None,
    }


def model_dict(model: MonitoringModel) -> dict[str, Any]:
    return {
        "id": model.id,
        "kind": model.kind,
        "master_file_code": model.master_file_code,
        "machine_type": model.machine_type,
        "version": model.version,
        "status": model.status,
        "metrics": model.metrics,
        "training": model.training,
        "created_at": model.created_at.isoformat(),
        "created_by": model.created_by,
        "approved_at": model.approved_at.isoformat() if model.approved_at else None,
        "approved_by": model.approved_by,
    }
