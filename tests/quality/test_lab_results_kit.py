"""The family's laboratory-results hook (quality.kit.LabResultsKit), without a database: which
families take laboratory results, how cell_therapy validates them and where it puts them.

Expected values by hand: endotoxin 0.5 EU/mL × 70 mL ÷ 70 kg = 0.5 EU/kg ≤ 5 EU/kg (Ph. Eur.
5.1.10, the default limit) -> pass; CD3+ 0.85 ≥ 0.80 (the default panel) -> pass."""

from __future__ import annotations

import pytest

from nearfab.bootstrap import product_families
from nearfab.common.errors import ValidationFailed
from nearfab.families.cell_therapy.release import CellTherapyRelease
from nearfab.quality.kit import ReleaseEvidence, lab_results_kit, release_kit
from nearfab.quality.logic import propose_release

DESIGN = {"dose_per_kg": 2.0e6, "body_weight_kg": 70.0, "infusion_volume_ml": 70.0}
RULE = {"mode": "rtrt", "tests": ["identity_purity", "endotoxin", "mycoplasma"]}


def test_only_a_family_that_implements_the_hook_takes_laboratory_results() -> None:
    families = product_families()
    taking = {
        name: lab_results_kit(release_kit(families, name)) is not None for name in families.names()
    }
    assert taking["cell_therapy"] is True
    assert taking["solid_dose"] is False


def test_the_results_go_into_the_qc_object_and_turn_the_tests_to_pass() -> None:
    kit = CellTherapyRelease()
    document = {"viable_cells": 1.4e8, "viability": 0.9, "qc": {"viability": 0.88}}
    before = propose_release(kit, ReleaseEvidence(document, DESIGN, {}), RULE)
    assert [c.passed for c in before.checks[:3]] == [None, None, None]

    results = kit.check_lab_results(
        {"markers": {"CD3+": 0.85}, "endotoxin_eu_per_ml": 0.5, "mycoplasma": "negative"}
    )
    merged = kit.with_lab_results(document, results)
    assert merged["qc"] == {
        "viability": 0.88,  # what the document held stays
        "markers": {"CD3+": 0.85},
        "endotoxin_eu_per_ml": 0.5,
        "mycoplasma": "negative",
    }
    assert document["qc"] == {"viability": 0.88}  # the record's document is not touched
    after = propose_release(kit, ReleaseEvidence(merged, DESIGN, {}), RULE)
    assert [c.passed for c in after.checks[:3]] == [True, True, True]
    assert "= 0.500 EU/kg ≤ 5 EU/kg" in after.checks[1].detail
    assert after.decision == "release"


def test_a_marker_panel_replaces_the_one_before_as_a_whole() -> None:
    kit = CellTherapyRelease()
    merged = kit.with_lab_results(
        {"qc": {"markers": {"CD3+": 0.9, "CD19+": 0.01}}}, {"markers": {"CD3+": 0.7}}
    )
    assert merged["qc"]["markers"] == {"CD3+": 0.7}


@pytest.mark.parametrize(
    ("results", "field"),
    [
        ({"endotoxin": 0.5}, "lab_results.endotoxin"),
        ({"viability": True}, "lab_results.viability"),
        ({"viable_cells": float("nan")}, "lab_results.viable_cells"),
        ({"sterility": None}, "lab_results.sterility"),
        ({"sterility": "pending"}, "lab_results.sterility"),
        ({"markers": {"CD3+": -0.1}}, "lab_results.markers.CD3+"),
        ({"markers": "CD3+ 0.9"}, "lab_results.markers"),
    ],
)
def test_each_bad_key_or_value_names_its_field(results: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        CellTherapyRelease().check_lab_results(results)
    assert refused.value.field == field, refused.value.message
