"""What other domains may read of materials' tables."""

from __future__ import annotations

from sqlalchemy import Subquery, select
from sqlalchemy.orm import Session

from nearfab.common.errors import NotFound
from nearfab.materials.models import MaterialLot


def lot_view() -> Subquery:
    """The material lots as a read view: `id`, `lot_number`, `site_id`, `material_code`,
    `status`, `expiry`."""
    return select(
        MaterialLot.id,
        MaterialLot.lot_number,
        MaterialLot.site_id,
        MaterialLot.material_code,
        MaterialLot.status,
        MaterialLot.expiry,
    ).subquery("lot_view")


def lot(session: Session, lot_id: str) -> MaterialLot:
    """A material lot by id (from the session's identity map when loaded); NotFound naming
    `material_lot_id`, as the materials service's own look-up."""
    found = session.get(MaterialLot, lot_id)
    if found is None:
        raise NotFound(f"no material lot {lot_id!r}", field="material_lot_id")
    return found


def lot_by_number(session: Session, lot_number: str) -> MaterialLot | None:
    """The material lot with this lot number, or None."""
    return session.scalar(select(MaterialLot).where(MaterialLot.lot_number == lot_number))
