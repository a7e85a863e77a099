"""What other domains may read of materials' tables."""

from __future__ import annotations

from sqlalchemy import Subquery, select

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
