"""Is the patient presented the order's patient? One function, used at the collection
(scheduling) and at the bedside hand-over (custody).

The patient is identified by the pseudonymous reference every record carries (`Patient.ref`,
e.g. PT-…), compared exactly after trimming. This is the seam for the hospital identifiers of
issue 20 (NHS number, MRN, wristband GSRN, matched through keyed hashes in the orders domain):
when nearfab.orders exports its matcher (`OrderService.match_patient` with the presented
identifier), this function's body calls it and no caller changes.
"""

from __future__ import annotations

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.identity import Actor, Permission
from nearfab.orders import Order, OrderService
from nearfab.uow import UnitOfWork


def require_patient(
    orders: OrderService,
    uow: UnitOfWork,
    actor: Actor,
    order: Order,
    presented: str | None,
    *,
    purpose: str,
    permission: Permission,
    field: str = "patient",
) -> None:
    """ValidationFailed (`field`) when nothing is presented; Refused (code wrong_patient,
    `field`) when `presented` does not identify the order's patient (the message never says
    whose identifier it is). `actor`, `purpose` and `permission` are what the orders domain's
    matcher audits."""
    if not isinstance(presented, str) or not presented.strip():
        raise ValidationFailed(f"{field}: give the patient's identifier as presented", field=field)
    if orders.patient(uow, order.patient_id).ref != presented.strip():
        raise Refused(
            f"{field}: the patient presented for {purpose} is not order {order.id}'s patient",
            field=field,
            code="wrong_patient",
        )
