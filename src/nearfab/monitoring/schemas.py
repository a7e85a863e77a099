"""Response schemas of monitoring: alarms and monitoring models."""

from __future__ import annotations

from typing import Any

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
