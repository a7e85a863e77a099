"""Release-review and deviation states."""

from enum import StrEnum


class ReviewStatus(StrEnum):
    PENDING = "pending"
    RELEASED = "released"
    REJECTED = "rejected"


class Decision(StrEnum):
    RELEASE = "release"
    REJECT = "reject"


class DeviationStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
