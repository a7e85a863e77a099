"""cell_therapy: autologous cell therapy made in a closed micro-factory (issue 15 part 2).

Registered by bootstrap.product_families(); its parts are one module each (docs/cell-therapy.md),
its ISBT 128 structures and DIN rules in the shared families/isbt128/.
"""

from nearfab.families.cell_therapy.family import CellTherapyFamily
from nearfab.families.isbt128.structures import (
    DonationIdentificationNumber,
    FlagCharacters,
    FlagType,
    Isbt128Invalid,
    ProcessingFacilityInformationCode,
    ProductCode,
    din_check_character,
    parse_din,
    parse_printed_din,
    parse_processing_facility_code,
    parse_product_code,
    parse_scanned_din,
)

__all__ = [
    "CellTherapyFamily",
    "DonationIdentificationNumber",
    "FlagCharacters",
    "FlagType",
    "Isbt128Invalid",
    "ProcessingFacilityInformationCode",
    "ProductCode",
    "din_check_character",
    "parse_din",
    "parse_printed_din",
    "parse_processing_facility_code",
    "parse_product_code",
    "parse_scanned_din",
]
