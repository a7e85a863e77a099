"""Materials: lots of drug-loaded filament, inks and consumables held at sites."""

from nearfab.materials.enums import LotStatus
from nearfab.materials.models import MaterialLot
from nearfab.materials.services import MaterialService

__all__ = ["LotStatus", "MaterialLot", "MaterialService"]
