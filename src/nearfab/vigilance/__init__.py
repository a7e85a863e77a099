"""Pharmacovigilance: adverse event reports traced to the pack, batch, machine, site, material
lots and every other patient exposed (docs/pharmacovigilance.md)."""

from nearfab.vigilance.models import AdverseEvent
from nearfab.vigilance.services import VigilanceService

__all__ = ["AdverseEvent", "VigilanceService"]
