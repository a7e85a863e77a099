"""Monitoring use cases: train, approve and retire SPC/MSPC models; handle alarms.

A model is trained from qualified runs (runs whose batch a QP released) of one product on one
machine type, is a draft until a QP approves it with an e-signature bound to its content, and is
then the one used for scoring; approving a newer version retires the older one. Alarms are raised
by the scorer (`scoring.Monitor`) and closed by a person with a documented disposition; an alarm
that is not closed keeps its batch from an automatic release proposal and from release."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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
    system_actor,
)
from nearfab.masterfiles import MasterFileService
from nearfab.monitoring.enums import (
    ALARM_TRANSITIONS,
    MODEL_TRANSITIONS,
    AlarmDisposition,
    AlarmStatus,
    ModelKind,
    ModelStatus,
    Severity,
)
from nearfab.monitoring.events import AlarmRaised, MonitoringModelsChanged
from nearfab.monitoring.logic.batch_mspc import BatchModel, BatchScores, align_run, time_grid
from nearfab.monitoring.logic.capability import capability
from nearfab.monitoring.models import Alarm, MonitoringModel
from nearfab.monitoring.training import TrainingData, fit_mspc, fit_spc
from nearfab.network import NetworkService
from nearfab.production import ProductionService
from nearfab.production.reads import batch_records_by_job, batch_records_of_product
from nearfab.telemetry import PointRow, TelemetryService, complete_samples
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.production import BatchRecord

OPEN_STATUSES = (AlarmStatus.OPEN.value, AlarmStatus.ACKNOWLEDGED.value)
MIN_TRAINING_RUNS = 3
BATCH_GRID_POINTS = 50  # default grid of a batch-evolution model
BATCH_SOURCE = "batch_mspc"  # the source of its alarms


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
        # batch-evolution scoring of running batches: run -> (model, next grid time in µs)
        self._batch_runs: dict[str, tuple[MonitoringModel, BatchModel, int] | None] = {}
        self._batch_lock = threading.RLock()

    # --- models -----------------------------------------------------------------------------

    def qualified_runs(
        self, uow: UnitOfWork, master_file_code: str, machine_type: str
    ) -> list[str]:
        """Runs that may train a model: released batches of the product on that machine type,
        whose telemetry ended complete."""
        released = batch_records_of_product(uow.session, master_file_code, ["released"])
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
        batch = batch_records_by_job(uow.session, [run]).get(run)
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
        grid_points: int = BATCH_GRID_POINTS,
        fill: str = "zero",
    ) -> MonitoringModel:
        """Fit a draft model from qualified runs (all of them when `runs` is None). A batch
        model (`kind="batch"`) aligns the runs on `grid_points` points of elapsed time and
        fills a running batch's future with zero (or `fill="current"`) deviations."""
        # a model is fitted on runs of every site and then judges every site's runs
        authorize_network(actor, Permission.MODEL_TRAIN)
        try:
            kind = ModelKind(kind)
        except ValueError:
            known = ", ".join(k.value for k in ModelKind)
            raise ValidationFailed(
                f"kind must be one of {known}, not {kind!r}", field="kind"
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
        elif kind is ModelKind.MSPC:
            params = fit_mspc(data, alpha=alpha, components=components)
        else:
            params, used = self._fit_batch(uow, chosen, alpha, components, grid_points, fill)
            data = dataclasses.replace(data, metrics=used)
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

    # --- batch evolution: whole-run trajectories against released runs ------------------------

    def _run_trajectory(
        self, uow: UnitOfWork, run: str, metrics: list[str]
    ) -> tuple[int, dict[str, list[tuple[float, float]]]]:
        """A run's readings as (seconds since its first reading, value) per metric, and the
        time of that first reading (µs)."""
        points = self._telemetry.run_points(uow, run, metrics)
        firsts = [series[0][0] for series in points.values() if series]
        start = min(firsts) if firsts else 0
        return start, {
            m: [((ts - start) / 1_000_000, value) for ts, value in series]
            for m, series in points.items()
        }

    def _fit_batch(
        self,
        uow: UnitOfWork,
        runs: Sequence[str],
        alpha: float,
        components: int | None,
        grid_points: int,
        fill: str,
    ) -> tuple[dict[str, Any], list[str]]:
        """Align the runs on a grid of elapsed time up to the shortest run, drop metrics that
        are the same in every run (nothing to learn), fit the multiway PCA model."""
        metrics = sorted({s.metric for r in runs for s in self._telemetry.series(uow, run=r)})
        trajectories = {r: self._run_trajectory(uow, r, metrics)[1] for r in runs}
        ends: list[float] = []
        for run, series in trajectories.items():
            missing = [m for m in metrics if not series[m]]
            if missing:
                raise Refused(
                    f"run {run} has no readings of {', '.join(missing)}",
                    field="runs",
                    code="run_not_qualified",
                )
            ends.append(min(s[-1][0] for s in series.values()))
        grid = time_grid(min(ends), grid_points)
        X = np.stack([align_run(trajectories[r], metrics, grid) for r in runs])
        spread = np.median(X.std(axis=0, ddof=1), axis=0)
        used = [m for j, m in enumerate(metrics) if spread[j] > 0]
        if len(used) < 1:
            raise ValidationFailed("no metric varied between the training runs", field="runs")
        keep = [metrics.index(m) for m in used]
        model = BatchModel.fit(
            X[:, :, keep], grid, used, components=components, alpha=alpha, fill=fill
        )
        params = {
            "batch": model.to_dict(),
            "alpha": alpha,
            "duration_s": float(grid[-1]),
            "constant_metrics": [m for m in metrics if m not in used],
        }
        return params, used

    def _batch_model_for(self, uow: UnitOfWork, run: str) -> MonitoringModel | None:
        batch = batch_records_by_job(uow.session, [run]).get(run)
        if batch is None:
            return None
        machine = self._network.get_machine(uow, batch.machine_id)
        return uow.session.scalar(
            select(MonitoringModel).where(
                MonitoringModel.kind == ModelKind.BATCH.value,
                MonitoringModel.master_file_code == batch.master_file_code,
                MonitoringModel.machine_type == machine.machine_type,
                MonitoringModel.status == ModelStatus.APPROVED.value,
            )
        )

    def batch_trajectory(
        self, uow: UnitOfWork, run: str, *, model_id: str | None = None
    ) -> tuple[MonitoringModel, BatchScores, int]:
        """T² and SPE of a run at every grid point its telemetry has reached so far, by the
        approved batch model of its product and machine type (or `model_id`), and the time of
        the run's first reading (µs)."""
        if model_id is not None:
            model = self.get_model(uow, model_id)
            if model.kind != ModelKind.BATCH.value:
                raise ValidationFailed(
                    f"model {model_id} is a {model.kind} model", field="model_id"
                )
        else:
            found = self._batch_model_for(uow, run)
            if found is None:
                raise NotFound(f"no approved batch model for run {run!r}", field="run")
            model = found
        scores, start = self._batch_scores(uow, run, BatchModel.from_dict(model.params["batch"]))
        return model, scores, start

    def _batch_scores(
        self, uow: UnitOfWork, run: str, fitted: BatchModel
    ) -> tuple[BatchScores, int]:
        """The run's scores by `fitted` at the grid points reached, and its first reading (µs)."""
        start, series = self._run_trajectory(uow, run, list(fitted.variables))
        return fitted.monitor(fitted.align(series)), start

    def check_batch_run(self, uow: UnitOfWork, run: str) -> list[Alarm]:
        """Score a running batch's trajectory so far and raise (or update) its alarms; the
        alarms hold the batch until someone dispositions them."""
        alarms, _ = self._score_batch_run(uow, run)
        uow.commit()
        return alarms

    def _score_batch_run(
        self,
        uow: UnitOfWork,
        run: str,
        cached: tuple[MonitoringModel, BatchModel] | None = None,
    ) -> tuple[list[Alarm], int]:
        """The run's alarms, and the time (µs) its telemetry must reach for the next grid
        point (2**62 when the grid is complete). `cached`: the run's model as the telemetry
        observer holds it (else it is looked up)."""
        batch = batch_records_by_job(uow.session, [run]).get(run)
        if batch is None:
            raise NotFound(f"run {run!r} has no batch record", field="run")
        if cached is None:
            model, scores, start = self.batch_trajectory(uow, run)
            variables = BatchModel.from_dict(model.params["batch"]).variables
        else:
            model, fitted = cached
            scores, start = self._batch_scores(uow, run, fitted)
            variables = fitted.variables
        raised: list[Alarm] = []
        for rule, values, limits, label in (
            ("t2", scores.t2, np.full(scores.t2.shape, scores.t2_limit), "Hotelling T²"),
            ("spe", scores.spe, scores.spe_limits, "SPE (Q)"),
        ):
            over = np.flatnonzero(values > limits)
            if over.size == 0:
                continue
            worst = int(over[np.argmax(values[over] / limits[over])])
            shares = scores.spe_contributions[worst]
            ranked = sorted(
                zip(variables, (float(v) for v in shares), strict=True), key=lambda x: -x[1]
            )
            hours = float(scores.times[worst]) / 3600
            raised.append(
                self._batch_alarm(
                    uow,
                    batch,
                    model,
                    rule=rule,
                    message=f"batch trajectory: {label} {values[worst]:.2f} above its limit "
                    f"{limits[worst]:.2f} at {hours:.2f} h of the run; largest residual "
                    f"{ranked[0][0]}",
                    value=float(values[worst]),
                    limit=float(limits[worst]),
                    first_us=start + int(scores.times[int(over[0])] * 1_000_000),
                    last_us=start + int(scores.times[int(over[-1])] * 1_000_000),
                    count=int(over.size),
                    details={
                        "grid_point": worst,
                        "elapsed_s": float(scores.times[worst]),
                        "points_beyond": over.tolist(),
                        "points_reached": len(scores.times),
                        "spe_contributions": dict(ranked),
                    },
                )
            )
        grid = model.params["batch"]["grid"]
        reached = len(scores.times)
        due = start + int(grid[reached] * 1_000_000) if reached < len(grid) else 2**62
        return raised, due

    def _batch_alarm(
        self,
        uow: UnitOfWork,
        batch: BatchRecord,
        model: MonitoringModel,
        *,
        rule: str,
        message: str,
        value: float,
        limit: float,
        first_us: int,
        last_us: int,
        count: int,
        details: dict[str, Any],
    ) -> Alarm:
        """One alarm per run and statistic; scoring again updates it (points beyond, worst)."""
        run = batch.job_id
        alarm = uow.session.scalar(
            select(Alarm).where(
                Alarm.run == run,
                Alarm.source == BATCH_SOURCE,
                Alarm.rule == rule,
                Alarm.status.in_(OPEN_STATUSES),
            )
        )
        last = datetime.fromtimestamp(last_us / 1_000_000, UTC)
        if alarm is not None:
            alarm.count = count
            alarm.last_at = max(alarm.last_at, last)
            alarm.value, alarm.limit, alarm.message, alarm.details = value, limit, message, details
            return alarm
        alarm = Alarm(
            id=new_id("alm"),
            source=BATCH_SOURCE,
            rule=rule,
            severity=Severity.MAJOR.value,
            status=AlarmStatus.OPEN.value,
            site_id=batch.site_id,
            machine_id=batch.machine_id,
            run=run,
            batch_id=batch.id,
            metric=None,
            model_id=model.id,
            message=message,
            value=value,
            limit=limit,
            first_at=datetime.fromtimestamp(first_us / 1_000_000, UTC),
            last_at=last,
            count=count,
            details=details,
            raised_at=uow.clock.now(),
            disposition=None,
            disposition_note=None,
            closed_by=None,
            closed_at=None,
        )
        uow.session.add(alarm)
        uow.flush()
        audit(
            uow,
            system_actor("monitoring"),
            AuditAction.CREATE,
            "alarm",
            alarm.id,
            new={
                "source": BATCH_SOURCE,
                "rule": rule,
                "severity": alarm.severity,
                "machine_id": batch.machine_id,
                "run": run,
                "batch_id": batch.id,
                "message": message,
            },
            site_id=batch.site_id,
        )
        uow.emit(AlarmRaised(alarm.id, batch.id))
        return alarm

    def on_batch_points(
        self, uow: UnitOfWork, machine_id: str, run: str, points: Sequence[PointRow]
    ) -> None:
        """Telemetry observer (`ingestor.on_points`): rescore a run against its approved batch
        model each time its readings pass the next grid point; inside the ingest transaction,
        so the readings and the alarms they raise commit together."""
        if not run or not points:
            return
        with self._batch_lock:
            if run not in self._batch_runs:
                model = self._batch_model_for(uow, run)
                fitted = BatchModel.from_dict(model.params["batch"]) if model else None
                self._batch_runs[run] = (model, fitted, -1) if model and fitted else None
            state = self._batch_runs[run]
            if state is None:
                return
            model, fitted, due_us = state
            if max(ts for _, ts, _ in points) < due_us:
                return
            # 2**62 once the grid is complete
            _, due = self._score_batch_run(uow, run, (model, fitted))
            self._batch_runs[run] = (model, fitted, due)

    def on_batch_run_end(self, uow: UnitOfWork, machine_id: str, run: str, end: str) -> None:
        """Telemetry observer (`ingestor.on_run_end`): forget the run's scoring state."""
        with self._batch_lock:
            self._batch_runs.pop(run, None)

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
        batch = batch_records_by_job(uow.session, [run]).get(run)
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
