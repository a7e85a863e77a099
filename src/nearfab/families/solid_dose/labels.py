"""solid_dose's `labels` part: implements nearfab.custody.kit.LabelKit.

A pack of printlets carries a GS1 identity (GTIN-14, a random serial, batch, expiry) and a
label whose text names the medication and the dose per tablet in mg (docs/custody.md, Labels):

    Hydrocortisone 2.5 mg printlet
    2.5 mg per tablet, 3 a day; pack 1, 30 tablets
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from nearfab.common.quantity import Quantity
from nearfab.custody.gs1 import UnitIdentifier, make_identifier, new_serial, validate_gtin


class SolidDoseLabels:
    identity_scheme: str = "gs1"

    def product_code(self, code: str) -> str:
        return validate_gtin(code)

    def new_identity(self, product_code: str, lot: str, expiry: date) -> UnitIdentifier:
        return make_identifier(product_code, new_serial(), lot, expiry)

    def product_name(self, medication: str, dose: Quantity) -> str:
        return f"{medication} {dose} printlet"

    def dose_text(
        self, dose: Quantity, doses_per_day: float | None, pack_index: int, quantity: int
    ) -> str:
        how = f", {doses_per_day:g} a day" if doses_per_day else ""
        return f"{dose} per tablet{how}; pack {pack_index}, {self.pack_contents(quantity)}"

    def pack_contents(self, quantity: int) -> str:
        return f"{quantity} tablets"

    # --- custody.kit.CustodyRuleKit: no rule (packs at room temperature, no hand-over chain,
    # no in-use period after preparation) ---

    def hand_over_steps(self) -> tuple[str, ...]:
        return ()

    def judge_storage(self, reading: Quantity) -> str | None:
        return None

    def in_use_period(self, design: Mapping[str, Any]) -> timedelta | None:
        return None
