"""Online scoring: every stored telemetry point goes through the approved models of its product.

The telemetry ingestor calls `Monitor.on_points` inside its own transaction (wired in
bootstrap), so the readings, the chart state and any alarm they raise commit together. For each
run the scorer finds the batch (by the job the machine ran), its product (master-file code) and
the machine type, and the approved SPC and MSPC models for that pair. Readings outside a run,
or of a product without an approved model, are stored but not scored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from math import sqrt
from typing import Any

import numpy as np
from sqlalchemy import select

from nearfab.common.ids import new_id
from nearfab.identity import AuditAction, audit, system_actor
from nearfab.monitoring.enums import AlarmStatus, ModelKind, ModelStatus, Severity
from nearfab.monitoring.events import AlarmRaised
from nearfab.monitoring.logic.mspc import PcaModel
from nearfab.monitoring.logic.online import OnlineMonitor, Signal
from nearfab.monitoring.models import Alarm, MonitoringModel
from nearfab.network import NetworkService
from nearfab.production.reads import batch_records_by_job
from nearfab.telemetry import PointRow, TelemetryService
from nearfab.uow import UnitOfWork

log = logging.getLogger(__name__)

SEVERITY = {
    Signal.WE1: Severity.MAJOR,
    Signal.WE2: Severity.MINOR,
    Signal.WE3: Severity.MINOR,
    Signal.WE4: Severity.MINOR,
    Signal.MOVING_RANGE: Severity.MINOR,
    Signal.EWMA: Severity.MINOR,
    Signal.CUSUM_UPPER: Severity.MINOR,
    Signal.CUSUM_LOWER: Severity.MINOR,
}
DESCRIPTION = {
    Signal.WE1: "reading beyond the individuals limit",
    Signal.WE2: "2 of 3 readings beyond 2 sigma (WE rule 2)",
    Signal.WE3: "4 of 5 readings beyond 1 sigma (WE rule 3)",
    Signal.WE4: "8 readings in a row on one side of the centre (WE rule 4)",
    Signal.MOVING_RANGE: "moving range above its limit",
    Signal.EWMA: "EWMA outside its limits (sustained drift)",
    Signal.CUSUM_UPPER: "upper CUSUM above its decision interval (upward shift)",
    Signal.CUSUM_LOWER: "lower CUSUM above its decision interval (downward shift)",
}
MAX_PENDING_SAMPLES = 64  # incomplete MSPC samples kept per run (a metric may arrive late)


def _at(ts_us: int) -> datetime:
    return datetime.fromtimestamp(ts_us / 1_000_000, UTC)


class _FastChart:
    """The default signals (WE1 at the widened limit, EWMA with exact limits) as bare floats."""

    __slots__ = (
        "center",
        "decay",
        "ewma",
        "ewma_width",
        "inv_sigma",
        "keep",
        "keep2",
        "lam",
        "sigma",
        "z_limit",
    )

    def __init__(self, params: dict[str, Any]) -> None:
        self.center = float(params["center"])
        self.sigma = float(params["sigma"])
        self.inv_sigma = 1.0 / self.sigma
        self.z_limit = float(params["L_individuals"])
        self.lam = float(params["lam"])
        self.keep = 1.0 - self.lam
        self.keep2 = self.keep * self.keep
        self.ewma_width = float(params["L_ewma"]) * self.sigma * sqrt(self.lam / (2.0 - self.lam))
        self.ewma = self.center
        self.decay = 1.0


FAST_SIGNALS = frozenset({Signal.WE1, Signal.EWMA})


@dataclass
class _RunState:
    """What the scorer keeps for one run while it lasts."""

    batch_id: str | None
    site_id: str
    spc_model_id: str | None
    signals: frozenset[Signal]
    charts: dict[str, OnlineMonitor]
    mspc_model_id: str | None
    pca: PcaModel | None
    metrics: tuple[str, ...]
    limits: dict[str, float] = field(default_factory=dict)  # individuals limit (z) per metric
    fast: dict[str, _FastChart] = field(default_factory=dict)
    metric_set: frozenset[str] = frozenset()
    pending: dict[int, dict[str, float]] = field(default_factory=dict)
    open_alarms: dict[tuple[str, str, str], str] = field(default_factory=dict)


class Monitor:
    def __init__(self, network: NetworkService, telemetry: TelemetryService) -> None:
        self._network = network
        self._telemetry = telemetry
        self._runs: dict[tuple[str, str], _RunState | None] = {}
        self._models: dict[str, MonitoringModel] | None = None
        self._pca: dict[str, PcaModel] = {}
        self._lock = threading.RLock()
        self._actor = system_actor("monitoring")

    def models_changed(self, _event: object = None) -> None:
        """Reload approved models for runs that start from now on (running ones keep theirs)."""
        with self._lock:
            self._models = None

    # --- context -------------------------------------------------------------------------------

    def _approved(self, uow: UnitOfWork) -> dict[str, MonitoringModel]:
        if self._models is None:
            rows = uow.session.scalars(
                select(MonitoringModel).where(MonitoringModel.status == ModelStatus.APPROVED.value)
            )
            self._models = {f"{m.kind}|{m.master_file_code}|{m.machine_type}": m for m in rows}
            for m in self._models.values():
                uow.session.expunge(m)
        return self._models

    def _state(self, uow: UnitOfWork, machine_id: str, run: str) -> _RunState | None:
        key = (machine_id, run)
        if key in self._runs:
            return self._runs[key]
        state = None
        batch = batch_records_by_job(uow.session, [run]).get(run)
        if batch is not None:
            machine = self._network.get_machine(uow, machine_id)
            models = self._approved(uow)
            spc = models.get(f"{ModelKind.SPC}|{batch.master_file_code}|{machine.machine_type}")
            mspc = models.get(f"{ModelKind.MSPC}|{batch.master_file_code}|{machine.machine_type}")
            charts: dict[str, OnlineMonitor] = {}
            signals: frozenset[Signal] = frozenset()
            if spc is not None:
                signals = frozenset(Signal(s) for s in spc.params["signals"])
                for metric, c in spc.params["charts"].items():
                    charts[metric] = OnlineMonitor(
                        c["center"], c["sigma"], lam=c["lam"], L=c["L_ewma"], k=c["k"], h=c["h"]
                    )
            pca = None
            if mspc is not None:
                pca = self._pca.get(mspc.id)
                if pca is None:
                    pca = self._pca[mspc.id] = PcaModel.from_dict(mspc.params["pca"])
            state = _RunState(
                batch_id=batch.id,
                site_id=batch.site_id,
                spc_model_id=spc.id if spc else None,
                signals=signals,
                charts=charts,
                mspc_model_id=mspc.id if mspc else None,
                pca=pca,
                metrics=tuple(mspc.metrics) if mspc else (),
            )
            if spc is not None:
                state.limits = {m: c["L_individuals"] for m, c in spc.params["charts"].items()}
                if signals <= FAST_SIGNALS:
                    state.fast = {m: _FastChart(c) for m, c in spc.params["charts"].items()}
                    state.charts = {}
            state.metric_set = frozenset(state.metrics)
        self._runs[key] = state
        return state

    # --- the observer ---------------------------------------------------------------------------

    def on_points(
        self, uow: UnitOfWork, machine_id: str, run: str, points: Sequence[PointRow]
    ) -> None:
        """Score one machine-run's new points (called by the ingestor inside its transaction)."""
        if not run:
            return  # readings outside a run make no product
        with self._lock:
            state = self._state(uow, machine_id, run)
            if state is None:
                return
            fast, charts, pca = state.fast, state.charts, state.pca
            complete: list[tuple[int, dict[str, float]]] = []
            n_metrics = len(state.metrics)
            for metric, ts_us, value in points:
                f = fast.get(metric)
                if f is not None:
                    # WE1 at the widened limit and the EWMA with exact limits, inline: this
                    # runs for every reading, so no objects are made unless something fires
                    z = (value - f.center) * f.inv_sigma
                    e = f.lam * value + f.keep * f.ewma
                    f.ewma = e
                    f.decay *= f.keep2
                    half = f.ewma_width * sqrt(1.0 - f.decay)
                    if z > f.z_limit or -z > f.z_limit or abs(e - f.center) > half:
                        self._spc_fast_alarm(
                            uow, machine_id, run, state, metric, ts_us, value, z, e, half
                        )
                elif metric in charts:
                    self._spc_full(uow, machine_id, run, state, metric, ts_us, value)
                if pca is not None and metric in state.metric_set:
                    sample = state.pending.get(ts_us)
                    if sample is None:
                        sample = state.pending[ts_us] = {}
                        if len(state.pending) > MAX_PENDING_SAMPLES:
                            state.pending.pop(min(state.pending))
                    sample[metric] = value
                    if len(sample) == n_metrics:
                        del state.pending[ts_us]
                        complete.append((ts_us, sample))
            if complete:
                self._score_samples(uow, machine_id, run, state, complete)

    def _spc_fast_alarm(
        self,
        uow: UnitOfWork,
        machine_id: str,
        run: str,
        state: _RunState,
        metric: str,
        ts_us: int,
        value: float,
        z: float,
        ewma: float,
        half: float,
    ) -> None:
        f = state.fast[metric]
        if abs(z) > f.z_limit:
            side = 1 if z >= 0 else -1
            self._spc_alarm(
                uow,
                machine_id,
                run,
                state,
                metric,
                Signal.WE1,
                ts_us,
                value,
                f.center + side * f.z_limit * f.sigma,
                z,
                ewma,
            )
        if abs(ewma - f.center) > half:
            limit = f.center + half if ewma >= f.center else f.center - half
            self._spc_alarm(
                uow, machine_id, run, state, metric, Signal.EWMA, ts_us, ewma, limit, z, ewma
            )

    def _spc_full(
        self,
        uow: UnitOfWork,
        machine_id: str,
        run: str,
        state: _RunState,
        metric: str,
        ts_us: int,
        value: float,
    ) -> None:
        """A model with more than WE1 and EWMA enabled: the full online monitor."""
        chart = state.charts[metric]
        update = chart.update(value)
        z_limit = state.limits[metric]
        # WE1 uses the model's widened limit, not the textbook 3 sigma
        fired: list[Signal] = [
            s for s in update.signals if s in state.signals and s is not Signal.WE1
        ]
        if abs(update.z) > z_limit and Signal.WE1 in state.signals:
            fired.append(Signal.WE1)
        for signal in fired:
            if signal is Signal.EWMA:
                limit = update.ewma_ucl if update.ewma >= chart.center else update.ewma_lcl
                shown = update.ewma
            else:
                side = 1 if update.z >= 0 else -1
                limit = chart.center + side * z_limit * chart.sigma
                shown = value
            self._spc_alarm(
                uow,
                machine_id,
                run,
                state,
                metric,
                signal,
                ts_us,
                shown,
                limit,
                update.z,
                update.ewma,
            )

    def _spc_alarm(
        self,
        uow: UnitOfWork,
        machine_id: str,
        run: str,
        state: _RunState,
        metric: str,
        signal: Signal,
        ts_us: int,
        value: float,
        limit: float,
        z: float,
        ewma: float,
    ) -> None:
        self._raise(
            uow,
            machine_id,
            run,
            state,
            source="spc",
            rule=signal.value,
            metric=metric,
            severity=SEVERITY[signal],
            message=f"{metric}: {DESCRIPTION[signal]}",
            value=value,
            limit=limit,
            at=ts_us,
            model_id=state.spc_model_id,
            details={"z": z, "ewma": ewma},
        )

    def _score_samples(
        self,
        uow: UnitOfWork,
        machine_id: str,
        run: str,
        state: _RunState,
        complete: list[tuple[int, dict[str, float]]],
    ) -> None:
        """T² and SPE of the batch's complete samples in one matrix product."""
        pca = state.pca
        assert pca is not None
        metrics = state.metrics
        X = np.array([[sample[m] for m in metrics] for _, sample in complete], dtype=float)
        t2, spe = pca.score(X)
        over = np.flatnonzero((t2 > pca.t2_limit) | (spe > pca.spe_limit))
        for i in over:
            ts_us, sample = complete[int(i)]
            x = X[int(i)]
            for name, value, limit in (
                ("t2", float(t2[i]), pca.t2_limit),
                ("spe", float(spe[i]), pca.spe_limit),
            ):
                if value <= limit:
                    continue
                contributions = pca.contributions(x)
                shares = contributions.t2 if name == "t2" else contributions.spe
                ranked = sorted(
                    zip(metrics, (float(v) for v in shares), strict=True),
                    key=lambda item: -item[1],
                )
                label = "Hotelling T²" if name == "t2" else "SPE (Q)"
                self._raise(
                    uow,
                    machine_id,
                    run,
                    state,
                    source="mspc",
                    rule=name,
                    metric=None,
                    severity=Severity.MAJOR,
                    message=f"{label} {value:.2f} above its limit {limit:.2f}; largest "
                    f"contribution {ranked[0][0]}",
                    value=value,
                    limit=limit,
                    at=ts_us,
                    model_id=state.mspc_model_id,
                    details={"contributions": dict(ranked), "sample": sample},
                )

    def _raise(
        self,
        uow: UnitOfWork,
        machine_id: str,
        run: str,
        state: _RunState,
        *,
        source: str,
        rule: str,
        metric: str | None,
        severity: Severity,
        message: str,
        value: float | None,
        limit: float | None,
        at: int,
        model_id: str | None,
        details: dict[str, Any],
    ) -> None:
        """One alarm per run, source, rule and metric: repeats count up on the open one."""
        key = (source, rule, metric or "")
        existing_id = state.open_alarms.get(key)
        when = _at(at)
        if existing_id is not None:
            alarm = uow.session.get(Alarm, existing_id)
            if alarm is not None and alarm.status != AlarmStatus.CLOSED.value:
                alarm.count += 1
                alarm.last_at = max(alarm.last_at, when)
                if (
                    value is not None
                    and alarm.value is not None
                    and abs(value - (limit or 0)) > abs(alarm.value - (alarm.limit or 0))
                ):
                    alarm.value, alarm.details = value, details  # keep the worst reading
                return
        alarm = Alarm(
            id=new_id("alm"),
            source=source,
            rule=rule,
            severity=severity.value,
            status=AlarmStatus.OPEN.value,
            site_id=state.site_id,
            machine_id=machine_id,
            run=run,
            batch_id=state.batch_id,
            metric=metric,
            model_id=model_id,
            message=message,
            value=value,
            limit=limit,
            first_at=when,
            last_at=when,
            count=1,
            details=details,
            raised_at=uow.clock.now(),
            disposition=None,
            disposition_note=None,
            closed_by=None,
            closed_at=None,
        )
        uow.session.add(alarm)
        state.open_alarms[key] = alarm.id
        audit(
            uow,
            self._actor,
            AuditAction.CREATE,
            "alarm",
            alarm.id,
            new={
                "source": source,
                "rule": rule,
                "severity": severity.value,
                "machine_id": machine_id,
                "run": run,
                "batch_id": state.batch_id,
                "message": message,
            },
            site_id=state.site_id,
        )
        uow.emit(AlarmRaised(alarm.id, state.batch_id))

    def on_run_end(self, uow: UnitOfWork, machine_id: str, run: str, end_state: str) -> None:
        """Close the run's scoring; a run whose telemetry has a gap gets a critical alarm, since
        the evidence for release is incomplete."""
        with self._lock:
            state = self._state(uow, machine_id, run)
            missing = [
                g for g in self._telemetry.gaps(uow, machine_id=machine_id, run=run) if g.missing
            ]
            if state is not None and missing:
                seqs = sum(len(g.missing) for g in missing)
                self._raise(
                    uow,
                    machine_id,
                    run,
                    state,
                    source="telemetry",
                    rule="gap",
                    metric=None,
                    severity=Severity.CRITICAL,
                    message=f"{seqs} telemetry message(s) of the run never arrived",
                    value=float(seqs),
                    limit=0.0,
                    at=int(uow.clock.now().timestamp() * 1_000_000),
                    model_id=None,
                    details={"gaps": [[g.from_seq, g.to_seq] for g in missing]},
                )
            self._runs.pop((machine_id, run), None)
