"""Quality runs the release tests of the product's family, through the registry: a fake family
in this file, whose only test is its own, decides the proposal, names the checks on the QP's
release queue and is what a master file's release rule may list. Quality knows no test name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import ValidationFailed
from nearfab.families.solid_dose.release import SolidDoseRelease
from nearfab.quality.kit import Check, ReleaseEvidence, ReleaseKit, ReleaseResults
from nearfab.quality.logic import propose_release, validate_release_rule

seeded = fh.seeded


@dataclass
class Sniff:
    """The fake family's result document: what it was shown."""

    units: int
    smell: str


class FakeRelease:
    """A family with one release test, "sniff": it fails when the measurement document says the
    batch smells; it records every batch it is shown."""

    tests: Mapping[str, str] = {"sniff": "Sniff test (fake family)"}

    def __init__(self) -> None:
        self.shown: list[ReleaseEvidence] = []

    def check_rule(self, rule: Mapping[str, Any]) -> None:
        if "nose" in rule and rule["nose"] not in ("left", "right"):
            raise ValidationFailed("release_rule.nose is left or right", field="release_rule.nose")

    def evaluate(
        self, tests: Sequence[str], evidence: ReleaseEvidence, rule: Mapping[str, Any]
    ) -> ReleaseResults:
        self.shown.append(evidence)
        smell = str(evidence.measurements.get("smell", "none"))
        units = len(evidence.measurements.get("unit_masses_mg") or [])
        checks = (Check("sniff", smell == "none", f"sniffed {units} units: smell {smell}"),)
        return ReleaseResults(
            checks=tuple(c for c in checks if c.name in tests),
            results={"sniff": Sniff(units=units, smell=smell)},
        )

    def lot_attributes(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        return dict(attributes)


def fake_evidence(smell: str | None = None, **extra: Any) -> ReleaseEvidence:
    return ReleaseEvidence(
        measurements={"smell": smell} if smell else {},
        design={},
        material={},
        **extra,
    )


def test_the_family_test_decides_the_proposal() -> None:
    kit: ReleaseKit = FakeRelease()
    rule = {"mode": "rtrt", "tests": ["sniff"]}

    good = propose_release(kit, fake_evidence(), rule)
    assert good.decision == "release"
    assert [(c.name, c.passed) for c in good.checks] == [
        ("sniff", True),
        ("cpp", True),
        ("deviations", True),
        ("alarms", True),
    ]
    assert good.reasons == ("sniffed 0 units: smell none",)

    bad = propose_release(kit, fake_evidence("fishy", open_alarms=("door open",)), rule)
    assert bad.decision == "reject"
    assert bad.reasons == ("sniffed 0 units: smell fishy", "1 open alarm: door open")
    # the family's result document is kept in the proposal under its own key
    assert bad.to_dict()["sniff"] == {"units": 0, "smell": "fishy"}
    assert "content_uniformity" not in bad.to_dict()


def test_a_listed_test_the_family_does_not_answer_is_not_a_pass() -> None:
    class Silent(FakeRelease):
        def evaluate(
            self, tests: Sequence[str], evidence: ReleaseEvidence, rule: Mapping[str, Any]
        ) -> ReleaseResults:
            return ReleaseResults(checks=())

    proposal = propose_release(Silent(), fake_evidence(), {"mode": "rtrt", "tests": ["sniff"]})
    assert proposal.decision == "needs_qp_review"
    assert proposal.checks[0] == Check(
        "sniff", None, "Sniff test (fake family): not evaluated by the family"
    )


def test_the_rule_lists_the_family_tests_only() -> None:
    validate_release_rule({"mode": "rtrt", "tests": ["sniff"]}, FakeRelease())
    with pytest.raises(ValidationFailed) as err:
        validate_release_rule({"mode": "rtrt", "tests": ["unit_mass"]}, FakeRelease())
    assert err.value.field == "release_rule.tests"
    assert err.value.message == "release_rule.tests has unknown 'unit_mass'; known: sniff"
    with pytest.raises(ValidationFailed) as err:
        validate_release_rule({"mode": "rtrt", "tests": ["sniff"]}, SolidDoseRelease())
    assert err.value.message == (
        "release_rule.tests has unknown 'sniff'; known: ph_eur_2_9_40, ph_eur_2_9_5, unit_mass"
    )
    # the family's own settings of the rule are checked by the family
    with pytest.raises(ValidationFailed) as err:
        validate_release_rule({"mode": "rtrt", "tests": ["sniff"], "nose": "both"}, FakeRelease())
    assert err.value.field == "release_rule.nose"


class FakeFamily:
    """The registered family, with its release part replaced by the fake's (every other part is
    the real family's, so the batch is made as usual)."""

    def __init__(self, real: Any, release: FakeRelease, tests: Mapping[str, str]) -> None:
        self._real = real
        self.release = release
        release.tests = tests

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_quality_runs_the_registered_family_release_part(seeded: App) -> None:
    # The demo's master files list the three solid_dose tests; the fake family answers to the
    # same names with its own titles and evaluation, so what quality stores can only be its.
    fake = FakeRelease()
    titles = {name: f"fake {name}" for name in ("ph_eur_2_9_40", "ph_eur_2_9_5", "unit_mass")}
    real = seeded.families.get("solid_dose")
    seeded.families.register(FakeFamily(real, fake, titles))

    def evaluate(
        tests: Sequence[str], evidence: ReleaseEvidence, rule: Mapping[str, Any]
    ) -> ReleaseResults:
        fake.shown.append(evidence)
        return ReleaseResults(
            checks=tuple(Check(name, False, f"fake says no to {name}") for name in tests),
            results={"fake": {"asked": list(tests)}},
        )

    fake.evaluate = evaluate  # type: ignore[method-assign]
    batch_id = fh.make_batch(seeded)  # RTRT evaluates on the batch's completion event

    with seeded.uow() as uow:
        review = seeded.quality.get_review(uow, batch_id)
        batch = seeded.production.get(uow, batch_id)
        lot = seeded.materials.get(uow, batch.material_lot_id)
        measurements, design = batch.measurements, batch.design
    assert review.proposed_decision == "reject"
    assert review.proposal["fake"] == {"asked": ["ph_eur_2_9_40", "ph_eur_2_9_5", "unit_mass"]}
    assert "content_uniformity" not in review.proposal
    assert [c["detail"] for c in review.proposal["checks"][:3]] == [
        "fake says no to ph_eur_2_9_40",
        "fake says no to ph_eur_2_9_5",
        "fake says no to unit_mass",
    ]
    # the family was shown the batch record's documents and the lot's attributes
    (shown,) = fake.shown
    assert shown.measurements == measurements and shown.design == design
    assert shown.material == lot.attributes == {"drug_loading": 0.025}
    assert shown.assay_pct == lot.assay_pct

    # the QP's queue titles the checks as the family does
    page = fh.web_login(seeded, "qp").get("/release").text
    assert "fake ph_eur_2_9_40" in page and "fake unit_mass" in page
    assert "Ph. Eur. 2.9.40 content uniformity" not in page
