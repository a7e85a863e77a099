"""Response schemas of materials: lots of starting material."""

from __future__ import annotations

from typing import Any

from nearfab.common.schemas import Day, Out


class LotOut(Out):
    """A lot of starting material: where it is, its state and what is left of it."""

    id: str
    lot_number: str
    material_code: str
    description: str
    site_id: str
    supplier: str
    expiry: Day
    status: str
    quantity_g: float
    attributes: dict[str, Any]
    assay_pct: float
