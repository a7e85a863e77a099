"""bioprint's release part on hand-made evidence. Every expected value is worked by hand here;
the limits are the CIT-07 lot release criteria (Ricordi et al., Diabetes 2016;65:3418, Table 3:
≥ 5.0 × 10^3 IEQ/kg, viability ≥ 70 %, GSIR stimulation index > 1, endotoxin ≤ 5.0 EU/kg,
sterility no growth) and purity ≥ 30 % (Adv Med 2014:429710, Table 2)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.families.bioprint.world import DIN, ISOLATION, OTHER_DIN

from nearfab.common.errors import ValidationFailed
from nearfab.families.bioprint.release import BioprintRelease, stimulation_index
from nearfab.quality.kit import ReleaseEvidence, exceptional_only, lab_results_kit, pending_tests

KIT = BioprintRelease()
DESIGN = {"dose_per_kg": 6000.0, "body_weight_kg": 70.0, "bioink_ml": 21.0, "din": DIN}
RULE = {"in_process": ["ieq_dose", "viability"]}
ALL = list(KIT.tests)


def evidence(
    qc: dict[str, Any] | None = None, material: dict[str, Any] | None = None, **top: Any
) -> ReleaseEvidence:
    measurements = {"ieq_printed": 420_000.0, "viability": 0.9, **top}
    if qc is not None:
        measurements["qc"] = qc
    return ReleaseEvidence(
        measurements=measurements, design=DESIGN, material=material or dict(ISOLATION)
    )


def checks(ev: ReleaseEvidence, rule: dict[str, Any] = RULE) -> dict[str, tuple[Any, str]]:
    return {c.name: (c.passed, c.detail) for c in KIT.evaluate(ALL, ev, rule).checks}


def test_sterility_may_be_pending_and_out_of_spec_is_exceptional_only() -> None:
    assert pending_tests(KIT) == frozenset({"sterility"})  # type: ignore[arg-type]
    assert exceptional_only(KIT) is True  # type: ignore[arg-type]
    assert lab_results_kit(KIT) is KIT  # type: ignore[arg-type]


def test_the_stimulation_index_by_hand() -> None:
    # insulin 12.5 µIU/mL at low glucose, 31.25 at high: 31.25 / 12.5 = 2.5
    assert stimulation_index(12.5, 31.25) == pytest.approx(2.5)
    # 0.42 and 0.63 ng/mL: 1.5 (the threshold of Adv Med 2014 Table 2)
    assert stimulation_index(0.42, 0.63) == pytest.approx(1.5)
    with pytest.raises(ValidationFailed) as caught:
        stimulation_index(0.0, 1.0)
    assert caught.value.field == "measurements.qc.insulin_low_glucose"


def test_a_good_batch_passes_with_sterility_pending() -> None:
    qc = {"insulin_low_glucose": 12.5, "insulin_high_glucose": 31.25}
    got = checks(evidence(qc))
    assert got["donor_isolation"][0] is True
    assert "purity 60% ≥ 30%" in got["donor_isolation"][1]
    # 420,000 IEQ ÷ 70 kg = 6,000 IEQ/kg = 100 % of 6,000
    assert got["ieq_dose"] == (
        True,
        "IEQ dose (in-process data): 420,000 IEQ ÷ 70 kg = 6,000 IEQ/kg, 100.0 % of the"
        " prescribed 6,000 IEQ/kg (allowed 80-120 %, at least 5,000 IEQ/kg)",
    )
    assert got["viability"] == (True, "viability (in-process data): 90.0% ≥ 70.0%")
    assert got["potency"] == (
        True,
        "potency: stimulation index 31.25 ÷ 12.5 = 2.50 (meets > 1)",
    )
    assert got["sterility"][0] is None and "pending" in got["sterility"][1]


def test_a_stimulation_index_of_1_or_less_fails() -> None:
    # 18 / 20 = 0.9; and exactly 1 is not "> 1"
    assert (
        checks(evidence({"insulin_low_glucose": 20, "insulin_high_glucose": 18}))["potency"][0]
        is False
    )
    assert (
        checks(evidence({"insulin_low_glucose": 5, "insulin_high_glucose": 5}))["potency"][0]
        is False
    )


def test_the_master_file_may_ask_for_a_higher_index() -> None:
    ev = ReleaseEvidence(
        measurements={"qc": {"insulin_low_glucose": 10, "insulin_high_glucose": 14}},
        design=DESIGN,
        material=dict(ISOLATION),
        specs={"potency": {"min_stimulation_index": 1.5}},
    )
    (check,) = KIT.evaluate(["potency"], ev, {}).checks
    # 14 / 10 = 1.4 < 1.5
    assert check.passed is False and "(fails ≥ 1.5)" in check.detail


def test_below_5000_ieq_per_kg_fails_even_inside_the_band() -> None:
    # prescribed 6,000; counted 336,000 ÷ 70 = 4,800 IEQ/kg: 80 % of the dose, under 5,000
    got = checks(evidence({"ieq": 336_000.0}))
    assert got["ieq_dose"][0] is False
    assert "4,800 IEQ/kg, 80.0 %" in got["ieq_dose"][1]


def test_the_laboratory_count_wins_over_the_printer() -> None:
    got = checks(evidence({"ieq": 378_000.0, "viability": 0.65}))
    # 378,000 ÷ 70 = 5,400 IEQ/kg = 90 %; viability 65 % < 70 %
    assert got["ieq_dose"][0] is True and "5,400 IEQ/kg, 90.0 %" in got["ieq_dose"][1]
    assert got["viability"] == (False, "viability: 65.0% < 70.0%")


def test_another_donors_isolation_fails_the_donor_test() -> None:
    got = checks(evidence(material={**ISOLATION, "din": OTHER_DIN}))
    assert got["donor_isolation"][0] is False
    assert "A9998 18 123456" in got["donor_isolation"][1]


def test_a_low_purity_or_viability_isolation_fails() -> None:
    assert checks(evidence(material={**ISOLATION, "purity": 0.25}))["donor_isolation"][0] is False
    assert checks(evidence(material={**ISOLATION, "viability": 0.6}))["donor_isolation"][0] is False


def test_endotoxin_per_kg_by_hand() -> None:
    # 10 EU/mL × 21 mL ÷ 70 kg = 3 EU/kg ≤ 5; 20 EU/mL -> 6 EU/kg > 5
    assert checks(evidence({"endotoxin_eu_per_ml": 10}))["endotoxin"] == (
        True,
        "endotoxin: 10 EU/mL × 21 mL ÷ 70 kg = 3.000 EU/kg ≤ 5 EU/kg",
    )
    assert checks(evidence({"endotoxin_eu_per_ml": 20}))["endotoxin"][0] is False


def test_sterility_positive_fails_negative_passes() -> None:
    assert checks(evidence({"sterility": "positive"}))["sterility"][0] is False
    assert checks(evidence({"sterility": "negative"}))["sterility"][0] is True


def test_without_results_nothing_is_passed() -> None:
    got = checks(evidence(), rule={})
    assert got["ieq_dose"][0] is None and got["viability"][0] is None
    assert got["potency"][0] is None


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"in_process": ["potency"]}, "release_rule.in_process"),
        ({"in_process": "ieq_dose"}, "release_rule.in_process"),
    ],
)
def test_the_rule_lets_only_counts_come_from_the_printer(rule: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        KIT.check_rule(rule)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("results", "field"),
    [
        ({"insulin": 3}, "lab_results.insulin"),
        ({"viability": 1.2}, "lab_results.viability"),
        ({"insulin_low_glucose": -1}, "lab_results.insulin_low_glucose"),
        ({"sterility": "pending"}, "lab_results.sterility"),
    ],
)
def test_lab_results_are_checked_naming_the_key(results: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        KIT.check_lab_results(results)
    assert caught.value.field == field


def test_lot_attributes_of_an_isolation_and_a_bioink() -> None:
    typed = {**ISOLATION, "din": "G1234 17 654321 [A]"}
    assert KIT.lot_attributes(typed)["din"] == DIN  # kept as scanned, data structure 001
    bioink = {
        "kind": "bioink",
        "composition": "GelMA 5% + alginate 1%",
        "grade": "gmp",
        "sterility_certificate": "CoA-1",
    }
    assert KIT.lot_attributes(bioink) == bioink


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({**ISOLATION, "din": "G1234 17 654321 [B]"}, "attributes.din"),
        ({**ISOLATION, "purity": 1.5}, "attributes.purity"),
        ({k: v for k, v in ISOLATION.items() if k != "ieq"}, "attributes.ieq"),
        ({**ISOLATION, "colour": "amber"}, "attributes.colour"),
        ({"kind": "medium"}, "attributes.kind"),
        (
            {
                "kind": "bioink",
                "composition": "x",
                "grade": "research",
                "sterility_certificate": "c",
            },
            "attributes.grade",
        ),
    ],
)
def test_bad_lot_attributes_are_refused_by_name(attributes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        KIT.lot_attributes(attributes)
    assert caught.value.field == field
