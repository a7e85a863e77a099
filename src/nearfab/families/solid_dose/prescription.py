"""solid_dose's `prescription` part: implements nearfab.orders.kit.PrescriptionKit."""

from __future__ import annotations


class SolidDosePrescription:
    """Filled in by the orders part of the family kit (issue 15)."""
