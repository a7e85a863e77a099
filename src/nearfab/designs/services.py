"""Design use cases: dispatch to the product family's designer, envelope check and
prescription rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nearfab.designs.registry import FamilyRegistry
from nearfab.orders import DesignRequest
from nearfab.orders.kit import PrescriptionKit


class DesignService:
    """Implements the orders domain's Designer and PrescriptionKits protocols through the
    family registry."""

    def __init__(self, registry: FamilyRegistry) -> None:
        self.registry = registry

    def __call__(self, request: DesignRequest) -> tuple[dict[str, Any], str | None]:
        family = self.registry.get(request.master_file.product_family)
        return family.design(request)

    def check_envelope(self, family: str, envelope: Mapping[str, Any]) -> None:
        self.registry.get(family).check_envelope(envelope)

    def prescription(self, family: str) -> PrescriptionKit:
        """The family's prescription part (orders.kit.PrescriptionKit)."""
        kit = self.registry.get(family).prescription
        if not isinstance(kit, PrescriptionKit):
            raise TypeError(
                f"product family {family!r}: its prescription part {type(kit).__name__} does "
                "not implement orders.kit.PrescriptionKit"
            )
        return kit
