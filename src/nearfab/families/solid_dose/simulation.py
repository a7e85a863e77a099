"""solid_dose's `simulation` part: implements nearfab.simulation.kit.SimulationKit."""

from __future__ import annotations


class SolidDoseSimulation:
    """Filled in by the simulation part of the family kit (issue 15)."""
