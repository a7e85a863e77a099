"""bioprint's prescription part: a dose in islet equivalents per kg of the recipient's body
weight becomes the whole dose (IEQ/kg × weight, in {IEQ}); a dose below the clinical minimum,
another unit or a missing weight is refused naming the field.

The floor is the CIT-07 lot release criterion "Islet quantity: first infusion ≥ 5.0 × 10^3
IEQ/kg recipient BW" (Ricordi et al., Diabetes 2016;65:3418, Table 3), repeated in Adv Med
2014:429710 Table 2 ("First transplant: ≥5,000 IEQ/kg RBW")."""

from __future__ import annotations

import pytest

from nearfab.common.errors import ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.families.bioprint.prescription import BioprintPrescription, ieq_multiplier
from nearfab.orders.kit import DoseIn, PrescriptionKit

KIT = BioprintPrescription()
FIELD = "Bundle.entry[1].resource.dosageInstruction[0].doseAndRate[0].doseQuantity"


def dose(
    value: float, read_as: str = "{IEQ}/kg", *, weight: float | None = 70.0, per_kg: bool = True
) -> DoseIn:
    return DoseIn(
        value=value,
        unit=read_as,
        read_as=read_as,
        kind=None,
        ucum=None,
        per_kg=per_kg,
        weight=None if weight is None else Quantity(weight, "kg"),
        field=FIELD,
    )


def test_it_is_a_prescription_kit() -> None:
    assert isinstance(KIT, PrescriptionKit)


@pytest.mark.parametrize(
    ("value", "unit", "weight", "total"),
    [
        (5000, "{IEQ}/kg", 70, 350_000),  # the floor exactly: 5,000 × 70
        (6000, "{IEQ}/kg", 50, 300_000),  # 6,000 × 50
        (7.5, "10*3{IEQ}/kg", 80, 600_000),  # 7.5 × 10^3 × 80
    ],
)
def test_the_dose_is_ieq_per_kg_times_the_weight(
    value: float, unit: str, weight: float, total: float
) -> None:
    assert KIT.accept_dose(dose(value, unit, weight=weight)) == Quantity(total, "{IEQ}")


def test_the_multiplier_reads_powers_of_ten() -> None:
    assert ieq_multiplier("{IEQ}") == 1
    assert ieq_multiplier("10*3{IEQ}") == 1000
    assert ieq_multiplier("{cells}") is None


@pytest.mark.parametrize("value", [4999, 4000, 1])
def test_a_dose_below_5000_ieq_per_kg_is_refused_naming_the_value(value: float) -> None:
    with pytest.raises(ValidationFailed) as caught:
        KIT.accept_dose(dose(value))
    assert caught.value.field == f"{FIELD}.value"
    assert "5000 IEQ/kg" in caught.value.message


def test_4_x_10_3_ieq_per_kg_is_below_the_floor_too() -> None:
    with pytest.raises(ValidationFailed) as caught:
        KIT.accept_dose(dose(4, "10*3{IEQ}/kg"))
    assert caught.value.field == f"{FIELD}.value"


@pytest.mark.parametrize(
    ("made", "field"),
    [
        (dose(6000, "mg/kg"), f"{FIELD}.unit"),
        (dose(6000, "{cells}/kg"), f"{FIELD}.unit"),
        (dose(6000, "{IEQ}", per_kg=False), f"{FIELD}.unit"),
        (dose(6000, weight=None), FIELD),
        (dose(float("nan")), f"{FIELD}.value"),
    ],
)
def test_other_units_and_a_missing_weight_are_refused(made: DoseIn, field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        KIT.accept_dose(made)
    assert caught.value.field == field


def test_one_transplant_per_order() -> None:
    assert KIT.units_for_course(None, field="dispenseRequest") == 1
    with pytest.raises(ValidationFailed) as caught:
        KIT.units_for_course(2, field="dispenseRequest")
    assert caught.value.field == "dispenseRequest"
