"""solid_dose's `machines` part: implements nearfab.production.kit.MachineKit."""

from __future__ import annotations


class SolidDoseMachines:
    """Filled in by the production part of the family kit (issue 15)."""
