"""Chart data for one run: control charts per metric and the MSPC statistics, recomputed from
the stored telemetry with the model in force for the run's product (read-only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select

from nearfab.common.errors import NotFound, ValidationFailed
from nearfab.monitoring.enums import ModelKind, ModelStatus
from nearfab.monitoring.logic.mspc import PcaModel
from nearfab.monitoring.logic.online import OnlineMonitor, Signal
from nearfab.monitoring.models import MonitoringModel
from nearfab.network import NetworkService
from nearfab.production.reads import batch_records_by_job, latest_batch_on_machine
from nearfab.telemetry import TelemetryService, complete_samples, from_us
from nearfab.uow import UnitOfWork


@dataclass(frozen=True)
class RunContext:
    run: str
    machine_id: str
    batch_id: str | None
    batch_number: str | None
    master_file_code: str | None
    machine_type: str


class RunCharts:
    def __init__(self, telemetry: TelemetryService, network: NetworkService) -> None:
        self._telemetry = telemetry
        self._network = network

    def context(self, uow: UnitOfWork, run: str) -> RunContext:
        tel = self._telemetry.run(uow, run)
        if tel is None:
            raise NotFound(f"no telemetry for run {run!r}", field="run")
        batch = batch_records_by_job(uow.session, [run]).get(run)
        machine = self._network.get_machine(uow, tel.machine_id)
        return RunContext(
            run=run,
            machine_id=tel.machine_id,
            batch_id=batch.id if batch else None,
            batch_number=batch.batch_number if batch else None,
            master_file_code=batch.master_file_code if batch else None,
            machine_type=machine.machine_type,
        )

    def _model(
        self, uow: UnitOfWork, kind: ModelKind, ctx: RunContext, model_id: str | None
    ) -> MonitoringModel | None:
        if model_id is not None:
            model = uow.session.get(MonitoringModel, model_id)
            if model is None or model.kind != kind.value:
                raise NotFound(f"no {kind.value} model {model_id!r}", field="model_id")
            return model
        if ctx.master_file_code is None:
            return None
        return uow.session.scalar(
            select(MonitoringModel).where(
                MonitoringModel.kind == kind.value,
                MonitoringModel.master_file_code == ctx.master_file_code,
                MonitoringModel.machine_type == ctx.machine_type,
                MonitoringModel.status == ModelStatus.APPROVED.value,
            )
        )

    def _complete(
        self, uow: UnitOfWork, run: str, metrics: list[str]
    ) -> tuple[list[int], npt.NDArray[np.float64]]:
        """Times and values (rows) of the run's complete samples."""
        samples = complete_samples(self._telemetry.run_points(uow, run, metrics), metrics)
        X = np.asarray([v for _, v in samples], dtype=float).reshape(-1, len(metrics))
        return [t for t, _ in samples], X

    def control_charts(
        self, uow: UnitOfWork, run: str, *, model_id: str | None = None
    ) -> dict[str, Any]:
        """Per metric: times, values, centre, individuals limits, EWMA with its limits, and the
        indexes the model's enabled signals flag (the same rules the online scorer applies)."""
        ctx = self.context(uow, run)
        model = self._model(uow, ModelKind.SPC, ctx, model_id)
        units = {s.metric: s.unit for s in self._telemetry.series(uow, run=run)}
        metrics = sorted(units)
        by_metric = self._telemetry.run_points(uow, run, metrics)
        charts: list[dict[str, Any]] = []
        for metric in metrics:
            points = by_metric[metric]
            chart: dict[str, Any] = {
                "metric": metric,
                "unit": units[metric],
                "times": [from_us(ts).isoformat() for ts, _ in points],
                "values": [v for _, v in points],
            }
            params = model.params["charts"].get(metric) if model else None
            if params is not None and model is not None:
                enabled = {Signal(s) for s in model.params["signals"]}
                monitor = OnlineMonitor(
                    params["center"],
                    params["sigma"],
                    lam=params["lam"],
                    L=params["L_ewma"],
                    k=params["k"],
                    h=params["h"],
                )
                z_limit = params["L_individuals"]
                ewma, lcl, ucl, flagged = [], [], [], []
                for i, (_, v) in enumerate(points):
                    u = monitor.update(v)
                    ewma.append(u.ewma)
                    lcl.append(u.ewma_lcl)
                    ucl.append(u.ewma_ucl)
                    fired = [s.value for s in u.signals if s in enabled and s is not Signal.WE1]
                    if Signal.WE1 in enabled and abs(u.z) > z_limit:
                        fired.append(Signal.WE1.value)
                    if fired:
                        flagged.append({"index": i, "signals": fired})
                chart.update(
                    center=params["center"],
                    lcl=params["center"] - z_limit * params["sigma"],
                    ucl=params["center"] + z_limit * params["sigma"],
                    ewma=ewma,
                    ewma_lcl=lcl,
                    ewma_ucl=ucl,
                    flagged=flagged,
                )
            charts.append(chart)
        return {
            "run": run,
            "machine_id": ctx.machine_id,
            "batch_id": ctx.batch_id,
            "batch_number": ctx.batch_number,
            "model_id": model.id if model else None,
            "model_version": model.version if model else None,
            "charts": charts,
        }

    def mspc_chart(
        self, uow: UnitOfWork, run: str, *, model_id: str | None = None
    ) -> dict[str, Any]:
        """Hotelling T² and SPE of every complete sample of the run, with the model's limits."""
        ctx = self.context(uow, run)
        model = self._model(uow, ModelKind.MSPC, ctx, model_id)
        if model is None:
            raise NotFound(
                f"no approved MSPC model for {ctx.master_file_code} on {ctx.machine_type}",
                field="model_id",
            )
        pca = PcaModel.from_dict(model.params["pca"])
        complete, X = self._complete(uow, run, list(model.metrics))
        t2, spe = pca.score(X) if len(X) else (np.zeros(0), np.zeros(0))
        return {
            "run": run,
            "batch_id": ctx.batch_id,
            "model_id": model.id,
            "model_version": model.version,
            "metrics": list(model.metrics),
            "times": [from_us(t).isoformat() for t in complete],
            "t2": [float(v) for v in t2],
            "spe": [float(v) for v in spe],
            "t2_limit": pca.t2_limit,
            "spe_limit": pca.spe_limit,
            "alarm": [
                bool(a or b) for a, b in zip(t2 > pca.t2_limit, spe > pca.spe_limit, strict=True)
            ],
        }

    def contributions(
        self, uow: UnitOfWork, run: str, index: int, *, model_id: str | None = None
    ) -> dict[str, Any]:
        """Each variable's share of T² and SPE for sample `index` of the run."""
        ctx = self.context(uow, run)
        model = self._model(uow, ModelKind.MSPC, ctx, model_id)
        if model is None:
            raise NotFound("no approved MSPC model for this run", field="model_id")
        pca = PcaModel.from_dict(model.params["pca"])
        complete, X = self._complete(uow, run, list(model.metrics))
        if not 0 <= index < len(complete):
            raise ValidationFailed(
                f"sample index {index} is outside 0..{len(complete) - 1}", field="index"
            )
        x = X[index]
        c = pca.contributions(x)
        t2, spe = pca.score_one(x)
        return {
            "run": run,
            "index": index,
            "time": from_us(complete[index]).isoformat(),
            "metrics": list(model.metrics),
            "values": [float(v) for v in x],
            "t2": t2,
            "spe": spe,
            "t2_limit": pca.t2_limit,
            "spe_limit": pca.spe_limit,
            "t2_contributions": [float(v) for v in c.t2],
            "spe_contributions": [float(v) for v in c.spe],
        }

    def machine_charts(
        self, uow: UnitOfWork, machine_id: str, *, hours: float, max_points: int = 600
    ) -> dict[str, Any]:
        """A machine's recent readings per metric (bucketed for long windows: mean, min, max),
        with the individuals limits of the SPC model in force for the product it made last; a
        reading or bucket beyond them is flagged."""
        if not 0 < hours <= 24 * 31:
            raise ValidationFailed("hours must be between 0 and 744", field="hours")
        machine = self._network.get_machine(uow, machine_id)
        telemetry = self._telemetry
        model, product = _machine_model(uow, machine.id, machine.machine_type)
        end = uow.clock.now()
        start = end - timedelta(hours=hours)
        metrics = sorted({s.metric for s in telemetry.series(uow, machine_id=machine.id)})
        out: list[dict[str, Any]] = []
        for metric in metrics:
            data = telemetry.query(
                uow,
                metric=metric,
                machine_id=machine.id,
                start=start,
                end=end,
                max_points=max_points,
            )
            chart: dict[str, Any] = {
                "metric": metric,
                "unit": data.unit,
                "times": [p.at.isoformat() for p in data.points],
                "values": [p.value for p in data.points],
                "low": [p.low for p in data.points],
                "high": [p.high for p in data.points],
                "downsampled": data.downsampled,
            }
            params = model.params["charts"].get(metric) if model else None
            if params is not None:
                z = float(params["L_individuals"])
                lcl = params["center"] - z * params["sigma"]
                ucl = params["center"] + z * params["sigma"]
                chart.update(
                    center=params["center"],
                    lcl=lcl,
                    ucl=ucl,
                    flagged=[i for i, p in enumerate(data.points) if p.high > ucl or p.low < lcl],
                )
            out.append(chart)
        return {
            "machine_id": machine.id,
            "machine": machine.name,
            "hours": hours,
            "product": product,
            "model_id": model.id if model else None,
            "model_version": model.version if model else None,
            "charts": out,
        }


def _machine_model(
    uow: UnitOfWork, machine_id: str, machine_type: str
) -> tuple[MonitoringModel | None, str | None]:
    """The SPC model in force for the product the machine made last (and that product)."""
    last = latest_batch_on_machine(uow.session, machine_id)
    if last is None:
        return None, None
    model = uow.session.scalar(
        select(MonitoringModel).where(
            MonitoringModel.kind == ModelKind.SPC.value,
            MonitoringModel.master_file_code == last.master_file_code,
            MonitoringModel.machine_type == machine_type,
            MonitoringModel.status == ModelStatus.APPROVED.value,
        )
    )
    return model, last.master_file_code
