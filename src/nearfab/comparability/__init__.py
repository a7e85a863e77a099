"""Comparability across the network: sites, machines, material lots and months held to one
another (TOST, Cpk, charts of means, Hotelling T²), and proficiency testing (ISO 13528)."""

from nearfab.comparability.enums import GroupBy, RoundStatus, SuspensionStatus
from nearfab.comparability.models import ProficiencyResult, ProficiencyRound, Suspension
from nearfab.comparability.services import ComparabilityService

__all__ = [
    "ComparabilityService",
    "GroupBy",
    "ProficiencyResult",
    "ProficiencyRound",
    "RoundStatus",
    "Suspension",
    "SuspensionStatus",
]
