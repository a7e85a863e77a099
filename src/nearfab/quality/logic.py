"""Pure quality rules: the master file's release rule and the real-time release proposal.

The release tests themselves belong to the product's family (`quality.kit.ReleaseKit`); quality
parses the rule, asks the family to run the tests the rule lists, adds its own checks (CPP
excursions, open deviations, open alarms) and proposes a decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Literal

from nearfab.common.errors import ValidationFailed
from nearfab.quality import enums
from nearfab.quality.kit import Check, ReleaseEvidence, ReleaseKit, pending_tests

__all__ = [
    "STATUS_CHECKS",
    "Check",
    "Decision",
    "ReleaseEvidence",
    "ReleaseProposal",
    "propose_release",
    "validate_release_rule",
]

_MODES = ("rtrt", "manual")

# quality's own checks, after the family's tests: name -> title shown to people
STATUS_CHECKS = {
    "cpp": "Process parameters (CPPs)",
    "deviations": "Deviations",
    "alarms": "Alarms",
}

Decision = Literal["release", "reject", "needs_qp_review"]


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class ReleaseProposal:
    """The platform's proposal to the QP; the QP's decision is recorded elsewhere.

    `results` are the family's result documents (e.g. the numbers behind a pharmacopoeial
    test), kept next to the checks under their own keys."""

    decision: Decision
    reasons: tuple[str, ...]
    checks: tuple[Check, ...]
    results: Mapping[str, Any] = field(default_factory=dict)
    # tests the family declares may be pending at release whose result is not in yet
    pending: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists, strings, numbers, booleans and None ("pending" only when some
        result is pending)."""
        return {
            "decision": self.decision,
            "reasons": _jsonable(self.reasons),
            "checks": _jsonable(self.checks),
            **{str(key): _jsonable(value) for key, value in self.results.items()},
            **({"pending": list(self.pending)} if self.pending else {}),
        }


def _parse_rule(rule: Mapping[str, Any], kit: ReleaseKit) -> tuple[str, tuple[str, ...]]:
    if not isinstance(rule, Mapping):
        raise ValidationFailed("the release rule must be an object", field="release_rule")
    mode = rule.get("mode")
    if mode not in _MODES:
        raise ValidationFailed(
            f"release_rule.mode is {mode!r}; expected one of {', '.join(_MODES)}",
            field="release_rule.mode",
        )
    tests = rule.get("tests", [])
    if isinstance(tests, str) or not isinstance(tests, Sequence):
        raise ValidationFailed(
            "release_rule.tests must be a list of test names", field="release_rule.tests"
        )
    known = tuple(kit.tests)
    unknown = [t for t in tests if t not in known]
    if unknown:
        raise ValidationFailed(
            f"release_rule.tests has unknown {', '.join(repr(t) for t in unknown)};"
            f" known: {', '.join(known)}",
            field="release_rule.tests",
        )
    if mode == "rtrt" and not tests:
        # An RTRT rule with no test would release on the absence of alarms alone.
        raise ValidationFailed(
            "an rtrt release rule must list at least one test", field="release_rule.tests"
        )
    kit.check_rule(rule)
    # evaluated and shown in the family's order, whatever order the rule lists them in
    return str(mode), tuple(t for t in known if t in tests)


def validate_release_rule(rule: Mapping[str, Any], kit: ReleaseKit) -> None:
    """Raise ValidationFailed naming the bad `release_rule.*` field (checked at draft time),
    against the release tests of the master file's family."""
    _parse_rule(rule, kit)


def _open_items(name: str, items: Sequence[str], singular: str, plural: str) -> Check:
    if not items:
        return Check(name=name, passed=True, detail=f"no {plural}")
    noun = singular if len(items) == 1 else plural
    return Check(name=name, passed=False, detail=f"{len(items)} {noun}: {'; '.join(items)}")


def _listed_checks(kit: ReleaseKit, tests: Sequence[str], answered: Sequence[Check]) -> list[Check]:
    """The family's answer for each listed test, in the listed order; a test it did not answer
    cannot be evaluated (never a pass)."""
    by_name = {c.name: c for c in answered}
    return [
        by_name.get(name)
        or Check(name, None, f"{kit.tests.get(name, name)}: not evaluated by the family")
        for name in tests
    ]


def propose_release(
    kit: ReleaseKit, evidence: ReleaseEvidence, rule: Mapping[str, Any]
) -> ReleaseProposal:
    """Evaluate the master file's release rule on a batch's evidence and propose a decision.

    The family runs the tests the rule lists. Any failed listed test → "reject". Otherwise a
    listed test that cannot be evaluated, a CPP excursion, an open deviation or an open alarm →
    "needs_qp_review". Otherwise "release". In "manual" mode the proposal is always
    "needs_qp_review". A test the family declares may be pending at release
    (`kit.pending_tests`) and answers without a result is pending, not unevaluated: it is listed
    in `pending` and followed up after release.
    """
    mode, tests = _parse_rule(rule, kit)
    outcome = kit.evaluate(tests, evidence, rule)
    test_checks = _listed_checks(kit, tests, outcome.checks)
    may_pend = pending_tests(kit)
    pending = tuple(c.name for c in test_checks if c.passed is None and c.name in may_pend)

    status_checks = [
        _open_items("cpp", evidence.cpp_excursions, "CPP excursion", "CPP excursions"),
        _open_items("deviations", evidence.open_deviations, "open deviation", "open deviations"),
        _open_items("alarms", evidence.open_alarms, "open alarm", "open alarms"),
    ]

    reasons = [c.detail for c in test_checks] + [c.detail for c in status_checks if not c.passed]
    decision: Decision
    if mode == "manual":
        decision = "needs_qp_review"
        reasons.insert(0, "release rule mode is manual: the QP decides")
    elif any(c.passed is False for c in test_checks):
        decision = "reject"
    elif any(c.passed is None and c.name not in pending for c in test_checks) or any(
        not c.passed for c in status_checks
    ):
        decision = "needs_qp_review"
    else:
        decision = "release"

    return ReleaseProposal(
        decision=decision,
        reasons=tuple(reasons),
        checks=tuple(test_checks + status_checks),
        results=dict(outcome.results),
        pending=pending,
    )


def parse_decision(decision: enums.Decision | str, exceptional: bool = False) -> enums.Decision:
    """The QP decision named (field `decision`); only a release is exceptional (field
    `exceptional`): the rules of a local decision and of one across the network alike."""
    try:
        decided = enums.Decision(decision)
    except ValueError:
        raise ValidationFailed(
            f"decision must be release or reject, not {decision!r}", field="decision"
        ) from None
    if exceptional and decided is not enums.Decision.RELEASE:
        raise ValidationFailed("only a release is exceptional", field="exceptional")
    return decided


def decision_reason(
    decision: enums.Decision, proposed: str, reason: str | None, exceptional: bool = False
) -> str | None:
    """The QP's reason, stripped; refused where one is needed: a rejection, an exceptional
    release, and a release the release rule did not propose."""
    reason = (reason or "").strip() or None
    if exceptional and not reason:
        raise ValidationFailed("an exceptional release needs the QP's reason", field="reason")
    if decision is enums.Decision.REJECT and not reason:
        raise ValidationFailed("a rejection needs a reason", field="reason")
    if decision is enums.Decision.RELEASE and proposed != "release" and not reason:
        raise ValidationFailed(
            f"the release rule proposed {proposed}; releasing needs a reason", field="reason"
        )
    return reason
