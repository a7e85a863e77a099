"""Material lot states."""

from enum import StrEnum


class LotStatus(StrEnum):
    QUARANTINE = "quarantine"
    APPROVED = "approved"
    ON_HOLD = "on_hold"
    RECALLED = "recalled"
    EXPIRED = "expired"
    REJECTED = "rejected"


LOT_TRANSITIONS: dict[LotStatus, frozenset[LotStatus]] = {
    LotStatus.QUARANTINE: frozenset({LotStatus.APPROVED, LotStatus.REJECTED}),
    LotStatus.APPROVED: frozenset({LotStatus.ON_HOLD, LotStatus.RECALLED, LotStatus.EXPIRED}),
    LotStatus.ON_HOLD: frozenset({LotStatus.APPROVED, LotStatus.RECALLED, LotStatus.REJECTED}),
    LotStatus.RECALLED: frozenset(),
    LotStatus.EXPIRED: frozenset(),
    LotStatus.REJECTED: frozenset(),
}
