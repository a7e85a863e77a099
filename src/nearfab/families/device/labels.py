"""device's `labels` part: implements nearfab.custody.kit.LabelKit.

The flowmeter's UDI (UK MDR 2002 as amended / EU MDR Art. 27) is a GS1 one: the UDI-DI is the
master file's GTIN, the UDI-PI the production identifiers. Custody prints it, on the device's
label and on its pack, as a GS1 DataMatrix with AI 01 (GTIN), 17 (expiry), 10 (lot) and 21
(serial) and records the EPCIS events, as for medicines; `udi_element_string` adds AI 11, the
date of manufacture, for the device's own marking.

    Urine flowmeter, single patient use
    size M, 0-25 mL/s; pack 1, 1 flowmeter
    Orifice 5.83 mm; marks at 5, 10, 15, 20, 25 mL/s
    Single patient use. Not sterile. Rinse with water after each use.
    Design file sha256 ccd93be8a3e5a82f
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from nearfab.common.quantity import Quantity
from nearfab.custody.gs1 import (
    UnitIdentifier,
    join_elements,
    make_identifier,
    new_serial,
    validate_gtin,
)


def udi_elements(identifier: UnitIdentifier, manufactured: date) -> tuple[tuple[str, str], ...]:
    """The UDI's GS1 elements in the order GS1 General Specifications §4.15 recommends for
    a UDI: (01) UDI-DI, then the production identifiers (11) date of manufacture, (17)
    expiry, (10) lot, (21) serial."""
    return (
        ("01", identifier.gtin),
        ("11", manufactured.strftime("%y%m%d")),
        ("17", identifier.expiry.strftime("%y%m%d")),
        ("10", identifier.batch),
        ("21", identifier.serial),
    )


def udi_element_string(identifier: UnitIdentifier, manufactured: date) -> str:
    """Human-readable UDI: "(01)...(11)YYMMDD(17)YYMMDD(10)LOT(21)SERIAL"."""
    return "".join(f"({ai}){value}" for ai, value in udi_elements(identifier, manufactured))


def udi_datamatrix_data(identifier: UnitIdentifier, manufactured: date) -> str:
    """The DataMatrix's data (FNC1 as GS after the variable-length lot)."""
    return join_elements(udi_elements(identifier, manufactured))


class DeviceLabels:
    identity_scheme: str = "gs1"

    def product_code(self, code: str) -> str:
        return validate_gtin(code)

    def new_identity(self, product_code: str, lot: str, expiry: date) -> UnitIdentifier:
        return make_identifier(product_code, new_serial(), lot, expiry)

    def product_name(self, medication: str, dose: Quantity) -> str:
        return f"{medication}, single patient use"

    def dose_text(
        self, dose: Quantity, doses_per_day: float | None, pack_index: int, quantity: int
    ) -> str:
        return f"pack {pack_index}, {self.pack_contents(quantity)}"

    def pack_contents(self, quantity: int) -> str:
        return f"{quantity} flowmeter" + ("" if quantity == 1 else "s")

    def label_details(self, design: Mapping[str, Any]) -> tuple[str, ...]:
        if not design:
            return ()
        marks = ", ".join(f"{float(g['flow_ml_s']):g}" for g in design.get("graduations", []))
        return (
            f"Size {design.get('size')}, 0-{float(design.get('qmax_ml_s', 0)):g} mL/s",
            f"Orifice {float(design.get('orifice_diameter_mm', 0)):.2f} mm; marks at {marks} mL/s",
            "Single patient use. Not sterile. Rinse with water after each use.",
            f"Design file sha256 {str((design.get('design_file') or {}).get('sha256', ''))[:16]}",
        )

    # --- custody.kit.CustodyRuleKit: no rule (room temperature, no chain, no in-use limit)

    def hand_over_steps(self) -> tuple[str, ...]:
        return ()

    def judge_storage(self, reading: Quantity) -> str | None:
        return None

    def in_use_period(self, design: Mapping[str, Any]) -> timedelta | None:
        return None
