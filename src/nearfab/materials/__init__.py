"""Materials: lots of starting material held at sites, with their family-defined attributes."""

from nearfab.materials.enums import LotStatus
from nearfab.materials.models import MaterialLot
from nearfab.materials.services import LotAttributeRules, MaterialService

__all__ = ["LotAttributeRules", "LotStatus", "MaterialLot", "MaterialService"]
