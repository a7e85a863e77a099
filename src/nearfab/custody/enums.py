"""Serialised unit states."""

from enum import StrEnum


class UnitStatus(StrEnum):
    QUARANTINE = "quarantine"
    RELEASED = "released"
    REJECTED = "rejected"
    DISPENSED = "dispensed"
    RECALLED = "recalled"


UNIT_TRANSITIONS: dict[UnitStatus, frozenset[UnitStatus]] = {
    UnitStatus.QUARANTINE: frozenset({UnitStatus.RELEASED, UnitStatus.REJECTED}),
    UnitStatus.RELEASED: frozenset({UnitStatus.DISPENSED, UnitStatus.RECALLED}),
    UnitStatus.DISPENSED: frozenset({UnitStatus.RECALLED}),
    UnitStatus.REJECTED: frozenset(),
    UnitStatus.RECALLED: frozenset(),
}
