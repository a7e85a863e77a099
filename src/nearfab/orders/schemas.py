"""Response schemas of orders: the order view (jobs, batches, reviews, packs, timeline), the
order list and the answers of the order routes."""

from __future__ import annotations

from typing import Any

from nearfab.common.schemas import Out, Timestamp


class MasterFileRefOut(Out):
    id: str
    code: str
    version: int


class OrderJobOut(Out):
    id: str
    machine_id: str
    site_id: str
    status: str
    planned_start: Timestamp
    planned_finish: Timestamp
    ticket_hash: str | None


class OrderBatchOut(Out):
    id: str
    batch_number: str
    status: str
    machine_id: str
    site_id: str
    started_at: Timestamp
    finished_at: Timestamp | None


class OrderRowOut(Out):
    """An order in the order list."""

    id: str
    status: str
    medication: str
    dose_value: float
    dose_unit: str
    units: int
    master_file_code: str
    created_at: Timestamp
    need_by: Timestamp


class SubmittedOrderOut(Out):
    id: str
    status: str
    site_id: str
    resubmit_of: str | None
    medication: str
    dose_value: float
    dose_unit: str
    units: int
    patient_group: str | None
    design: dict[str, Any] | None
    stop_reason: str | None


class SubmittedOrdersOut(Out):
    """The orders one prescription became (all of its MedicationRequests, or none)."""

    orders: list[SubmittedOrderOut]


class OrderStatusOut(Out):
    id: str
    status: str


class PatientIdentityShownOut(Out):
    """Name and birth date, to confirm by eye (roles that may read identity only)."""

    name: str | None
    birth_date: str | None


class PatientMatchOut(Out):
    """How a patient was identified at a hand-over (docs/patient-identification.md): the kinds
    of identifier compared, the first that did not match (`failed`) and why, never whose."""

    matched: bool
    checked: list[str]
    failed: str | None
    message: str
    identity: PatientIdentityShownOut | None
    code: str | None
