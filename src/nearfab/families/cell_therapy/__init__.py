"""cell_therapy: autologous cell therapy made in a closed micro-factory (issue 15).

Only the ISBT 128 chain-of-identity logic exists so far; the family itself is not registered.
"""

from nearfab.families.cell_therapy.logic.isbt128 import (
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
