"""Proficiency rounds and suspensions: states and their allowed transitions."""

from enum import StrEnum


class RoundStatus(StrEnum):
    OPEN = "open"  # the reference samples are out; sites enter their results
    SCORED = "scored"  # z-scores given; unsatisfactory sites suspended
    CANCELLED = "cancelled"


ROUND_TRANSITIONS: dict[RoundStatus, frozenset[RoundStatus]] = {
    RoundStatus.OPEN: frozenset({RoundStatus.SCORED, RoundStatus.CANCELLED}),
    RoundStatus.SCORED: frozenset(),
    RoundStatus.CANCELLED: frozenset(),
}


class SuspensionStatus(StrEnum):
    ACTIVE = "active"  # the site may not make the master file
    LIFTED = "lifted"  # its CAPA was closed by an e-signature


SUSPENSION_TRANSITIONS: dict[SuspensionStatus, frozenset[SuspensionStatus]] = {
    SuspensionStatus.ACTIVE: frozenset({SuspensionStatus.LIFTED}),
    SuspensionStatus.LIFTED: frozenset(),
}


class GroupBy(StrEnum):
    """What the comparability report compares."""

    SITE = "site"
    MACHINE = "machine"
    MATERIAL_LOT = "material_lot"
    MONTH = "month"
