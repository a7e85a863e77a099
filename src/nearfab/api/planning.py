"""REST endpoints of the network plan: the current plan, its history, and a new plan."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from nearfab.api.deps import AppDep, UowDep, allowed
from nearfab.common.errors import NotFound, Refused
from nearfab.identity import Actor, Permission, authorize_declared
from nearfab.replication.schemas import OrderTransferOut, OrderTransferStateOut
from nearfab.scheduling.schemas import (
    CollectionOut,
    CollectionsOut,
    PlanHistoryEntryOut,
    PlanOut,
    PreCollectionOut,
    PreCollectionsOut,
)
from nearfab.scheduling.services.collections import appointment_dict
from nearfab.scheduling.services.consent import record_dict

router = APIRouter(prefix="/api/v1", tags=["planning"])


class PlanIn(BaseModel):
    reason: str = Field(default="planned on request", min_length=1, max_length=500)
    horizon_h: float | None = Field(default=None, gt=0)
    time_limit_s: float | None = Field(default=None, ge=0, le=600)


@router.get("/plan", response_model=PlanOut)
def current_plan(
    actor: Annotated[Actor, allowed(Permission.PLAN_READ)], application: AppDep
) -> dict[str, Any]:
    """The current plan version: assignments, why orders are late or unplaced, what changed."""
    with application.uow() as uow:  # site staff: their own site's part of the plan
        data = application.scheduling.plan_view(uow, actor)
        if data is None:
            raise NotFound("no plan yet", field="plan")
        return data


@router.get("/plan/history", response_model=list[PlanHistoryEntryOut])
def plan_history(
    actor: Annotated[Actor, allowed(Permission.PLAN_READ)],
    application: AppDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    """Plan versions, newest first: each with its trigger and reason (why) and its changes
    (what changed: each order added, moved, retimed or taken off, with from and to)."""
    with application.uow() as uow:
        return application.scheduling.plan_history_view(uow, actor, limit)


@router.get("/plan/{number}", response_model=PlanOut)
def plan_version(
    number: Annotated[int, Path(ge=1, le=2**31)],
    actor: Annotated[Actor, allowed(Permission.PLAN_READ)],
    application: AppDep,
) -> dict[str, Any]:
    with application.uow() as uow:
        data = application.scheduling.plan_view(uow, actor, number)
        assert data is not None  # plan_version raises NotFound
        return data


@router.post("/plan", status_code=201, response_model=PlanOut)
def make_plan(
    body: PlanIn, actor: Annotated[Actor, allowed(Permission.PLAN_RUN)], application: AppDep
) -> dict[str, Any]:
    """Plan again now (planner, pharmacist or admin); the new version is audited."""
    with application.uow() as uow:  # the service refuses other roles (403)
        version = application.scheduling.plan(
            uow,
            actor,
            reason=body.reason,
            horizon_h=body.horizon_h,
            time_limit_s=body.time_limit_s,
        )
        # the plan is the network's; its maker sees their own part of it, as on reading
        return application.scheduling.plan_scope(uow, actor).plan(version)


class ForwardIn(BaseModel):
    reason: str = Field(max_length=500)


@router.post("/orders/{order_id}/move-forward", status_code=201, response_model=PlanOut)
def move_forward(
    order_id: Annotated[str, Path(min_length=1, max_length=64)],
    body: ForwardIn,
    actor: Annotated[Actor, allowed(Permission.PLAN_RUN)],
    application: AppDep,
) -> dict[str, Any]:
    """Move an order forward: urgent, and the network replanned around it (urgent-order
    trigger) in one transaction, with the reason on both audit rows. The new plan is shown
    as the caller may read it."""
    with application.uow() as uow:
        version = application.scheduling.move_forward(uow, actor, order_id, reason=body.reason)
        return application.scheduling.plan_scope(uow, actor).plan(version)


# --- collections: starting material from the patient for a run (docs/scheduling.md) ---------

OrderId = Annotated[str, Path(min_length=1, max_length=64)]


class CollectionIn(BaseModel):
    collection_at: datetime
    reason: str = Field(max_length=500)


class RebookIn(BaseModel):
    reason: str = Field(max_length=500)
    collection_at: datetime | None = None


def _collections(application: Any, actor: Actor, order_id: str) -> dict[str, Any]:
    with application.uow() as uow:
        data: dict[str, Any] = application.scheduling.collection_view(uow, actor, order_id)
        return data


@router.get("/plan/collections/{order_id}", response_model=CollectionsOut)
def order_collections(
    order_id: OrderId,
    actor: Annotated[Actor, allowed(Permission.ORDER_READ)],
    application: AppDep,
) -> dict[str, Any]:
    """The order's collection (booked against its run's slot), its run, its administration
    date and the hours from collection to administration; earlier appointments after it."""
    return _collections(application, actor, order_id)


@router.post("/plan/collections/{order_id}", response_model=CollectionOut)
def record_collection(
    order_id: OrderId,
    body: CollectionIn,
    actor: Annotated[Actor, allowed(Permission.ORDER_PRIORITY)],
    application: AppDep,
) -> dict[str, Any]:
    """Record the collection date (a planner or clinician, with a reason): the run and the
    administration date move with it when the plan is made again (a planner's: now)."""
    with application.uow() as uow:
        application.scheduling.record_collection(
            uow, actor, order_id, body.collection_at, reason=body.reason
        )
    current = _collections(application, actor, order_id)["current"]
    assert current is not None
    return dict(current)


@router.post("/plan/collections/{order_id}/rebook", response_model=CollectionOut)
def rebook_collection(
    order_id: OrderId,
    body: RebookIn,
    actor: Annotated[Actor, allowed(Permission.ORDER_REPLAN)],
    application: AppDep,
) -> dict[str, Any]:
    """After a failed run: a new slot for a new collection (on `collection_at` if given)."""
    with application.uow() as uow:
        application.scheduling.rebook_after_failure(
            uow, actor, order_id, reason=body.reason, collection_at=body.collection_at
        )
    current = _collections(application, actor, order_id)["current"]
    assert current is not None
    return dict(current)


# --- before and at the collection: eligibility, consent, the collection's identity ----------


class PreCollectionIn(BaseModel):
    kind: str = Field(max_length=32, description="e.g. eligibility, consent (the family's)")
    reference: str = Field(
        max_length=200, description="the document it rests on: consent form and version"
    )
    statement: str = Field(max_length=2000, description="what the clinician confirms")
    username: str | None = Field(default=None, max_length=64)
    password: str = Field(max_length=200)
    totp: str | None = Field(default=None, max_length=16)
    meaning: str | None = Field(default=None, max_length=200)


class CollectedIn(BaseModel):
    patient: str | None = Field(
        default=None, max_length=64, description="the patient's identifier as presented"
    )
    identifier: str | None = Field(
        default=None,
        max_length=64,
        description="the family's chain identifier scanned from the collection's label",
    )
    collected_at: datetime | None = Field(default=None, description="default: now")
    reason: str = Field(default="collected", max_length=500)


@router.get("/plan/collections/{order_id}/pre-collection", response_model=PreCollectionsOut)
def pre_collection_records(
    order_id: OrderId,
    actor: Annotated[Actor, allowed(Permission.ORDER_READ)],
    application: AppDep,
) -> dict[str, Any]:
    """What the order's family requires before its collection, and what is on record."""
    with application.uow() as uow:
        data: dict[str, Any] = application.scheduling.pre_collection_view(uow, actor, order_id)
        return data


@router.post(
    "/plan/collections/{order_id}/pre-collection",
    status_code=201,
    response_model=PreCollectionOut,
)
def record_pre_collection(
    order_id: OrderId,
    body: PreCollectionIn,
    actor: Annotated[Actor, allowed(Permission.COLLECTION_PRE_RECORD)],
    application: AppDep,
) -> dict[str, Any]:
    """A clinician of the ordering site records, e-signed, one of the records the order's
    family requires before the collection (eligibility, consent) with its document's
    reference. Refused (audited) twice, for another kind, or by anyone else."""
    with application.uow() as uow:
        row = application.scheduling.record_pre_collection(
            uow, actor, order_id, kind=body.kind, reference=body.reference,
            statement=body.statement, password=body.password, username=body.username,
            totp=body.totp, meaning=body.meaning,
        )  # fmt: skip
        return record_dict(row)


@router.post("/plan/collections/{order_id}/collected", response_model=CollectionOut)
def record_collected(
    order_id: OrderId,
    body: CollectedIn,
    actor: Annotated[Actor, allowed(Permission.COLLECTION_RECORD)],
    application: AppDep,
) -> dict[str, Any]:
    """The collection happened: the patient's identifier and the family's chain identifier
    scanned from the collection's label. Refused (409, audited, nothing kept) before the
    pre-collection records, for another patient, another or a malformed chain identifier."""
    with application.uow() as uow:
        row = application.scheduling.record_collected(
            uow, actor, order_id, identifier=body.identifier, patient=body.patient,
            collected_at=body.collected_at, reason=body.reason,
        )  # fmt: skip
        return appointment_dict(row, None)


class TransferIn(BaseModel):
    to_site: str = Field(min_length=1, max_length=64)  # the receiving site's code or id
    reason: str = Field(max_length=2000)


@router.post(
    "/orders/{order_id}/transfer",
    status_code=201,
    response_model=OrderTransferOut,
    tags=["orders"],
)
def transfer_order(
    order_id: str,
    body: TransferIn,
    actor: Annotated[Actor, allowed(Permission.PLAN_RUN)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """At the control node: move an order from the site node holding it to another site's
    node (docs/replication.md, "Orders moved between sites"). The caller plans for both sites.
    The giving site gives it up by its own rules (or refuses, naming the order's state), then
    the control hands it to the receiving site. Elsewhere 409 `not_control_node`."""
    if application.transfers is None:
        authorize_declared(actor, Permission.PLAN_RUN)
        raise Refused(
            "orders are moved between site nodes only at the control node of a replicated "
            "network (docs/replication.md)",
            field="node",
            code="not_control_node",
        )
    made = application.transfers.request(
        uow, actor, order_id, to_site=body.to_site, reason=body.reason
    )
    return made.to_dict()


@router.get("/order-transfers", response_model=list[OrderTransferStateOut], tags=["orders"])
def order_transfers(
    actor: Annotated[Actor, allowed(Permission.PLAN_READ)],
    application: AppDep,
    uow: UowDep,
    order_id: Annotated[str | None, Query(max_length=64, description="one order's")] = None,
) -> list[dict[str, Any]]:
    """At the control node: the orders moved between site nodes, newest first, each with
    where it is (requested, given up at the giving site, refused there, handed over, taken,
    waiting or refused at the receiving site), since when, and why it is stuck, if it is
    (docs/replication.md, "Orders moved between sites"). Only the transfers whose giving
    **and** receiving sites the caller's `plan.read` grant reaches. Not under `/orders/`:
    `/orders/{order_id}` would take the path first. Elsewhere 409 `not_control_node`."""
    if application.transfers is None:
        authorize_declared(actor, Permission.PLAN_READ)
        raise Refused(
            "orders are moved between site nodes only at the control node of a replicated "
            "network (docs/replication.md)",
            field="node",
            code="not_control_node",
        )
    return [
        v.to_dict()
        for v in application.transfers.states(
            uow, actor, permission=Permission.PLAN_READ, now=uow.clock.now(), order_id=order_id
        )
    ]
