"""Site kinds, site lifecycle and machine states, with their allowed transitions."""

from enum import StrEnum


class SiteKind(StrEnum):
    CONTROL = "control"
    HOSPITAL_PHARMACY = "hospital_pharmacy"
    CLINIC = "clinic"
    HOME = "home"
    MOBILE = "mobile"
    REGIONAL_HUB = "regional_hub"


class SiteStatus(StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    ACTIVE = "active"
    PAUSED = "paused"
    CEASED = "ceased"
    REGULATOR_SUSPENDED = "regulator_suspended"


# a ceased site stays ceased: suspension applies to every other state
_ANY = frozenset(SiteStatus) - {SiteStatus.REGULATOR_SUSPENDED, SiteStatus.CEASED}
SITE_TRANSITIONS: dict[SiteStatus, frozenset[SiteStatus]] = {
    SiteStatus.PROPOSED: frozenset({SiteStatus.APPROVED, SiteStatus.CEASED}),
    SiteStatus.APPROVED: frozenset({SiteStatus.ACTIVE, SiteStatus.CEASED}),
    SiteStatus.ACTIVE: frozenset({SiteStatus.PAUSED, SiteStatus.CEASED}),
    SiteStatus.PAUSED: frozenset({SiteStatus.ACTIVE, SiteStatus.CEASED}),
    SiteStatus.CEASED: frozenset(),
    # leaving a suspension needs a regulatory reference (checked in the service)
    SiteStatus.REGULATOR_SUSPENDED: frozenset({SiteStatus.PAUSED, SiteStatus.CEASED}),
}
for _s in _ANY:
    SITE_TRANSITIONS[_s] = SITE_TRANSITIONS[_s] | {SiteStatus.REGULATOR_SUSPENDED}


class MachineStatus(StrEnum):
    AVAILABLE = "available"
    BUSY = "busy"
    MAINTENANCE = "maintenance"
    RETIRED = "retired"


MACHINE_TRANSITIONS: dict[MachineStatus, frozenset[MachineStatus]] = {
    MachineStatus.AVAILABLE: frozenset(
        {MachineStatus.BUSY, MachineStatus.MAINTENANCE, MachineStatus.RETIRED}
    ),
    MachineStatus.BUSY: frozenset({MachineStatus.AVAILABLE, MachineStatus.MAINTENANCE}),
    MachineStatus.MAINTENANCE: frozenset({MachineStatus.AVAILABLE, MachineStatus.RETIRED}),
    MachineStatus.RETIRED: frozenset(),
}
