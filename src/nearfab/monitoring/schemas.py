"""Response schemas of monitoring: alarms and monitoring models."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from nearfab.common.schemas import Out, Timestamp


class AlarmOut(Out):
    """A process or telemetry alarm with its disposition (open ones block release)."""

    id: str
    source: str
    rule: str
    severity: str
    status: str
    site_id: str
    machine_id: str
    run: str | None
    batch_id: str | None
    metric: str | None
    model_id: str | None
    message: str
    value: float | None
    limit: float | None
    first_at: Timestamp
    last_at: Timestamp
    count: int
    details: dict[str, Any]
    disposition: str | None
    disposition_note: str | None
    closed_by: str | None
    closed_at: Timestamp | None


class ModelOut(Out):
    """A monitoring model (SPC limits or an MSPC model) and its approval."""

    id: str
    kind: str
    master_file_code: str
    machine_type: str
    version: int
    status: str
    metrics: list[str]
    training: dict[str, Any]
    created_at: Timestamp
    created_by: str
    approved_at: Timestamp | None
    approved_by: str | None


class ModelDetailOut(ModelOut):
    """A monitoring model with its fitted parameters and whether its approval still holds."""

    params: dict[str, Any]
    approval_valid: bool | None


class IntervalOut(Out):
    """A two-sided confidence interval."""

    lower: float | None
    upper: float | None
    confidence: float


class CapabilityOut(Out):
    """Cp, Cpk, Pp, Ppk with confidence intervals of one process parameter over qualified
    runs, against the master file's specification."""

    metric: str
    unit: str | None
    target: int | float | None
    runs: int
    n: int
    mean: float
    sigma_within: float
    sigma_overall: float
    within_method: str
    lsl: int | float | None
    usl: int | float | None
    cp: float | None
    cpu: float | None
    cpl: float | None
    cpk: float | None
    pp: float | None
    ppu: float | None
    ppl: float | None
    ppk: float | None
    cp_interval: IntervalOut | None
    cpk_interval: IntervalOut | None
    pp_interval: IntervalOut | None
    ppk_interval: IntervalOut | None


class FlaggedPointOut(Out):
    """A point of a control chart that the model's enabled run rules flag."""

    index: int
    signals: list[str] = Field(description="The rules that fired, e.g. we1, ewma, cusum_upper")


class ControlChartOut(Out):
    """One metric of a run with no SPC limits for it: times (UTC, with zone) and values."""

    metric: str
    unit: str
    times: list[Timestamp]
    values: list[float]


class ControlChartLimitsOut(ControlChartOut):
    """One metric of a run with the SPC model's limits: centre and individuals limits, the
    EWMA with its limits, and the points the model's enabled signals flag."""

    center: float
    lcl: float
    ucl: float
    ewma: list[float]
    ewma_lcl: list[float]
    ewma_ucl: list[float]
    flagged: list[FlaggedPointOut]


class RunChartsOut(Out):
    """Control-chart data per metric of a run, with the SPC model in force (if any)."""

    run: str
    machine_id: str
    batch_id: str | None
    batch_number: str | None
    model_id: str | None
    model_version: int | None
    # a metric the model has limits for carries them; any other is values only
    charts: list[ControlChartLimitsOut | ControlChartOut]


class MspcChartOut(Out):
    """Hotelling T² and SPE of every complete sample of a run, with the MSPC model's limits."""

    run: str
    batch_id: str | None
    model_id: str
    model_version: int
    metrics: list[str]
    times: list[Timestamp]
    t2: list[float]
    spe: list[float]
    t2_limit: float
    spe_limit: float
    alarm: list[bool] = Field(description="Per sample: T² or SPE beyond its limit")


class ContributionsOut(Out):
    """Each variable's contribution to T² and SPE for one sample of a run."""

    run: str
    index: int
    time: Timestamp
    metrics: list[str]
    values: list[float]
    t2: float
    spe: float
    t2_limit: float
    spe_limit: float
    t2_contributions: list[float]
    spe_contributions: list[float]
