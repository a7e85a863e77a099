"""bioprint's `labels` part: implements nearfab.custody.kit.LabelKit and CustodyRuleKit.

The chain of identity runs from the donor to the recipient under ISBT 128 (ICCBBA ST-001): the
donor's Donation Identification Number (DIN) names the islet isolation, is printed on the label
with its keyboard entry check character, and is scanned on both sides of every hand-over
(families/isbt128). Custody's pack record is GS1 for every family: the set of constructs is
serialised under the master file's GTIN, and the ISBT 128 identity is printed beside it.

    Islet micro-tissues 350,000 IEQ, for the named recipient
    350,000 IEQ in 35 constructs; pack 1; FOR THE NAMED RECIPIENT ONLY
    5,000 IEQ/kg for 70 kg
    Donor DIN G1234 17 654321 [A]
    Store at 15-25 °C; do not refrigerate or freeze
    Transplant within 10 h of printing

Custody rules: the chain isolation -> bioprinter -> transport -> transplant; a storage reading
outside 15-25 °C is an excursion (the family's default transport range, an assumption of this
model that a master file's validation replaces); the shelf life is hours from the end of the
print (`shelf_life`, the custody kit's optional member: custody caps a prepared unit's use-by
there, custody.kit.use_by), so a product prepared for transport (custody's "prepare", after the
QP's release) must be transplanted by print end + shelf_life_h; after it the transplant is
refused (custody: in_use_expired).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from nearfab.common.errors import ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.custody.gs1 import UnitIdentifier, make_identifier, new_serial, validate_gtin
from nearfab.families.isbt128 import DonationIdentificationNumber, din_mismatch, parse_din

IEQ = "{IEQ}"
CHAIN_STEPS = ("isolation", "bioprinter", "transport", "transplant")
# GS1 CBV 2.0 business steps of each hand-over (the EPCIS event custody records)
HAND_OVER_BIZ_STEPS = {
    "bioprinter": "receiving",
    "transport": "shipping",
    "transplant": "accepting",
}
STORAGE_RANGE_C = (15.0, 25.0)
STORAGE_TEXT = "Store at 15-25 °C; do not refrigerate or freeze"


def _ieq(dose: Quantity) -> float:
    if dose.unit != IEQ:
        raise ValidationFailed(
            f"dose {dose}: an islet product's label gives its dose in {IEQ}", field="dose"
        )
    return dose.value


def shelf_hours(design: Mapping[str, Any]) -> float:
    """The shelf life from the end of the print, hours, from the design."""
    try:
        return float(design["shelf_life_h"])
    except (KeyError, TypeError, ValueError):
        raise ValidationFailed("the design gives no shelf_life_h", field="shelf_life_h") from None


class BioprintLabels:
    """Label text of a set of islet micro-tissues; the donor DIN chain and the custody rules."""

    identity_scheme: str = "isbt128"

    def product_code(self, code: str) -> str:
        return validate_gtin(code)

    def new_identity(self, product_code: str, lot: str, expiry: date) -> UnitIdentifier:
        return make_identifier(product_code, new_serial(), lot, expiry)

    def product_name(self, medication: str, dose: Quantity) -> str:
        return f"{medication} {_ieq(dose):,.0f} IEQ, for the named recipient"

    def dose_text(
        self, dose: Quantity, doses_per_day: float | None, pack_index: int, quantity: int
    ) -> str:
        return (
            f"{_ieq(dose):,.0f} IEQ in {self.pack_contents(quantity)}; pack {pack_index};"
            " FOR THE NAMED RECIPIENT ONLY"
        )

    def pack_contents(self, quantity: int) -> str:
        return f"{quantity} construct" + ("" if quantity == 1 else "s")

    def din(self, value: str) -> DonationIdentificationNumber:
        return parse_din(value)

    def label_details(
        self, design: Mapping[str, Any], chain_identifier: str | None = None
    ) -> tuple[str, ...]:
        lines = []
        per_kg, weight = design.get("dose_per_kg"), design.get("body_weight_kg")
        if isinstance(per_kg, int | float) and isinstance(weight, int | float):
            lines.append(f"{per_kg:,.0f} IEQ/kg for {weight:g} kg")
        din = chain_identifier or design.get("din")
        if din:
            lines.append(f"Donor DIN {self.din(str(din)).eye_readable()}")
        lines.append(STORAGE_TEXT)
        if "shelf_life_h" in design:
            lines.append(f"Transplant within {float(design['shelf_life_h']):g} h of printing")
        return tuple(lines)

    # --- custody.kit.CustodyRuleKit ---

    def hand_over_steps(self) -> tuple[str, ...]:
        return CHAIN_STEPS

    def chain_identifier(self, design: Mapping[str, Any]) -> str | None:
        value = design.get("din")
        return self.din(str(value)).scanned() if value else None

    def check_chain_identifier(self, expected: str, presented: str) -> str | None:
        return din_mismatch(expected, presented)

    def hand_over_biz_step(self, from_step: str, to_step: str) -> str:
        return HAND_OVER_BIZ_STEPS.get(to_step, "receiving")

    def judge_storage(self, reading: Quantity) -> str | None:
        if reading.unit != "Cel":
            raise ValidationFailed(
                f"a storage reading of islet micro-tissues is in Cel (°C), got {reading.unit!r}",
                field="unit",
            )
        low, high = STORAGE_RANGE_C
        if not low <= reading.value <= high:
            return f"{reading.value:g} °C is outside the storage range {low:g}-{high:g} °C"
        return None

    def shelf_life(self, design: Mapping[str, Any]) -> timedelta | None:
        """The shelf life from the end of the print (custody.kit.CustodyRuleKit.shelf_life)."""
        return timedelta(hours=shelf_hours(design))

    def in_use_period(self, design: Mapping[str, Any]) -> timedelta | None:
        """From the preparation for transport: never more than the whole shelf life (custody
        caps it at the print's end + the shelf life)."""
        return self.shelf_life(design)
