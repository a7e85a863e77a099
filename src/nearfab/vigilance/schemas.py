"""Typed answers of pharmacovigilance (API, CLI --json, CSV alike)."""

from __future__ import annotations

from typing import Any

from nearfab.common.schemas import Out, Timestamp


class AdverseEventOut(Out):
    id: str
    unit_id: str
    order_id: str
    site_id: str
    batch_id: str
    description: str
    seriousness: str | None
    actuality: str
    onset_at: Timestamp | None
    source: str
    source_id: str | None
    reported_at: Timestamp
    reported_by: str


class ExposedPackOut(Out):
    relation: str  # reported pack | same batch | shared material lot
    unit_id: str
    serial: str
    batch_number: str
    made_at_site: str
    material_lot: str
    patient_ref: str
    status: str
    dispensed_at: Timestamp | None
    exposed: bool


class AdverseEventTraceOut(Out):
    event: AdverseEventOut
    pack: dict[str, Any]
    patient_ref: str | None
    batch_record: dict[str, Any]
    machine: dict[str, Any]
    site: dict[str, Any]
    material_lots: list[dict[str, Any]]
    master_file: dict[str, Any]
    release: dict[str, Any] | None
    packs: list[ExposedPackOut]
    other_patients_exposed: list[str]
    other_patients_with_packs: list[str]
