"""Design use cases: dispatch to the product family's designer and envelope check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nearfab.designs.registry import FamilyRegistry
from nearfab.orders import DesignRequest


class DesignService:
    """Implements the orders domain's Designer protocol through the family registry."""

    def __init__(self, registry: FamilyRegistry) -> None:
        self.registry = registry

    def __call__(self, request: DesignRequest) -> tuple[dict[str, Any], str | None]:
        family = self.registry.get(request.master_file.product_family)
        return family.design(request)

    def check_envelope(self, family: str, envelope: Mapping[str, Any]) -> None:
        self.registry.get(family).check_envelope(envelope)
