"""Product-family plug-ins: the core finds them here; bootstrap registers them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from nearfab.common.errors import ValidationFailed
from nearfab.orders import DesignRequest


class ProductFamily(Protocol):
    """What the core needs from one kind of product (solid_dose, device, ...)."""

    name: str
    machine_types: tuple[str, ...]

    def check_envelope(self, envelope: Mapping[str, Any]) -> None:
        """Raise ValidationFailed naming the bad key of a master file's design envelope."""
        ...

    def design(self, request: DesignRequest) -> tuple[dict[str, Any], str | None]:
        """Personalised design and patient group; Refused when outside the envelope."""
        ...

    def material_needed_g(self, design: Mapping[str, Any]) -> float: ...

    def duration_s(self, design: Mapping[str, Any]) -> float: ...


class FamilyRegistry:
    def __init__(self) -> None:
        self._families: dict[str, ProductFamily] = {}

    def register(self, family: ProductFamily) -> None:
        self._families[family.name] = family

    def get(self, name: str) -> ProductFamily:
        try:
            return self._families[name]
        except KeyError:
            known = ", ".join(sorted(self._families)) or "none"
            raise ValidationFailed(
                f"unknown product family {name!r} (registered: {known})", field="product_family"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._families)
