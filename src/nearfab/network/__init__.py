"""Network: the control site, sites and their lifecycle, machines, qualification, training."""

from nearfab.network.enums import MachineStatus, SiteKind, SiteStatus
from nearfab.network.models import Machine, Qualification, Site, Training
from nearfab.network.services import NetworkService

__all__ = [
    "Machine",
    "MachineStatus",
    "NetworkService",
    "Qualification",
    "Site",
    "SiteKind",
    "SiteStatus",
    "Training",
]
