"""Monitoring-model lifecycle and alarm lifecycle."""

from enum import StrEnum


class ModelKind(StrEnum):
    SPC = "spc"  # one univariate chart per metric (I-MR, EWMA, CUSUM, run rules)
    MSPC = "mspc"  # one PCA model over all metrics (Hotelling T², SPE/Q)
    BATCH = "batch"  # batch-evolution MSPC: multiway PCA of whole-run trajectories


class ModelStatus(StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"  # in use for scoring
    RETIRED = "retired"  # superseded by a newer approved version, or withdrawn


MODEL_TRANSITIONS: dict[ModelStatus, frozenset[ModelStatus]] = {
    ModelStatus.DRAFT: frozenset({ModelStatus.APPROVED, ModelStatus.RETIRED}),
    ModelStatus.APPROVED: frozenset({ModelStatus.RETIRED}),
    ModelStatus.RETIRED: frozenset(),
}


class AlarmStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"  # someone is on it; still blocks release
    CLOSED = "closed"  # dispositioned, with the reason on record


ALARM_TRANSITIONS: dict[AlarmStatus, frozenset[AlarmStatus]] = {
    AlarmStatus.OPEN: frozenset({AlarmStatus.ACKNOWLEDGED, AlarmStatus.CLOSED}),
    AlarmStatus.ACKNOWLEDGED: frozenset({AlarmStatus.CLOSED}),
    AlarmStatus.CLOSED: frozenset(),
}


class Severity(StrEnum):
    MINOR = "minor"  # a run rule or a drift statistic: look at it
    MAJOR = "major"  # beyond 3 sigma, T² or SPE over its limit
    CRITICAL = "critical"  # evidence missing (telemetry gap in a run)


class AlarmDisposition(StrEnum):
    """What the person closing an alarm concluded."""

    NO_IMPACT = "no_impact"  # investigated: product not affected
    ASSIGNABLE_CAUSE_FIXED = "assignable_cause_fixed"
    DEVIATION_RAISED = "deviation_raised"  # handled as a deviation on the batch
    FALSE_ALARM = "false_alarm"
