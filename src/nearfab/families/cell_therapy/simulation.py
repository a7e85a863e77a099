"""cell_therapy's `simulation` part: implements nearfab.simulation.kit.SimulationKit."""

from __future__ import annotations


class CellTherapySimulation:
    """Filled in by the cell therapy family's simulation part (issue 15)."""
