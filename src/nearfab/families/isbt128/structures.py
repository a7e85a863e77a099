"""ISBT 128 chain-of-identity structures: pure parsing, validation and check characters.

What is here (ICCBBA ST-001, the ISBT 128 Standard Technical Specification, v6.2.2):

* the Donation Identification Number, data structure 001 (§2.4.1): ``=αppppyynnnnnnff`` as
  scanned, and the eye-readable text a person types from a label (§7.4.1, §7.5.1.1);
* the keyboard entry check character K (§7.5, Appendix A.1): ISO/IEC 7064 MOD 37-2, a pure
  system with radix 2 and modulus 37, over the 13-character DIN, flags excluded;
* the flag characters ``ff`` (Table 3 [RT004]) and Type 3 flags, 60 + the MOD 37-2 checksum
  (Appendix A.2);
* the Product Code, data structure 003 (§2.4.3, Table 7 [RT008]);
* the Processing Facility Information Code, data structure 033 (§2.4.33).

No I/O and no database: registered facility numbers and the product description code tables
are licensed ICCBBA databases, so whether a FIN or a product description code is *assigned* is
left to the caller; this module checks structure and check characters only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from nearfab.common.errors import ValidationFailed

__all__ = [
    "COLLECTION_TYPES",
    "ISO7064_ALPHABET",
    "DonationIdentificationNumber",
    "FlagCharacters",
    "FlagType",
    "Isbt128Invalid",
    "ProcessingFacilityInformationCode",
    "ProductCode",
    "din_check_character",
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


class Isbt128Invalid(ValidationFailed):
    """Malformed ISBT 128 input: names the field at fault and the reason."""

    code = "isbt128_invalid"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", field=field)
        self.reason = reason


# --- ISO/IEC 7064 MOD 37-2 -------------------------------------------------------------------

#: Character ↔ value table of ISO/IEC 7064 for MOD 37-2 (ST-001 Table 35 [RT035]): the index of a
#: character is its value; the character at index 36 is the supplementary check character "*".
ISO7064_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
_MODULUS = 37
_RADIX = 2


def mod37_2_checksum(data: str, *, field: str = "data") -> int:
    """The ISO/IEC 7064 MOD 37-2 checksum (0-36) of `data` (digits and capitals A-Z).

    The string with its check value c appended satisfies Σ a_i · 2^(i-1) ≡ 1 (mod 37), position 1
    being c. Computed by the pure-system recursive method: p = (p + a) · 2 mod 37 per character,
    then c = (1 - p) mod 37.
    """
    if not data:
        raise Isbt128Invalid(field, "is empty")
    p = 0
    for position, char in enumerate(data, start=1):
        value = ISO7064_ALPHABET.find(char)
        if value < 0 or value == 36:
            raise Isbt128Invalid(
                field, f"character {position} ({char!r}) is not a digit or capital letter A-Z"
            )
        p = (p + value) * _RADIX % _MODULUS
    return (1 - p) % _MODULUS


def mod37_2_check_character(data: str, *, field: str = "data") -> str:
    """The MOD 37-2 check character of `data`: one of 0-9, A-Z or *."""
    return ISO7064_ALPHABET[mod37_2_checksum(data, field=field)]


# --- Donation Identification Number [001] -----------------------------------------------------

# α: {A-N, P-Z, 1-9}; pppp: digits in current usage (ST-001 §2.4.1 reserves letters in
# positions 1-2 of pppp for the future, not yet issued).
_FIN = re.compile(r"[A-NP-Z1-9][0-9]{4}")
_YEAR = re.compile(r"[0-9]{2}")
_SEQUENCE = re.compile(r"[0-9]{6}")
# ff: {0-9} and {A-H, J-N, P, R-Y} (ST-001 §2.4.1 element table).
_FLAG_CHARS = re.compile(r"[0-9A-HJ-NPR-Y]{2}")


def din_check_character(din: str) -> str:
    """The keyboard entry check character K of a 13-character DIN (flags excluded)."""
    _check_din13(din)
    return mod37_2_check_character(din, field="din")


def type3_flags(din: str) -> str:
    """The Type 3 flag characters of a 13-character DIN: 60 + its MOD 37-2 checksum."""
    _check_din13(din)
    return str(60 + mod37_2_checksum(din, field="din"))


class FlagType(StrEnum):
    NOT_USED = "not_used"  # 00
    TYPE_1 = "type_1"  # process control, defined by ICCBBA
    TYPE_2 = "type_2"  # process control, defined locally by the FIN's facility
    TYPE_3 = "type_3"  # 60 + MOD 37-2 checksum of the DIN
    RESERVED = "reserved"  # reserved by ICCBBA for future assignment


# ST-001 Table 3 [RT004], the ICCBBA-defined (Type 1) values.
_TYPE_1_MEANINGS: dict[int, str] = {
    1: "container 1 of a set",
    2: "container 2 of a set",
    3: "container 3 of a set",
    4: "container 4 of a set",
    5: "second (or repeated) demand-printed label",
    6: "pilot tube label",
    7: "test tube label",
    8: "donor record label",
    9: "sample tube for NAT testing",
    10: "samples for bacterial testing",
    11: "match with unit label",
    12: "affixed partial label",
    13: "attached label (used with an affixed partial label)",
    15: "container 5 of a set",
    16: "container 6 of a set",
    17: "container 7 of a set",
    18: "container 8 of a set",
    19: "container 9 of a set",
}


@dataclass(frozen=True)
class FlagCharacters:
    """The two flag characters ff of a DIN and what ST-001 Table 3 says they mean."""

    value: str
    type: FlagType
    meaning: str
    checksum: int | None = None  # Type 3 only: the MOD 37-2 checksum they carry

    @property
    def printed(self) -> bool:
        """Whether the flags appear in the label text: Type 1 and 2 do, 00 and Type 3 don't."""
        return self.type in (FlagType.TYPE_1, FlagType.TYPE_2)


def flag_characters(ff: str) -> FlagCharacters:
    """Classify the flag characters ff of a DIN (ST-001 §2.4.1 and Table 3)."""
    if not isinstance(ff, str) or not _FLAG_CHARS.fullmatch(ff):
        raise Isbt128Invalid(
            "din.flags", f"{ff!r} is not two characters from 0-9, A-H, J-N, P, R-Y"
        )
    if not ff.isdigit():
        return FlagCharacters(ff, FlagType.RESERVED, "alphanumeric value reserved by ICCBBA")
    n = int(ff)
    if n == 0:
        return FlagCharacters(ff, FlagType.NOT_USED, "flag not used")
    if n in _TYPE_1_MEANINGS:
        return FlagCharacters(ff, FlagType.TYPE_1, _TYPE_1_MEANINGS[n])
    if 20 <= n <= 59:
        return FlagCharacters(ff, FlagType.TYPE_2, "defined locally by the assigning facility")
    if 60 <= n <= 96:
        return FlagCharacters(ff, FlagType.TYPE_3, "MOD 37-2 checksum of the DIN", n - 60)
    return FlagCharacters(ff, FlagType.RESERVED, "reserved by ICCBBA for future assignment")


@dataclass(frozen=True)
class DonationIdentificationNumber:
    """A DIN: the 13 characters that identify one donation (collection) for 100 years, + flags."""

    fin: str  # Facility Identification Number αpppp of the facility that assigned the DIN
    year: str  # last two digits of the nominal year of assignment
    sequence: str  # six-digit sequence number within the year for the FIN
    flags: str = "00"

    def __post_init__(self) -> None:
        _check_parts(self.fin, self.year, self.sequence)
        flag = flag_characters(self.flags)
        if flag.type is FlagType.TYPE_3 and flag.checksum != mod37_2_checksum(self.din):
            raise Isbt128Invalid(
                "din.flags",
                f"Type 3 flags {self.flags} do not match the DIN {self.din}: "
                f"expected {type3_flags(self.din)}",
            )

    @property
    def din(self) -> str:
        """The 13-character DIN αppppyynnnnnn (no data identifier, no flags)."""
        return f"{self.fin}{self.year}{self.sequence}"

    @property
    def check_character(self) -> str:
        """The keyboard entry check character K, printed boxed after the DIN text."""
        return mod37_2_check_character(self.din)

    @property
    def flag(self) -> FlagCharacters:
        return flag_characters(self.flags)

    def scanned(self) -> str:
        """Data structure 001 as a bar code carries it: ``=`` + 13-character DIN + ff."""
        return f"={self.din}{self.flags}"

    def eye_readable(self) -> str:
        """Label text: FIN, year and sequence spaced, printed flags, then K in brackets for
        the box (the spacing is nationally defined, ST-001 §7.4.1; this is one common form)."""
        parts = [self.fin, self.year, self.sequence]
        if self.flag.printed:
            parts.append(self.flags)
        parts.append(f"[{self.check_character}]")
        return " ".join(parts)

    def with_type3_flags(self) -> DonationIdentificationNumber:
        """The same DIN carrying its Type 3 (checksum) flags."""
        flags = type3_flags(self.din)
        return DonationIdentificationNumber(self.fin, self.year, self.sequence, flags)


def parse_scanned_din(code: str) -> DonationIdentificationNumber:
    """Parse data structure 001 as scanned: ``=`` + ``αppppyynnnnnnff`` (16 characters).

    Type 3 flags are verified against the DIN; any other flag value is kept as read.
    """
    if not isinstance(code, str):
        raise Isbt128Invalid("din", "must be text")
    if not code.startswith("="):
        raise Isbt128Invalid("din", "data structure 001 starts with the data identifier '='")
    content = code[1:]
    if len(content) != 15:
        raise Isbt128Invalid(
            "din", f"data structure 001 has 15 characters after '=', not {len(content)}"
        )
    return DonationIdentificationNumber(content[:5], content[5:7], content[7:13], content[13:])


_BOXES = {"[": "]", "(": ")", "|": "|"}  # ways to type the box drawn around K


def parse_printed_din(text: str) -> DonationIdentificationNumber:
    """Parse a DIN typed from its label text and check the keyboard entry check character.

    Spaces anywhere are ignored (national spacing varies: ``G1234 17 654321``, ``A123 4140
    12346``). The check character K comes last, bare or boxed as ``[K]``, ``(K)`` or ``|K|``.
    Printed flag characters (Type 1 or 2, ST-001 §7.4.1) may stand between the DIN and K.
    Letters are read case-insensitively, since people type them.
    """
    if not isinstance(text, str):
        raise Isbt128Invalid("din", "must be text")
    compact = "".join(text.split()).upper()
    boxed = len(compact) >= 3 and _BOXES.get(compact[-3]) == compact[-1]
    if boxed:
        body, k = compact[:-3], compact[-2]
    else:
        body, k = compact[:-1], compact[-1:]
    if len(compact) == 13 and not boxed and _is_din13(compact):
        raise Isbt128Invalid("din.check_character", "is missing: a typed DIN must end with K")
    if len(body) == 13:
        flags = "00"
    elif len(body) == 15:
        flags = body[13:]
        if not flag_characters(flags).printed:
            raise Isbt128Invalid(
                "din.flags",
                f"{flags} is not a printed flag value (only Type 1 and 2 flags are printed)",
            )
    else:
        raise Isbt128Invalid(
            "din",
            f"expected 13 DIN characters, optional 2 flag characters and the check character, "
            f"got {len(compact)} characters",
        )
    din = DonationIdentificationNumber(body[:5], body[5:7], body[7:13], flags)
    if k != din.check_character:
        raise Isbt128Invalid(
            "din.check_character",
            f"{k!r} does not match the DIN {din.din}: keyboard entry error (expected "
            f"{din.check_character!r})",
        )
    return din


def parse_din(value: str) -> DonationIdentificationNumber:
    """A DIN from a scan (starts with ``=``) or from typed label text (anything else)."""
    if isinstance(value, str) and value.startswith("="):
        return parse_scanned_din(value)
    return parse_printed_din(value)


def _is_din13(text: str) -> bool:
    return bool(_FIN.fullmatch(text[:5]) and text[5:].isascii() and text[5:].isdigit())


def _check_din13(din: str) -> None:
    if not isinstance(din, str) or len(din) != 13:
        raise Isbt128Invalid("din", f"a DIN has 13 characters, not {din!r}")
    _check_parts(din[:5], din[5:7], din[7:])


def _check_parts(fin: str, year: str, sequence: str) -> None:
    if not isinstance(fin, str) or not _FIN.fullmatch(fin):
        raise Isbt128Invalid(
            "din.fin",
            f"{fin!r} is not a Facility Identification Number "
            f"(one of A-N, P-Z, 1-9, then 4 digits)",
        )
    if not isinstance(year, str) or not _YEAR.fullmatch(year):
        raise Isbt128Invalid("din.year", f"{year!r} is not two digits")
    if not isinstance(sequence, str) or not _SEQUENCE.fullmatch(sequence):
        raise Isbt128Invalid("din.sequence", f"{sequence!r} is not six digits")


# --- Product Code [003] -----------------------------------------------------------------------

#: ST-001 Table 7 [RT008]: the collection type code t (6th character) of the Product Code.
COLLECTION_TYPES: dict[str, str] = {
    "0": "not specified",
    "V": "volunteer homologous (allogeneic)",
    "R": "volunteer research (not for human application)",
    "S": "volunteer source",
    "T": "volunteer therapeutic",
    "P": "paid homologous (allogeneic)",
    "r": "paid research (not for human application)",
    "s": "paid source",
    "A": "autologous, eligible for crossover",
    "1": "for autologous use only",
    "X": "for autologous use only, biohazard",
    "D": "volunteer directed, eligible for crossover",
    "d": "paid directed, eligible for crossover",
    "2": "for directed recipient use only",
    "L": "for directed recipient use only, limited exposure",
    "E": "medical exception, for specified recipient only (allogeneic)",
    "Q": "see special testing bar code",
    "3": "for directed recipient use only, biohazard",
    "4": "designated",
    "5": "dedicated",
    "6": "designated, biohazard",
    "F": "family reserved",
    "C": "replacement",
    "7": "for allogeneic use",
    "8": "for autologous use, contains allogeneic material",
    "B": "directed/dedicated/designated collection use only",
    "H": "directed/dedicated/designated collection, biohazardous",
    "J": "directed/dedicated/designated collection, eligible for crossover",
    "G": "for emergency use only",
}

# ST-001 §2.4.3, mapping of α to the type of product.
_CATEGORIES: dict[str, str] = {
    "E": "blood components",
    "F": "blood components",
    "H": "MPHO with INN and/or USAN names",
    "M": "other therapies",
    "N": "organs",
    "P": "regenerated tissue",
    "R": "reproductive tissue and cells",
    "S": "cellular therapy",
    "T": "tissue",
    "V": "ocular tissue",
    "W": "fecal microbiota",
    "X": "other blood products",
    "Y": "clinical trials",
    **dict.fromkeys("ABCD", "national or local/facility code"),
}
_PDC = re.compile(r"[A-Z][A-Z0-9]{4}")
_DIVISION = re.compile(r"[A-Z0][a-z0]")  # d capital (or 0), s lower case (or 0)


@dataclass(frozen=True)
class ProductCode:
    """Data structure 003: product description code αoooo + ``tds``.

    For E, F, H, S, P, X0 and YA-YZ codes, ``t`` is the collection type and ``ds`` the division
    code; for M, N, R, T, V and W codes ``tds`` is a three-digit division code; for X1-X9 it is
    000; for national/local A-D codes it is defined with the code.
    """

    description_code: str
    tds: str

    def __post_init__(self) -> None:
        pdc, tds = self.description_code, self.tds
        if not isinstance(pdc, str) or not _PDC.fullmatch(pdc):
            raise Isbt128Invalid(
                "product_code.description_code",
                f"{pdc!r} is not a capital letter followed by 4 characters from A-Z, 0-9",
            )
        if pdc[0] not in _CATEGORIES:
            raise Isbt128Invalid(
                "product_code.description_code", f"{pdc[0]!r} is not an assigned product type"
            )
        if pdc[0] == "Y" and not pdc[1].isalpha():
            raise Isbt128Invalid(
                "product_code.description_code", "clinical trial codes run YA000 to YZ999"
            )
        if not isinstance(tds, str) or len(tds) != 3:
            raise Isbt128Invalid("product_code.tds", f"{tds!r} is not three characters")
        if self.has_collection_type:
            if tds[0] not in COLLECTION_TYPES:
                raise Isbt128Invalid(
                    "product_code.collection_type", f"{tds[0]!r} is not a collection type code"
                )
            if not _DIVISION.fullmatch(tds[1:]):
                raise Isbt128Invalid(
                    "product_code.division",
                    f"{tds[1:]!r} is not a division code (capital letter or 0, "
                    f"then lower-case letter or 0)",
                )
        elif pdc[0] in "MNRTVW":
            if not tds.isascii() or not tds.isdigit():
                raise Isbt128Invalid(
                    "product_code.division", f"{tds!r} is not a three-digit division code"
                )
        elif pdc[0] == "X":
            if tds != "000":
                raise Isbt128Invalid("product_code.tds", f"is reserved as 000 for {pdc[:2]} codes")
        elif not re.fullmatch(r"[A-Za-z0-9][A-Z0-9][a-z0-9]", tds):
            raise Isbt128Invalid("product_code.tds", f"{tds!r} has characters out of range")

    @property
    def category(self) -> str:
        return _CATEGORIES[self.description_code[0]]

    @property
    def has_collection_type(self) -> bool:
        pdc = self.description_code
        return pdc[0] in "EFHSP" or pdc[:2] == "X0" or (pdc[0] == "Y" and pdc[1].isalpha())

    @property
    def collection_type(self) -> str | None:
        """The collection type code t, where this kind of code has one."""
        return self.tds[0] if self.has_collection_type else None

    @property
    def division(self) -> str:
        """The division code: ``ds`` where there is a collection type, else ``tds``."""
        return self.tds[1:] if self.has_collection_type else self.tds

    @property
    def divided(self) -> bool:
        return set(self.division) != {"0"}

    @property
    def content(self) -> str:
        """The 8-character data content, as printed under the bar code."""
        return self.description_code + self.tds

    def scanned(self) -> str:
        return f"=<{self.content}"


def parse_product_code(value: str) -> ProductCode:
    """Parse a Product Code as scanned (``=<`` + 8 characters) or as printed (8 characters)."""
    if not isinstance(value, str):
        raise Isbt128Invalid("product_code", "must be text")
    content = value[2:] if value.startswith("=<") else value
    if len(content) != 8:
        raise Isbt128Invalid(
            "product_code", f"the data content has 8 characters, not {len(content)}"
        )
    return ProductCode(content[:5], content[5:])


# --- Processing Facility Information Code [033] ----------------------------------------------

_FIN_P = re.compile(r"[A-NP-Z0-9]{5}")
_FPC = re.compile(r"[A-Z0-9]{6}")


@dataclass(frozen=True)
class ProcessingFacilityInformationCode:
    """Data structure 033: the FIN of the facility that assigned the Product Code, FIN(P), and
    its facility-defined product code (FPC, 000000 when not used)."""

    fin: str
    facility_product_code: str = "000000"

    def __post_init__(self) -> None:
        if not isinstance(self.fin, str) or not _FIN_P.fullmatch(self.fin):
            raise Isbt128Invalid(
                "processing_facility.fin", f"{self.fin!r} is not 5 characters from A-N, P-Z, 0-9"
            )
        fpc = self.facility_product_code
        if not isinstance(fpc, str) or not _FPC.fullmatch(fpc):
            raise Isbt128Invalid(
                "processing_facility.facility_product_code",
                f"{fpc!r} is not 6 characters from A-Z, 0-9",
            )

    def scanned(self) -> str:
        return f"&+{self.fin}{self.facility_product_code}"


def parse_processing_facility_code(value: str) -> ProcessingFacilityInformationCode:
    """Parse data structure 033 as scanned (``&+`` + 11 characters) or its 11-character content."""
    if not isinstance(value, str):
        raise Isbt128Invalid("processing_facility", "must be text")
    content = value[2:] if value.startswith("&+") else value
    if len(content) != 11:
        raise Isbt128Invalid(
            "processing_facility", f"the data content has 11 characters, not {len(content)}"
        )
    return ProcessingFacilityInformationCode(content[:5], content[5:])
