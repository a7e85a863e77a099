"""cell_therapy's `labels` part: implements nearfab.custody.kit.LabelKit.

The chain of identity of an autologous cell product is ISBT 128 (ICCBBA ST-001): the patient's
Donation Identification Number (DIN, assigned at collection, printed with its keyboard entry
check character) and a cellular-therapy Product Code for autologous use. Custody's pack record
(serialisation, EPCIS events, the DataMatrix) is GS1 for every family today: the bag set is
serialised under the master file's GTIN, and the ISBT 128 identity is the family's, printed on
the label as extra lines (`label_details`, read through custody.kit.label_details).

A label (one infusion bag set; cells counted as viable cells, doses per kg of body weight):

    Tisagenlecleucel 1.40 x 10^8 viable cells, autologous
    1.40 x 10^8 viable cells in 2 infusion bags; bag set 1; FOR AUTOLOGOUS USE ONLY
    2.00 x 10^6 viable cells/kg for 70 kg
    DIN G1234 17 654321 [A]
    Store at or below -150 °C in the vapour phase of liquid nitrogen
    Infuse within 180 min of thawing; do not refreeze
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.custody.gs1 import UnitIdentifier, make_identifier, new_serial, validate_gtin
from nearfab.families.cell_therapy.logic.chain import HAND_OVER_BIZ_STEPS, din_mismatch
from nearfab.families.cell_therapy.logic.cryo import (
    CHAIN_STEPS,
    STORAGE_TEXT,
    check_storage_temperature,
    thaw_shelf_life,
)
from nearfab.families.isbt128.structures import (
    DonationIdentificationNumber,
    Isbt128Invalid,
    ProductCode,
    parse_din,
    parse_product_code,
)

# the unit of the dose the prescription part accepts: total viable cells (UCUM annotation)
CELLS = "{cells}"
# ST-001 Table 7: the collection types of a product for the patient it was collected from
AUTOLOGOUS_COLLECTION_TYPES = {
    "1": "for autologous use only",
    "X": "for autologous use only, biohazard",
    "A": "autologous, eligible for crossover",
}


def cells_text(cells: float) -> str:
    """A count of cells as a label prints it: 1.4e8 -> "1.40 x 10^8" (the label fonts have no ×)."""
    if isinstance(cells, bool) or not math.isfinite(cells) or cells < 0:
        raise ValidationFailed(f"a cell count must be ≥ 0, got {cells!r}", field="dose")
    if cells == 0:
        return "0"
    exponent = math.floor(math.log10(cells))
    mantissa = round(cells / 10**exponent, 2)
    if mantissa >= 10:  # 9.999e8 rounds to 10.00 × 10^8: carry
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.2f} x 10^{exponent}"


def _cells(dose: Quantity) -> float:
    if dose.unit != CELLS:
        raise ValidationFailed(
            f"dose {dose}: a cell product's label gives its dose in {CELLS} (viable cells)",
            field="dose",
        )
    return dose.value


class CellTherapyLabels:
    """Label text of an infusion bag set; the ISBT 128 chain of identity and cold-chain rules."""

    # the family's chain-of-identity scheme (custody's pack record is GS1: see the module doc)
    identity_scheme: str = "isbt128"

    # --- custody.kit.LabelKit ---

    def product_code(self, code: str) -> str:
        """The master file's GTIN, under which custody serialises the bag sets."""
        return validate_gtin(code)

    def new_identity(self, product_code: str, lot: str, expiry: date) -> UnitIdentifier:
        return make_identifier(product_code, new_serial(), lot, expiry)

    def product_name(self, medication: str, dose: Quantity) -> str:
        return f"{medication} {cells_text(_cells(dose))} viable cells, autologous"

    def dose_text(
        self, dose: Quantity, doses_per_day: float | None, pack_index: int, quantity: int
    ) -> str:
        # one infusion: doses_per_day does not apply to a cell product
        return (
            f"{cells_text(_cells(dose))} viable cells in {self.pack_contents(quantity)};"
            f" bag set {pack_index}; FOR AUTOLOGOUS USE ONLY"
        )

    def pack_contents(self, quantity: int) -> str:
        return f"{quantity} infusion bag" + ("" if quantity == 1 else "s")

    # --- the family's own: ISBT 128 and the extra label lines ---

    def din(self, value: str) -> DonationIdentificationNumber:
        """The patient's DIN as scanned (``=`` + 15 characters) or typed from a label (with its
        check character): Isbt128Invalid naming din.* when it is not one."""
        return parse_din(value)

    def isbt_product_code(self, value: str) -> ProductCode:
        """An ISBT 128 Product Code for this family: a cellular therapy code (S) collected for
        the patient's own use (collection type 1, X or A)."""
        code = parse_product_code(value)
        if code.description_code[0] != "S":
            raise Isbt128Invalid(
                "product_code.description_code",
                f"{code.description_code} is {code.category}; a cell product has a cellular"
                " therapy code (S....)",
            )
        if code.collection_type not in AUTOLOGOUS_COLLECTION_TYPES:
            raise Isbt128Invalid(
                "product_code.collection_type",
                f"{code.collection_type!r} is not an autologous collection type"
                f" ({', '.join(AUTOLOGOUS_COLLECTION_TYPES)})",
            )
        return code

    def label_details(
        self, design: Mapping[str, Any], chain_identifier: str | None = None
    ) -> tuple[str, ...]:
        """The label's lines after the dose, from the batch's design: the dose per kg for the
        patient's weight, the patient's DIN with its check character (the one bound at the
        collection, `chain_identifier`, else the prescription's in the design), the storage and
        the shelf life after thaw."""
        lines = []
        per_kg, weight = design.get("dose_per_kg"), design.get("body_weight_kg")
        if isinstance(per_kg, int | float) and isinstance(weight, int | float):
            lines.append(f"{cells_text(float(per_kg))} viable cells/kg for {weight:g} kg")
        din = chain_identifier or design.get("din")
        if din:
            lines.append(f"DIN {self.din(str(din)).eye_readable()}")
        if design.get("isbt_product_code"):
            code = self.isbt_product_code(str(design["isbt_product_code"]))
            lines.append(f"Product code {code.content}")
        minutes = design.get("thaw_shelf_life_min")
        shelf = thaw_shelf_life(None if minutes is None else minutes)
        lines.append(STORAGE_TEXT)
        lines.append(
            f"Infuse within {shelf.total_seconds() / 60:g} min of thawing; do not refreeze"
        )
        return tuple(lines)

    # --- custody.kit.CustodyRuleKit: the chain of identity and the cold chain ---

    def hand_over_steps(self) -> tuple[str, ...]:
        """collection -> micro_factory -> cryostore -> infusion: each hand-over checks the
        unit's identity on both sides."""
        return CHAIN_STEPS

    def chain_identifier(self, design: Mapping[str, Any]) -> str | None:
        """The DIN the prescription named (design.din, data structure 001); None when it named
        none (the collection binds one: scheduling keeps it)."""
        value = design.get("din")
        return self.din(str(value)).scanned() if value else None

    def check_chain_identifier(self, expected: str, presented: str) -> str | None:
        """Why the DIN scanned or typed at a hand-over is not the chain's (a wrong DIN, a
        wrong check character, not a DIN at all); None when it names the same collection."""
        return din_mismatch(expected, presented)

    def hand_over_biz_step(self, from_step: str, to_step: str) -> str:
        """The CBV business step of a hand-over into `to_step` (receiving, storing, picking)."""
        return HAND_OVER_BIZ_STEPS.get(to_step, "receiving")

    def judge_storage(self, reading: Quantity) -> str | None:
        """A storage log reading (°C, UCUM "Cel") above -150 °C is an excursion."""
        if reading.unit != "Cel":
            raise ValidationFailed(
                f"a storage reading of a cell product is in Cel (°C), got {reading.unit!r}",
                field="unit",
            )
        try:
            check_storage_temperature(reading.value, field="value")
        except Refused as exc:
            return exc.message
        return None

    def in_use_period(self, design: Mapping[str, Any]) -> timedelta | None:
        """The shelf life after thaw (the design's minutes, else 180 min)."""
        minutes = design.get("thaw_shelf_life_min")
        return thaw_shelf_life(None if minutes is None else minutes)
