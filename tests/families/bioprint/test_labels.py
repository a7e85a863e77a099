"""bioprint's labels part: label text, the donor DIN chain (ISBT 128, ICCBBA ST-001 vectors) and
the custody rules (chain, storage, in-use period)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests.families.bioprint.world import DIN, DIN_TYPED, OTHER_DIN

from nearfab.common.errors import ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.custody.kit import (
    LabelKit,
    check_chain_identifier,
    declares_chain_identifier,
    hand_over_biz_step,
    hand_over_steps,
    in_use_period,
    judge_storage,
    label_details,
    use_by,
)
from nearfab.families.bioprint.labels import BioprintLabels
from nearfab.families.cell_therapy.labels import CellTherapyLabels

KIT = BioprintLabels()
DESIGN = {
    "dose_per_kg": 6000.0,
    "body_weight_kg": 70.0,
    "din": DIN,
    "shelf_life_h": 12.0,
    "release_h": 3.0,
}


def test_the_label_text() -> None:
    assert isinstance(KIT, LabelKit)
    dose = Quantity(420_000, "{IEQ}")
    assert KIT.product_name("Islet micro-tissues", dose) == (
        "Islet micro-tissues 420,000 IEQ, for the named recipient"
    )
    assert KIT.dose_text(dose, None, 1, 42) == (
        "420,000 IEQ in 42 constructs; pack 1; FOR THE NAMED RECIPIENT ONLY"
    )
    # ST-001 Appendix A: G1234 17 654321 has keyboard entry check character A
    assert label_details(KIT, DESIGN) == (
        "6,000 IEQ/kg for 70 kg",
        "Donor DIN G1234 17 654321 [A]",
        "Store at 15-25 °C; do not refrigerate or freeze",
        "Transplant within 12 h of printing",
    )
    with pytest.raises(ValidationFailed):
        KIT.product_name("x", Quantity(5, "mg"))


def test_the_donor_din_is_checked_at_every_hand_over() -> None:
    assert declares_chain_identifier(KIT)
    assert hand_over_steps(KIT) == ("isolation", "bioprinter", "transport", "transplant")
    assert KIT.chain_identifier(DESIGN) == DIN
    assert check_chain_identifier(KIT, DIN, DIN_TYPED) is None  # the label's text, K = A
    assert check_chain_identifier(KIT, DIN, "=G12341765432170") is None  # other flags
    assert "A9998 18 123456" in (check_chain_identifier(KIT, DIN, OTHER_DIN) or "")
    assert "not a valid DIN" in (check_chain_identifier(KIT, DIN, "G1234 17 654321 [B]") or "")
    assert [hand_over_biz_step(KIT, a, b) for a, b in (("isolation", "bioprinter"),
            ("bioprinter", "transport"), ("transport", "transplant"))] == [
        "receiving", "shipping", "accepting",
    ]  # fmt: skip


def test_storage_and_the_in_use_period() -> None:
    assert judge_storage(KIT, Quantity(22, "Cel")) is None
    assert "outside the storage range 15-25" in (judge_storage(KIT, Quantity(4, "Cel")) or "")
    assert judge_storage(KIT, Quantity(26, "Cel")) is not None
    # 12 h of shelf life from the end of the print: a unit prepared 4 h after the print must be
    # used 8 h later; prepared 13 h after, it is already past
    made = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    assert in_use_period(KIT, DESIGN) == timedelta(hours=12)
    assert use_by(KIT, DESIGN, made + timedelta(hours=4), made) == made + timedelta(hours=12)
    assert use_by(KIT, DESIGN, made + timedelta(hours=13), made) == made + timedelta(hours=12)
    # a family without shelf_life (cell_therapy: 180 min after thaw) is unchanged
    thawed = made + timedelta(days=3)
    assert use_by(CellTherapyLabels(), {}, thawed, made) == thawed + timedelta(minutes=180)
    with pytest.raises(ValidationFailed) as caught:
        KIT.in_use_period({})
    assert caught.value.field == "shelf_life_h"
