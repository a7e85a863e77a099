"""/api/v1/worklist: what the caller has to do now on the open batches of their sites
(`nearfab.worklist`, the same view the /worklist page shows)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter

from nearfab.api.deps import AppDep, UowDep, allowed
from nearfab.identity import Actor, Permission
from nearfab.worklist import WorklistOut, worklist_view

router = APIRouter(prefix="/api/v1")


@router.get("/worklist", tags=["production"], response_model=WorklistOut)
def worklist(
    actor: Annotated[Actor, allowed(Permission.BATCH_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The caller's worklist: per open batch of their sites the next manual step due now
    (before the machine starts or after the run) with its entry fields, open batches waiting
    and why, critical entries waiting for them as a second person (never their own), and for
    a QP the audit trails to review and the batches ready to certify. Read-only: sign with
    POST /api/v1/batches/{batch_id}/steps/{code}/sign and .../verify. Empty for a role that
    reads batch records but signs nothing in them (auditor, planner, administrator)."""
    return worklist_view(application, uow, actor)
