"""What the quality domain asks of a product family: `ReleaseKit`.

The domain owns the question; families under nearfab.families answer it, and the domain reaches
them only through the registry bootstrap wires in (DESIGN.md, "The family kit").

Quality keeps the generic machinery: the release rule's mode and test list, the order in which
checks are evaluated and shown, the open-item checks (CPP excursions, deviations, alarms), the
decision rule and the records. A family's `release` part (a `ReleaseKit`) says which release
tests it has, validates its own settings of the master file's release rule, runs the tests on a
batch's evidence (the batch record's measurement document and design, the material lot's
attributes, the master file's CQA specifications) and owns the attribute schema of the material
lots its products are made from. Optionally (`LabResultsKit`) it takes a laboratory's results of
a batch: their keys, their validation and where they go in the evidence (quality/labresults.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from nearfab.designs import FamilyRegistry
from nearfab.identity import Role


@dataclass(frozen=True)
class Check:
    """One line of the release proposal: a family's release test or one of quality's own."""

    name: str  # a family's test name, or "cpp", "deviations", "alarms"
    passed: bool | None  # None = could not be evaluated
    detail: str


@dataclass(frozen=True)
class ReleaseEvidence:
    """What the batch record holds for one batch at the time release is proposed.

    The first four are the family's documents, read only by its release part; the open items are
    quality's own checks."""

    measurements: Mapping[str, Any]  # the batch record's measurement document (family schema)
    design: Mapping[str, Any]  # the batch's personalised design
    material: Mapping[str, Any]  # the material lot's attributes (family schema)
    specs: Mapping[str, Any] = field(default_factory=dict)  # the master file's CQA specs
    # assay of the material lot (% of label claim)
    assay_pct: float = 100.0
    cpp_excursions: tuple[str, ...] = ()
    open_deviations: tuple[str, ...] = ()
    open_alarms: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReleaseResults:
    """A family's answer for one batch: one check per test it was asked to run, and the result
    documents it keeps with the proposal (each a dataclass or plain JSON; stored under its key
    in the proposal the QP signs)."""

    checks: tuple[Check, ...]
    results: Mapping[str, Any] = field(default_factory=dict)


class ReleaseKit(Protocol):
    """A family's release tests, RTRT evaluation and material-lot attribute schema.

    Two optional attributes (read with `pending_tests` and `exceptional_only`):
    `pending_at_release: frozenset[str]`, the tests whose result may be pending at release, and
    `exceptional_release_only: bool`, an out-of-specification batch is released only
    exceptionally (physician's request + QP)."""

    @property
    def tests(self) -> Mapping[str, str]:
        """Test name -> title shown to people, in the order the tests are evaluated and shown
        (the names a master file's `release_rule.tests` may list)."""
        ...

    def check_rule(self, rule: Mapping[str, Any]) -> None:
        """Validate the family's own settings in a release rule (quality has checked `mode` and
        `tests`): ValidationFailed naming the `release_rule.<key>` field."""
        ...

    def evaluate(
        self, tests: Sequence[str], evidence: ReleaseEvidence, rule: Mapping[str, Any]
    ) -> ReleaseResults:
        """Run `tests` (names from `tests`, in that order) on one batch's evidence against the
        master file's CQA specifications (`evidence.specs`) and the rule's settings.
        ValidationFailed naming the field of evidence that cannot be evaluated."""
        ...

    def lot_attributes(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """The validated attributes of a material lot (as stored), or ValidationFailed naming
        the bad field as `attributes.<key>`."""
        ...


def pending_tests(kit: ReleaseKit) -> frozenset[str]:
    """The tests whose result may still be pending when the QP certifies (e.g. a test whose
    result comes days after use): the family's optional `pending_at_release` (names from its
    `tests`). A family without it has none. For such a test, the family's `evaluate` answers
    `Check(name, None, ...)` while the result is not in; quality then treats it as pending (a
    follow-up after release), not as a test that could not be evaluated."""
    names = getattr(kit, "pending_at_release", None) or ()
    return frozenset(str(name) for name in names)


def exceptional_only(kit: ReleaseKit) -> bool:
    """Whether a batch that failed one of the family's release tests (out of specification) is
    released only exceptionally: at the treating physician's signed request, with the QP's
    signature (the family's optional `exceptional_release_only`; False without it)."""
    return bool(getattr(kit, "exceptional_release_only", False))


# the signatories a family may name: role -> title in the records and the signature's meaning
SIGNATORY_TITLES: Mapping[str, str] = {
    Role.QP.value: "QP",
    Role.RESPONSIBLE_PERSON.value: "responsible person",
}


def release_signatory(kit: ReleaseKit) -> str:
    """The role that signs a batch's release or rejection: the family's optional
    `release_signatory` (e.g. a medical device's "responsible_person", UK MDR / EU MDR
    Art. 15); "qp" without it. Beyond the core's `release.decide` permission, only this role
    decides the family's batches (quality.services `decide`): a QP does not release a device,
    a responsible person does not release a medicine."""
    role = str(getattr(kit, "release_signatory", None) or Role.QP.value)
    if role not in SIGNATORY_TITLES:  # pragma: no cover - a family's programming error
        raise ValueError(f"release_signatory {role!r} is not one of {sorted(SIGNATORY_TITLES)}")
    return role


def signatory_title(role: str) -> str:
    """How the records and the signature's meaning name the signatory role ("QP",
    "responsible person")."""
    return SIGNATORY_TITLES.get(role, role.replace("_", " "))


class LabResultsKit(Protocol):
    """The optional part of a `ReleaseKit` for a family whose release tests read results a
    laboratory reports after the batch is made (quality.labresults): the keys it takes, their
    validation and where they go in the evidence its `evaluate` reads. A family without it
    takes no laboratory results."""

    @property
    def lab_result_keys(self) -> Mapping[str, str]:
        """Result key -> what it holds, in words and units a laboratory analyst reads."""
        ...

    def check_lab_results(self, results: Mapping[str, Any]) -> dict[str, Any]:
        """The validated results (key -> value, as stored), or ValidationFailed naming the bad
        field as `lab_results.<key>`."""
        ...

    def with_lab_results(
        self, measurements: Mapping[str, Any], results: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The measurement document `evaluate` reads, with the laboratory's results in force
        (validated by `check_lab_results`) put where the family's tests look for them."""
        ...


def lab_results_kit(kit: ReleaseKit) -> LabResultsKit | None:
    """The family's laboratory-results part (the release part itself when it implements
    `LabResultsKit`), or None when the family takes no laboratory results."""
    if all(
        hasattr(kit, name) for name in ("lab_result_keys", "check_lab_results", "with_lab_results")
    ):
        return cast(LabResultsKit, kit)
    return None


def release_kit(families: FamilyRegistry, family: str) -> ReleaseKit:
    """The release part of a registered family (ValidationFailed naming product_family if none)."""
    kit: ReleaseKit = families.get(family).release
    return kit


class FamilyLotRules:
    """The material lots' attribute schemas from the registered families' release parts (what
    nearfab.materials.LotAttributeRules asks for; bootstrap hands it to the material service)."""

    def __init__(self, families: FamilyRegistry) -> None:
        self._families = families

    def names(self) -> list[str]:
        return self._families.names()

    def lot_attributes(self, family: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
        return release_kit(self._families, family).lot_attributes(attributes)
