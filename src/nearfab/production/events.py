"""Events production emits after its transactions commit."""

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchCompleted:
    batch_id: str


@dataclass(frozen=True)
class BatchFailed:
    batch_id: str
    reason: str
