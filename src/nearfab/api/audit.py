"""/api/v1 audit trail: review (per site, per record), chain verification, record export."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response

from nearfab.api.deps import AppDep, UowDep, allowed, attachment
from nearfab.common.schemas import Out
from nearfab.identity import Actor, AuditEntryOut, Permission, search_audit, verify_audit_chain
from nearfab.identity.schemas import AuditChainReportOut, AuditCheckpointOut
from nearfab.identity.services.audit import create_checkpoint, export_checkpoint
from nearfab.recordexport import RecordOut, entry_dict, export_record, record_view

router = APIRouter(prefix="/api/v1", tags=["audit"])


class AuditPageOut(Out):
    """A page of audit rows, newest first."""

    items: list[AuditEntryOut]
    total: int
    limit: int
    offset: int


@router.get("/audit", response_model=AuditPageOut)
def audit_rows(
    actor: Annotated[Actor, allowed(Permission.AUDIT_READ)],
    uow: UowDep,
    site_id: str | None = None,
    since: Annotated[datetime | None, Query(description="From (inclusive), with zone")] = None,
    until: Annotated[datetime | None, Query(description="To (exclusive), with zone")] = None,
    actor_filter: Annotated[
        str | None, Query(alias="actor", description="User id, or part of the name")
    ] = None,
    action: str | None = None,
    entity_type: str | None = None,
    entity_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict[str, Any]:
    """Audit rows, newest first, filtered by site, time range, actor, action and record;
    site staff see their own site's rows only."""
    rows, total = search_audit(
        uow,
        actor,
        site_id=site_id,
        since=since,
        until=until,
        who=actor_filter,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        limit=limit,
        offset=offset,
    )
    return {
        "items": [entry_dict(r) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/audit/verify", response_model=AuditChainReportOut)
def audit_verify(
    actor: Annotated[Actor, allowed(Permission.AUDIT_VERIFY)], uow: UowDep
) -> dict[str, Any]:
    """Walk the whole hash chain (hashes, keyed MACs, links) and compare it with every signed
    checkpoint: `ok`, rows checked, the head, the first bad row (edited, deleted before it,
    inserted, reordered) and every problem, the last checkpoint, and how many rows are
    unanchored (after it). Checkpoints are taken by the runner and `nearfab audit checkpoint`;
    an exported file is compared with `nearfab audit verify --against FILE`."""
    return verify_audit_chain(uow, actor).to_dict()


@router.post("/audit/verify", response_model=AuditChainReportOut)
def audit_verify_against(
    actor: Annotated[Actor, allowed(Permission.AUDIT_VERIFY)],
    uow: UowDep,
    checkpoint_file: Annotated[
        dict[str, Any], Body(description="An exported checkpoint file, as JSON")
    ],
) -> dict[str, Any]:
    """Like GET /audit/verify, and compare the rows with an exported checkpoint file kept
    outside the database (the rows it signed must still be there, unchanged)."""
    return verify_audit_chain(uow, actor, against=checkpoint_file).to_dict()


@router.post("/audit/checkpoints", response_model=AuditCheckpointOut)
def audit_checkpoint(
    actor: Annotated[Actor, allowed(Permission.AUDIT_VERIFY)], uow: UowDep
) -> dict[str, Any]:
    """Sign the audit head and every ledger head with the control site's key now."""
    return create_checkpoint(uow, actor).to_dict()


@router.post("/audit/checkpoints/export")
def audit_checkpoint_export(
    actor: Annotated[Actor, allowed(Permission.AUDIT_VERIFY)], uow: UowDep
) -> Response:
    """A fresh checkpoint as a signed JSON file to keep outside the database."""
    doc = export_checkpoint(uow, actor)
    return Response(
        content=json.dumps(doc, indent=2, sort_keys=True),
        media_type="application/json",
        headers=attachment(f"audit-checkpoint-{doc['checkpoint']['seq']}.json"),
    )


@router.get("/records/{entity_type}/{entity_id}/audit", response_model=RecordOut)
def record_audit(
    entity_type: str,
    entity_id: str,
    actor: Annotated[Actor, allowed(Permission.AUDIT_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """One record: its current content, whole audit trail, changed fields and signatures."""
    return record_view(application, uow, actor, entity_type, entity_id)


@router.get("/records/{entity_type}/{entity_id}/export")
def record_export(
    entity_type: str,
    entity_id: str,
    actor: Annotated[Actor, allowed(Permission.RECORD_EXPORT)],
    application: AppDep,
    uow: UowDep,
    format: Literal["json", "pdf"] = "json",
) -> Response:
    """The record with its audit trail and signatures as a file: JSON (electronic copy) or
    PDF (human-readable)."""
    body, media_type, name = export_record(application, uow, actor, entity_type, entity_id, format)
    return Response(
        content=body,
        media_type=media_type,
        headers=attachment(name),
    )
