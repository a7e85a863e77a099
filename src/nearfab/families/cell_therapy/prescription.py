"""cell_therapy's `prescription` part: implements nearfab.orders.kit.PrescriptionKit."""

from __future__ import annotations


class CellTherapyPrescription:
    """Filled in by the cell therapy family's orders part (issue 15)."""
