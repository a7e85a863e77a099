"""Events quality emits after its transactions commit."""

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchDispositioned:
    batch_id: str
    decision: str  # "release" or "reject"
