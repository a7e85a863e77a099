"""Is the patient presented the order's patient? One function, used at the collection
(scheduling) and at the bedside hand-over (custody).

The identifier is one text as presented (typed or scanned) and goes to the orders domain's
positive patient identification (`OrderService.match_patient`, issue 20;
docs/patient-identification.md), which tells it apart by its form: nearfab's pseudonym
(PT-…), a wristband barcode (GS1 GSRN, AI 8018), a 10-digit NHS number (modulus 11), else the
order site's hospital number (MRN); it is matched through the keyed hashes kept at intake, and
the site's rule (birth date required) applies. The match is audited by orders (kinds and
outcome, never the values) in the caller's transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.identity import Actor, Permission
from nearfab.orders import OrderService, PresentedIdentifiers
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.orders import Order


def require_patient(
    orders: OrderService,
    uow: UnitOfWork,
    actor: Actor,
    order: Order,
    presented: str | None,
    *,
    purpose: str,
    permission: Permission,
    one_of: list[str | None] | None = None,
    field: str = "patient",
) -> None:
    """ValidationFailed (`field`) when nothing is presented, or what is presented cannot be an
    identifier (a wrong NHS check digit, an unreadable wristband); Refused (code
    wrong_patient, `field`) when it does not identify the order's patient (the message names
    the identifier, never whose it is). `permission` is authorised at the order's site (or one
    of `one_of`)."""
    if not isinstance(presented, str) or not presented.strip():
        raise ValidationFailed(f"{field}: give the patient's identifier as presented", field=field)
    try:
        match = orders.match_patient(
            uow,
            actor,
            order,
            PresentedIdentifiers(patient=presented.strip()),
            purpose=purpose,
            permission=permission,
            one_of=one_of,
        )
    except ValidationFailed as exc:
        raise ValidationFailed(f"{field}: {exc.message}", field=field) from exc
    try:
        match.require()  # Refused wrong_patient (or birth_date_required) naming the kind
    except Refused as exc:
        raise Refused(f"{field}: {exc.message} ({purpose})", field=field, code=exc.code) from exc
