"""cell_therapy's release part (quality.kit.ReleaseKit): each test by hand calculation, the
pending sterility through quality's proposal, the RTRT rule and the material lots' attributes."""

from __future__ import annotations

from typing import Any

import pytest

from nearfab.common.errors import ValidationFailed
from nearfab.families.cell_therapy.release import CellTherapyRelease
from nearfab.quality.kit import ReleaseEvidence, pending_tests
from nearfab.quality.logic import propose_release, validate_release_rule

ALL = ["viable_cell_dose", "viability", "identity_purity", "endotoxin", "mycoplasma", "sterility"]

# A 70 kg patient prescribed 2.0 × 10^6 viable cells/kg: 1.4 × 10^8 cells in 50 mL.
DESIGN = {
    "dose_per_kg": 2.0e6,
    "body_weight_kg": 70.0,
    "target_cells": 1.4e8,
    "infusion_volume_ml": 50.0,
    "viability_min": 0.7,
}


def qc(**over: Any) -> dict[str, Any]:
    results: dict[str, Any] = {
        "viable_cells": 1.54e8,  # 1.54e8 / 70 = 2.2e6 cells/kg = 110 % of 2.0e6
        "viability": 0.92,
        "markers": {"CD3+": 0.97},
        "endotoxin_eu_per_ml": 0.5,  # 0.5 × 50 / 70 = 0.357 EU/kg ≤ 5
        "mycoplasma": "negative",
        "sterility": "negative",
    }
    results.update(over)
    return results


def evidence(
    lab: dict[str, Any] | None = None,
    *,
    design: dict[str, Any] | None = None,
    specs: dict[str, Any] | None = None,
    process: dict[str, Any] | None = None,
) -> ReleaseEvidence:
    measurements: dict[str, Any] = dict(process or {"viable_cells": 1.5e8, "viability": 0.9})
    if lab is not None:
        measurements["qc"] = lab
    return ReleaseEvidence(
        measurements=measurements,
        design=design or DESIGN,
        material={"kind": "medium", "grade": "gmp", "sterility_certificate": "CoA-1"},
        specs=specs or {},
    )


def run(ev: ReleaseEvidence, tests: list[str] | None = None, **rule: Any) -> dict[str, Any]:
    kit = CellTherapyRelease()
    out = kit.evaluate(tests or ALL, ev, {"mode": "rtrt", "tests": tests or ALL, **rule})
    return {c.name: c for c in out.checks}


def test_all_results_in_and_within_spec_pass() -> None:
    checks = run(evidence(qc()))
    assert [c.passed for c in checks.values()] == [True] * 6
    # 1.54e8 / 70 kg = 2.2e6 cells/kg; 2.2 / 2.0 = 110 %
    assert "2.20 × 10^6 cells/kg, 110.0 % of the prescribed 2.00 × 10^6" in (
        checks["viable_cell_dose"].detail
    )
    # 0.5 EU/mL × 50 mL / 70 kg = 25 / 70 = 0.357 EU/kg
    assert "= 0.357 EU/kg ≤ 5 EU/kg" in checks["endotoxin"].detail


@pytest.mark.parametrize(
    ("cells", "passed"),
    [
        # band 80-120 % of 2.0e6 cells/kg × 70 kg = 1.12e8 ... 1.68e8 cells
        (1.12e8, True),
        (1.68e8, True),
        (1.11e8, False),  # 1.11e8 / 70 / 2e6 = 79.3 %
        (1.69e8, False),  # 120.7 %
    ],
)
def test_dose_band_of_the_prescribed_dose(cells: float, passed: bool) -> None:
    assert run(evidence(qc(viable_cells=cells)))["viable_cell_dose"].passed is passed


def test_dose_against_the_master_files_range_and_band() -> None:
    specs = {"dose": {"min_pct": 90, "max_pct": 110, "max_per_kg": 2.1e6}}
    # 1.4e8 / 70 = 2.0e6 cells/kg: 100 % and below 2.1e6
    assert run(evidence(qc(viable_cells=1.4e8), specs=specs))["viable_cell_dose"].passed
    # 1.5e8 / 70 = 2.143e6: 107.1 % (in the band) but above 2.1e6 cells/kg
    check = run(evidence(qc(viable_cells=1.5e8), specs=specs))["viable_cell_dose"]
    assert check.passed is False
    assert "above the master file's maximum 2.10 × 10^6 cells/kg" in check.detail
    # 1.3e8 / 70 = 1.857e6: 92.9 % within 90-110
    assert run(evidence(qc(viable_cells=1.3e8), specs=specs))["viable_cell_dose"].passed
    # 1.2e8 / 70 = 1.714e6: 85.7 % outside 90-110
    assert not run(evidence(qc(viable_cells=1.2e8), specs=specs))["viable_cell_dose"].passed


def test_viability_limit_from_spec_then_design_then_default() -> None:
    assert run(evidence(qc(viability=0.70)))["viability"].passed  # design's 0.7, at the limit
    check = run(evidence(qc(viability=0.69)))["viability"]
    assert check.passed is False
    assert check.detail == "viability: 69.0% < 70.0% minimum"
    specs = {"viability": {"min": 0.8}}
    assert not run(evidence(qc(viability=0.75), specs=specs))["viability"].passed
    design = {k: v for k, v in DESIGN.items() if k != "viability_min"}
    assert run(evidence(qc(viability=0.70), design=design))["viability"].passed  # default 0.70


def test_markers_default_cd3_and_master_file_markers() -> None:
    assert not run(evidence(qc(markers={"CD3+": 0.79})))["identity_purity"].passed
    specs = {"markers": {"CD3+": {"min": 0.9}, "CD19+": {"min": 0.0}}}
    check = run(evidence(qc(markers={"CD3+": 0.95}), specs=specs))["identity_purity"]
    assert check.passed is None  # no CD19+ result
    assert "no result for CD19+" in check.detail
    check = run(evidence(qc(markers={"CD3+": 0.95, "CD19+": 0.01}), specs=specs))
    assert check["identity_purity"].passed


def test_endotoxin_over_the_limit_per_kg() -> None:
    # 7.5 EU/mL × 50 mL / 70 kg = 5.357 EU/kg > 5
    check = run(evidence(qc(endotoxin_eu_per_ml=7.5)))["endotoxin"]
    assert check.passed is False
    assert "= 5.357 EU/kg > 5 EU/kg" in check.detail
    # 7.0 × 50 / 70 = 5.0: on the limit passes
    assert run(evidence(qc(endotoxin_eu_per_ml=7.0)))["endotoxin"].passed


def test_mycoplasma_positive_fails_and_missing_is_not_evaluated() -> None:
    assert run(evidence(qc(mycoplasma="positive")))["mycoplasma"].passed is False
    assert run(evidence(qc(mycoplasma=None)))["mycoplasma"].passed is None


def test_sterility_may_be_pending_at_release() -> None:
    kit = CellTherapyRelease()
    assert pending_tests(kit) == frozenset({"sterility"})  # quality reads it this way
    rule = {"mode": "rtrt", "tests": ALL}
    proposal = propose_release(kit, evidence(qc(sterility="pending")), rule)
    assert proposal.decision == "release"
    assert proposal.pending == ("sterility",)
    # mycoplasma missing is not pending: the QP decides
    proposal = propose_release(kit, evidence(qc(sterility=None, mycoplasma=None)), rule)
    assert proposal.decision == "needs_qp_review"
    assert proposal.pending == ("sterility",)
    # a positive culture fails
    assert propose_release(kit, evidence(qc(sterility="positive")), rule).decision == "reject"


def test_in_process_data_only_where_the_rule_allows_it() -> None:
    no_lab = {"sterility": "pending", "markers": {"CD3+": 0.9}}
    checks = run(evidence(no_lab))
    assert checks["viable_cell_dose"].passed is None
    assert checks["viability"].passed is None
    # the micro-factory counted 1.5e8 viable cells: 1.5e8 / 70 / 2e6 = 107.1 %
    checks = run(evidence(no_lab), in_process=["viable_cell_dose", "viability"])
    assert checks["viable_cell_dose"].passed
    assert "(in-process data)" in checks["viable_cell_dose"].detail
    assert "107.1 %" in checks["viable_cell_dose"].detail
    assert checks["viability"].detail == "viability (in-process data): 90.0% ≥ 70.0% minimum"
    # the laboratory's result wins when it is there
    checks = run(evidence(qc(viable_cells=1.0e8)), in_process=["viable_cell_dose"])
    assert checks["viable_cell_dose"].passed is False
    assert "(in-process data)" not in checks["viable_cell_dose"].detail


def test_rule_refuses_in_process_for_compendial_tests() -> None:
    kit = CellTherapyRelease()
    validate_release_rule({"mode": "rtrt", "tests": ALL, "in_process": ["viability"]}, kit)
    with pytest.raises(ValidationFailed) as exc:
        validate_release_rule({"mode": "rtrt", "tests": ALL, "in_process": ["sterility"]}, kit)
    assert exc.value.field == "release_rule.in_process"
    with pytest.raises(ValidationFailed) as exc:
        validate_release_rule({"mode": "rtrt", "tests": ALL, "in_process": "viability"}, kit)
    assert exc.value.field == "release_rule.in_process"


@pytest.mark.parametrize(
    ("lab", "design", "field"),
    [
        (qc(viability=92), DESIGN, "measurements.qc.viability"),  # a percentage, not a fraction
        (qc(viable_cells=-1), DESIGN, "measurements.qc.viable_cells"),
        (qc(viable_cells="many"), DESIGN, "measurements.qc.viable_cells"),
        (qc(sterility="clear"), DESIGN, "measurements.qc.sterility"),
        (qc(markers=[0.9]), DESIGN, "measurements.qc.markers"),
        (qc(), {**DESIGN, "body_weight_kg": 0}, "body_weight_kg"),
        (qc(), {**DESIGN, "dose_per_kg": None}, "dose_per_kg"),
    ],
)
def test_bad_evidence_is_named(lab: dict[str, Any], design: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        run(evidence(lab, design=design))
    assert exc.value.field == field


def test_qc_must_be_an_object() -> None:
    ev = ReleaseEvidence(measurements={"qc": [1]}, design=DESIGN, material={})
    with pytest.raises(ValidationFailed) as exc:
        run(ev)
    assert exc.value.field == "measurements.qc"


def test_lot_attributes() -> None:
    kit = CellTherapyRelease()
    got = kit.lot_attributes(
        {
            "kind": "cytokine",
            "grade": "gmp",
            "sterility_certificate": "CoA 2026/114",
            "endotoxin_eu_per_ml": 0.1,
        }
    )
    assert got == {
        "kind": "cytokine",
        "grade": "gmp",
        "sterility_certificate": "CoA 2026/114",
        "endotoxin_eu_per_ml": 0.1,
    }


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ([], "attributes"),
        ({"kind": "medium", "grade": "gmp", "sterility_certificate": "C1", "x": 1}, "attributes.x"),
        ({"kind": "serum", "grade": "gmp", "sterility_certificate": "C1"}, "attributes.kind"),
        (
            {"kind": "medium", "grade": "research", "sterility_certificate": "C1"},
            "attributes.grade",
        ),
        ({"kind": "medium", "grade": "gmp"}, "attributes.sterility_certificate"),
        (
            {"kind": "medium", "grade": "gmp", "sterility_certificate": ""},
            "attributes.sterility_certificate",
        ),
        (
            {
                "kind": "medium",
                "grade": "gmp",
                "sterility_certificate": "C1",
                "endotoxin_eu_per_ml": -1,
            },
            "attributes.endotoxin_eu_per_ml",
        ),
    ],
)
def test_lot_attributes_refused(attributes: Any, field: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        CellTherapyRelease().lot_attributes(attributes)
    assert exc.value.field == field


def test_release_reads_the_design_and_the_documents_the_other_parts_make() -> None:
    """The design part's design and the machines part's validated measurement document, as a
    batch record keeps them, through quality's proposal (the keys the parts share)."""
    from tests.families.cell_therapy.test_registration import ENVELOPE

    from nearfab.families.cell_therapy.logic.design import Envelope, design_product
    from nearfab.families.cell_therapy.machines import CellTherapyMachines

    # 2.0e6 cells/kg for a 70 kg patient: 1.4e8 viable cells prescribed
    design = design_product(
        target_cells=1.4e8, body_weight_kg=70.0, envelope=Envelope.from_dict(ENVELOPE)
    ).to_dict()
    assert design["dose_per_kg"] == pytest.approx(2.0e6)
    document = CellTherapyMachines().check_measurements(
        {
            "viable_cells": 1.47e8,  # 1.47e8 / 70 kg = 2.1e6 cells/kg = 105 % of 2.0e6
            "viability": 0.88,
            "fold_expansion": 4.0,
            "culture_days": 2,
            "cell_density_per_day": [5.0e4, 1.0e5, 2.0e5],
            "viability_per_day": [0.95, 0.9, 0.88],
            "bags": 2,
            "harvested": True,
            "stop_reason": None,
            "qc": {"markers": {"CD3+": 0.95}, "endotoxin_eu_per_ml": 0.2, "mycoplasma": "negative"},
        }
    )
    ev = ReleaseEvidence(measurements=document, design=design, material={})
    rule = {"mode": "rtrt", "tests": ALL, "in_process": ["viable_cell_dose", "viability"]}
    proposal = propose_release(CellTherapyRelease(), ev, rule)
    checks = {c.name: c for c in proposal.checks}
    assert "2.10 × 10^6 cells/kg, 105.0 % of the prescribed 2.00 × 10^6" in (
        checks["viable_cell_dose"].detail
    )
    assert checks["viability"].passed  # 0.88 ≥ the envelope's 0.7
    assert proposal.decision == "release"
    assert proposal.pending == ("sterility",)
