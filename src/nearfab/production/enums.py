"""Batch-record lifecycle."""

from enum import StrEnum


class BatchStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"  # made; awaiting disposition
    FAILED = "failed"
    RELEASED = "released"
    REJECTED = "rejected"


BATCH_TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    BatchStatus.IN_PROGRESS: frozenset({BatchStatus.COMPLETED, BatchStatus.FAILED}),
    BatchStatus.COMPLETED: frozenset({BatchStatus.RELEASED, BatchStatus.REJECTED}),
    BatchStatus.FAILED: frozenset(),
    BatchStatus.RELEASED: frozenset(),
    BatchStatus.REJECTED: frozenset(),
}
