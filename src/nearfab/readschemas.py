"""Response schemas of the cross-domain read models (`readmodels.py`): an order with its jobs,
batches, QP reviews and packs, and the electronic batch record with its alarms, review and
packs. They sit above every domain, like the read models that fill them, so no domain imports
a higher one to describe them (the import contract in pyproject.toml)."""

from __future__ import annotations

from typing import Any

from nearfab.common.schemas import Out, Timestamp
from nearfab.custody.schemas import UnitOut
from nearfab.monitoring.schemas import AlarmOut
from nearfab.orders.schemas import MasterFileRefOut, OrderBatchOut, OrderJobOut
from nearfab.production.schemas import (
    BatchLotOut,
    BatchMachineOut,
    BatchOperatorOut,
    BatchSiteOut,
    BatchStepOut,
    DeviationOut,
)
from nearfab.quality.schemas import ReviewOut


class OrderOut(Out):
    """An order with its jobs, batches, release reviews, packs and audit timeline."""

    id: str
    status: str
    medication: str
    dose_value: float
    dose_unit: str
    doses_per_day: float | None
    units: int
    patient_ref: str
    patient_group: str | None
    master_file: MasterFileRefOut
    design: dict[str, Any] | None
    stop_reason: str | None
    need_by: Timestamp
    created_at: Timestamp
    prescription_id: str
    jobs: list[OrderJobOut]
    batches: list[OrderBatchOut]
    reviews: list[ReviewOut]
    packs: list[UnitOut]
    # audit rows: their shape is the identity domain's (identity/schemas.py)
    timeline: list[dict[str, Any]]


class BatchOut(Out):
    """The electronic batch record: what was made, where, from what, by whom, how it ran,
    its alarms, deviations, release review, signatures, packs and audit trail."""

    id: str
    batch_number: str
    status: str
    order_id: str
    job_id: str
    master_file: MasterFileRefOut
    site: BatchSiteOut
    machine: BatchMachineOut
    material_lot: BatchLotOut
    operator_id: str
    operator: BatchOperatorOut
    ticket_hash: str
    design: dict[str, Any]
    started_at: Timestamp
    finished_at: Timestamp | None
    # the family's measurement document of the run, and the units the machine made
    measurements: dict[str, Any] | None
    units_made: int | None
    telemetry_summary: dict[str, Any] | None
    cpp_excursions: list[Any] | None
    machine_events: list[Any] | None
    failure_reason: str | None
    steps: list[BatchStepOut]
    alarms: list[AlarmOut]
    deviations: list[DeviationOut]
    review: ReviewOut | None
    # signature and audit rows: their shapes are the identity domain's (identity/schemas.py)
    signatures: list[dict[str, Any]]
    packs: list[UnitOut]
    audit: list[dict[str, Any]]
