"""cell_therapy's labels part (custody.kit.LabelKit): label text in cells, the ISBT 128 chain of
identity on the label (ST-001 examples), storage and the shelf life after thaw."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.custody.kit import LabelKit, label_details
from nearfab.custody.labels import LabelContent
from nearfab.families.cell_therapy.labels import CellTherapyLabels, cells_text
from nearfab.families.cell_therapy.logic.cryo import (
    STORAGE_TEXT,
    Thaw,
    check_storage_temperature,
    thaw_shelf_life,
)
from nearfab.families.isbt128.structures import Isbt128Invalid
from nearfab.families.solid_dose.labels import SolidDoseLabels

GTIN = "09506000134352"  # GS1's example GTIN-14 (General Specifications)
DOSE = Quantity(1.4e8, "{cells}")  # 2.0e6 cells/kg × 70 kg
DESIGN = {"dose_per_kg": 2.0e6, "body_weight_kg": 70.0, "din": "=G12341765432100"}


def test_it_is_a_label_kit() -> None:
    kit = CellTherapyLabels()
    assert isinstance(kit, LabelKit)
    assert kit.identity_scheme == "isbt128"


@pytest.mark.parametrize(
    ("cells", "text"),
    [
        (1.4e8, "1.40 x 10^8"),
        (2.0e6, "2.00 x 10^6"),
        (123456789.0, "1.23 x 10^8"),
        (9.999e8, "1.00 x 10^9"),  # rounds up across the power of ten
        (5.0, "5.00 x 10^0"),
    ],
)
def test_cells_text(cells: float, text: str) -> None:
    assert cells_text(cells) == text


def test_label_text() -> None:
    kit = CellTherapyLabels()
    assert kit.product_name("Tisagenlecleucel", DOSE) == (
        "Tisagenlecleucel 1.40 x 10^8 viable cells, autologous"
    )
    assert kit.dose_text(DOSE, None, 1, 2) == (
        "1.40 x 10^8 viable cells in 2 infusion bags; bag set 1; FOR AUTOLOGOUS USE ONLY"
    )
    assert kit.pack_contents(1) == "1 infusion bag"


def test_a_dose_in_another_unit_is_refused() -> None:
    kit = CellTherapyLabels()
    with pytest.raises(ValidationFailed) as exc:
        kit.product_name("X", Quantity(5.0, "mg"))
    assert exc.value.field == "dose"


def test_label_details_with_the_patients_din() -> None:
    # ST-001 Appendix A: DIN G1234 17 654321 has the keyboard entry check character A
    assert CellTherapyLabels().label_details(DESIGN) == (
        "2.00 x 10^6 viable cells/kg for 70 kg",
        "DIN G1234 17 654321 [A]",
        STORAGE_TEXT,
        "Infuse within 180 min of thawing; do not refreeze",
    )
    # typed from a label, with its check character (ST-001 §7.5.1.1: A9998 18 123456, K = N)
    lines = CellTherapyLabels().label_details(
        {"din": "A9998 18 123456 N", "thaw_shelf_life_min": 30}
    )
    assert lines == (
        "DIN A9998 18 123456 [N]",
        STORAGE_TEXT,
        "Infuse within 30 min of thawing; do not refreeze",
    )


def test_label_details_refuse_a_wrong_check_character() -> None:
    with pytest.raises(Isbt128Invalid) as exc:
        CellTherapyLabels().label_details({"din": "G1234 17 654321 B"})  # K is A
    assert exc.value.field == "din.check_character"


def test_custody_reads_the_optional_label_details() -> None:
    assert label_details(CellTherapyLabels(), DESIGN)[1] == "DIN G1234 17 654321 [A]"
    assert label_details(SolidDoseLabels(), DESIGN) == ()


def test_every_label_line_is_printable() -> None:
    """custody's LabelContent refuses text its fonts cannot print: the family's lines pass."""
    kit = CellTherapyLabels()
    ident = kit.new_identity(kit.product_code(GTIN), "CT-0001", date(2027, 6, 30))
    assert (ident.gtin, ident.batch, ident.expiry) == (GTIN, "CT-0001", date(2027, 6, 30))
    for line in kit.label_details(DESIGN):
        LabelContent(
            identifier=ident,
            product_name=kit.product_name("Tisagenlecleucel", DOSE),
            dose_text=kit.dose_text(DOSE, None, 1, 2),
            patient_ref="P-1",
            storage=line,
        )


def test_isbt_product_code_for_autologous_cells() -> None:
    kit = CellTherapyLabels()
    # S1295 with collection type 1 ("for autologous use only", ST-001 Table 7), no division
    code = kit.isbt_product_code("=<S1295100")
    assert (code.category, code.collection_type, code.divided) == ("cellular therapy", "1", False)
    lines = kit.label_details({"isbt_product_code": "S1295100"})
    assert lines[0] == "Product code S1295100"
    # ST-001's figure S12954A0: collection type 4 (designated) is not autologous
    with pytest.raises(Isbt128Invalid) as exc:
        kit.isbt_product_code("S12954A0")
    assert exc.value.field == "product_code.collection_type"
    # E4306V00 (ST-001 Appendix C) is a blood component, not a cellular therapy code
    with pytest.raises(Isbt128Invalid) as exc:
        kit.isbt_product_code("E4306V00")
    assert exc.value.field == "product_code.description_code"


def test_storage_at_or_below_minus_150() -> None:
    check_storage_temperature(-150.0)
    check_storage_temperature(-196.0)  # liquid nitrogen
    with pytest.raises(Refused) as exc:
        check_storage_temperature(-149.9)
    assert (exc.value.code, exc.value.field) == ("storage_excursion", "temperature_c")
    with pytest.raises(ValidationFailed) as exc2:
        check_storage_temperature(float("nan"))
    assert exc2.value.field == "temperature_c"


def test_shelf_life_after_thaw() -> None:
    thawed = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)
    thaw = Thaw(thawed, thaw_shelf_life())
    assert thaw.infuse_by == datetime(2027, 3, 1, 13, 0, tzinfo=UTC)  # 10:00 + 180 min
    thaw.check_infusion(datetime(2027, 3, 1, 13, 0, tzinfo=UTC))  # on the limit
    with pytest.raises(Refused) as exc:
        thaw.check_infusion(datetime(2027, 3, 1, 13, 1, tzinfo=UTC))
    assert (exc.value.code, exc.value.field) == ("thaw_expired", "thawed_at")
    with pytest.raises(ValidationFailed) as exc2:
        thaw.check_infusion(thawed - timedelta(minutes=1))
    assert exc2.value.field == "infused_at"
    with pytest.raises(ValidationFailed) as exc2:
        Thaw(datetime(2027, 3, 1, 10, 0), thaw_shelf_life())  # no zone
    assert exc2.value.field == "thawed_at"


@pytest.mark.parametrize("minutes", [0, -5, 1441, 30.5, True])
def test_shelf_life_after_thaw_refused(minutes: object) -> None:
    with pytest.raises(ValidationFailed) as exc:
        thaw_shelf_life(minutes)  # type: ignore[arg-type]
    assert exc.value.field == "thaw_shelf_life_min"
