"""bioprint's design (design.py, family.py): hand-calculated from the envelope in world.py.

6,000 IEQ/kg × 70 kg = 420,000 IEQ; ÷ 20,000 IEQ/mL = 21 mL of bioink; ⌈21 ÷ 0.5⌉ = 42
constructs; one IEQ is a sphere of 150 µm diameter (Ricordi et al. 1990): π/6 × 0.015³ cm³ =
1.7671e-6 mL, × 420,000 = 0.74220 mL of islet tissue (taken as g); 42 × 90 s = 3,780 s of print;
collection: isolation to print 24 h, print end to transplant 3 + 2 = 5 h."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from tests.families.bioprint.world import DIN, ENVELOPE

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.families.bioprint.design import IEQ_VOLUME_ML, Envelope
from nearfab.families.bioprint.family import DIN_SYSTEM, BioprintFamily
from nearfab.orders import DesignRequest

FAMILY = BioprintFamily()


class _MasterFile:
    def __init__(self, envelope: dict[str, Any]) -> None:
        self.design_envelope = envelope


def request(
    ieq: float = 420_000, weight: float = 70, din: str | None = DIN, **envelope: Any
) -> DesignRequest:
    return DesignRequest(
        master_file=_MasterFile({**ENVELOPE, **envelope}),  # type: ignore[arg-type]
        dose=Quantity(ieq, "{IEQ}"),
        units=1,
        birth_date=None,
        on=date(2026, 12, 7),
        weight=Quantity(weight, "kg"),
        identifiers=() if din is None else (f"{DIN_SYSTEM}|{din}",),
    )


def test_the_ieq_volume_is_a_150_micrometre_sphere() -> None:
    # 4/3 π r³ with r = 75 µm = 0.0075 cm: 1.76715e-6 cm³
    assert pytest.approx(4 / 3 * 3.14159265 * 0.0075**3, rel=1e-6) == IEQ_VOLUME_ML


def test_the_design_by_hand() -> None:
    design, group = FAMILY.design(request())
    assert group is None
    assert design["target_ieq"] == 420_000
    assert design["dose_per_kg"] == pytest.approx(6000)
    assert design["bioink_ml"] == pytest.approx(21.0)
    assert design["constructs"] == 42
    assert design["islet_tissue_ml"] == pytest.approx(0.742201, abs=1e-6)
    assert design["din"] == DIN
    assert FAMILY.material_needed_g(design) == pytest.approx(0.742201, abs=1e-6)
    assert FAMILY.duration_s(design) == 3780
    need = FAMILY.collection(design)
    assert (need.to_start_s, need.to_administration_s) == (24 * 3600, 5 * 3600)


def test_a_partly_filled_last_construct_counts() -> None:
    # 5,100 × 70 = 357,000 IEQ ÷ 20,000 = 17.85 mL ÷ 0.5 = 35.7 -> 36 constructs
    design, _ = FAMILY.design(request(ieq=357_000))
    assert design["constructs"] == 36


@pytest.mark.parametrize(
    ("kwargs", "field", "code"),
    [
        ({"ieq": 420_000, "weight": 25}, "body_weight_kg", "outside_envelope"),
        ({"ieq": 16_000 * 70}, "dose_per_kg", "outside_envelope"),
        ({"ieq": 15_000 * 70, "max_constructs": 40}, "constructs", "outside_envelope"),
        ({"din": None}, "identifier", "donor_din_missing"),
        ({"din": "G1234 17 654321 [B]"}, "identifier", "isbt128_invalid"),
    ],
)
def test_outside_the_envelope_or_without_a_donor_the_order_stops(
    kwargs: dict[str, Any], field: str, code: str
) -> None:
    with pytest.raises(Refused) as caught:
        FAMILY.design(request(**kwargs))
    assert (caught.value.field, caught.value.code) == (field, code)


def test_release_and_transport_longer_than_the_shelf_life_are_refused() -> None:
    # 3 h + 2 h = 5 h > 4 h: the product would expire before the transplant slot
    with pytest.raises(ValidationFailed) as caught:
        Envelope.from_dict({**ENVELOPE, "shelf_life_h": 4})
    assert (caught.value.field, caught.value.code) == (
        "design_envelope.shelf_life_h",
        "shelf_life_expired",
    )
    Envelope.from_dict({**ENVELOPE, "shelf_life_h": 5})  # 5 h exactly fits


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dose_per_kg": {"min": 4000, "max": 9000}}, "design_envelope.dose_per_kg.min"),
        ({"colour": "red"}, "design_envelope.colour"),
        ({"max_constructs": 0}, "design_envelope.max_constructs"),
        ({"ieq_per_ml_bioink": -1}, "design_envelope.ieq_per_ml_bioink"),
    ],
)
def test_the_envelope_is_checked_naming_the_key(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        FAMILY.check_envelope({**ENVELOPE, **changes})
    assert caught.value.field == field
