"""cell_therapy's `machines` part: implements nearfab.production.kit.MachineKit."""

from __future__ import annotations


class CellTherapyMachines:
    """Filled in by the cell therapy family's production part (issue 15)."""
