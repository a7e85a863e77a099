"""Typed answers of the central QA routes (API, pages, CLI --json): one shape each."""

from __future__ import annotations

from typing import Any

from nearfab.common.schemas import Day, Out, Timestamp


class QaItemOut(Out):
    kind: str
    id: str
    site_id: str | None
    site_code: str
    master_file_code: str | None
    title: str
    status: str
    reference: str | None
    opened_at: Timestamp | None
    owner: str | None
    due_date: Day | None
    overdue: bool
    days_open: int


class QaCountsOut(Out):
    deviation: int
    complaint: int
    capa: int
    change_control: int
    suspension: int
    open: int
    overdue: int


class QaSiteCountsOut(QaCountsOut):
    site_code: str


class QaOwnerCountsOut(QaCountsOut):
    owner: str


class QaTrendOut(Out):
    month: str
    site_code: str
    deviations: int
    complaints: int
    capas: int


class CentralQaOut(Out):
    as_of: Day
    network_wide: bool
    items: list[QaItemOut]
    by_site: list[QaSiteCountsOut]
    by_owner: list[QaOwnerCountsOut]
    trend: list[QaTrendOut]


class CapaOut(Out):
    id: str
    site_id: str | None
    master_file_code: str | None
    title: str
    description: str
    source_kind: str
    source_id: str | None
    status: str
    opened_at: Timestamp
    opened_by: str
    closed_at: Timestamp | None
    closed_by: str | None
    effectiveness: str | None
    signature_id: str | None


class ComplaintOut(Out):
    id: str
    site_id: str
    master_file_code: str | None
    batch_id: str | None
    batch_number: str | None
    pack_serial: str | None
    reporter: str
    description: str
    status: str
    received_at: Timestamp
    recorded_by: str
    investigation: str | None
    conclusion: str | None
    capa_id: str | None
    closed_at: Timestamp | None
    closed_by: str | None


class AssignmentOut(Out):
    item_kind: str
    item_id: str
    owner: str
    due_date: Day
    assigned_at: Timestamp
    assigned_by: str


class SiteImpactOut(Out):
    site_id: str
    site_code: str
    change: str
    qualified_machines: list[str]
    open_orders: int
    batches_in_progress: int


class ChangeControlOut(Out):
    id: str
    master_file_code: str
    from_version: int | None
    proposed_master_file_id: str
    to_version: int
    title: str
    description: str
    reason: str
    status: str
    impact: list[SiteImpactOut]
    raised_at: Timestamp
    raised_by: str
    decided_at: Timestamp | None
    decided_by: str | None
    decision_reason: str | None
    signature_id: str | None
    implemented_at: Timestamp | None
    implemented_by: str | None


class AnnualSiteOut(Out):
    site_id: str
    site_code: str
    allowed: bool
    batches_made: int
    batches_released: int
    batches_rejected: int
    batches_failed: int
    batches_awaiting_disposition: int
    packs_dispensed: int


class AnnualDeviationOut(Out):
    id: str
    site_code: str
    batch_number: str
    kind: str
    description: str
    status: str
    opened_at: Timestamp | None


class AnnualRecallOut(Out):
    id: str
    scope: str
    scope_ref: str
    reason: str
    created_at: Timestamp | None
    batches: list[str]
    site_codes: list[str]


class AnnualChangeOut(Out):
    version: int
    status: str
    effective_from: Timestamp | None
    change_control_id: str | None
    change_control_status: str | None
    title: str
    reason: str | None


class AnnualComplaintOut(Out):
    id: str
    site_code: str
    batch_number: str | None
    pack_serial: str | None
    description: str
    status: str
    received_at: Timestamp | None
    conclusion: str | None


class AnnualReportOut(Out):
    master_file_code: str
    title: str
    year: int
    generated_at: Timestamp
    generated_by: str
    sites: list[AnnualSiteOut]
    totals: dict[str, int]
    deviations: list[AnnualDeviationOut]
    recalls: list[AnnualRecallOut]
    changes: list[AnnualChangeOut]
    complaints: list[AnnualComplaintOut]


def row_dict(row: Any, fields: type[Out]) -> dict[str, Any]:
    """An ORM row as its Out schema's dict (times as ISO text)."""
    out: dict[str, Any] = {}
    for name in fields.model_fields:
        v = getattr(row, name)
        out[name] = v.isoformat() if hasattr(v, "isoformat") else v
    return out
