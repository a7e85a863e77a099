"""ISBT 128 (ICCBBA ST-001 v6.2.2) for every family that uses it: the structures and check
characters (structures.py) and the DIN chain-of-identity rules (chain.py). cell_therapy (the
patient's collection) and bioprint (the donor's islet isolation) both import it from here;
docs/cell-therapy.md lists what is implemented and the sources of the test vectors."""

from nearfab.families.isbt128.chain import collection_din, din_mismatch
from nearfab.families.isbt128.structures import (
    COLLECTION_TYPES,
    ISO7064_ALPHABET,
    DonationIdentificationNumber,
    FlagCharacters,
    FlagType,
    Isbt128Invalid,
    ProcessingFacilityInformationCode,
    ProductCode,
    din_check_character,
    flag_characters,
    mod37_2_check_character,
    mod37_2_checksum,
    parse_din,
    parse_printed_din,
    parse_processing_facility_code,
    parse_product_code,
    parse_scanned_din,
    type3_flags,
)

__all__ = [
    "COLLECTION_TYPES",
    "ISO7064_ALPHABET",
    "DonationIdentificationNumber",
    "FlagCharacters",
    "FlagType",
    "Isbt128Invalid",
    "ProcessingFacilityInformationCode",
    "ProductCode",
    "collection_din",
    "din_check_character",
    "din_mismatch",
    "flag_characters",
    "mod37_2_check_character",
    "mod37_2_checksum",
    "parse_din",
    "parse_printed_din",
    "parse_processing_facility_code",
    "parse_product_code",
    "parse_scanned_din",
    "type3_flags",
]
