"""Which site a custody record belongs to, checked the one way the API and the web pages both
use before they show it (a pack's label, DataMatrix symbol or history)."""

from __future__ import annotations

from sqlalchemy import select

from nearfab.common.errors import NotFound
from nearfab.custody.models import SerialUnit
from nearfab.identity import Actor, Permission, authorize
from nearfab.orders.reads import order
from nearfab.production.reads import batch_record
from nearfab.uow import UnitOfWork


def pack_sites(uow: UnitOfWork, unit: SerialUnit) -> set[str]:
    """The sites a pack belongs to: the site that made it and the site that ordered it (an
    order without a site adds none: it never opens the pack to everyone)."""
    # both rows exist (the pack's foreign keys); read from the session when already loaded
    made = batch_record(uow.session, unit.batch_id).site_id
    ordered = order(uow.session, unit.order_id).site_id
    return {s for s in (made, ordered) if s}


def authorize_pack(
    uow: UnitOfWork,
    actor: Actor,
    unit_or_batch_id: str,
    permission: Permission = Permission.TRACE_READ,
) -> list[SerialUnit]:
    """The pack (or every pack of a batch) for someone who may read it at a site it belongs
    to; `Forbidden` (other_site) otherwise, `NotFound` for an unknown id."""
    authorize(actor, permission)  # the role first: no hints to others
    unit = uow.session.get(SerialUnit, unit_or_batch_id)
    units = (
        [unit]
        if unit is not None
        else list(
            uow.session.scalars(
                select(SerialUnit)
                .where(SerialUnit.batch_id == unit_or_batch_id)
                .order_by(SerialUnit.serial)
            )
        )
    )
    if not units:
        raise NotFound(f"no pack or batch {unit_or_batch_id!r}", field="unit_id")
    for u in units:
        authorize(actor, permission, one_of=pack_sites(uow, u))
    return units
