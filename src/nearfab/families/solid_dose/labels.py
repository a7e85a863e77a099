"""solid_dose's `labels` part: implements nearfab.custody.kit.LabelKit."""

from __future__ import annotations


class SolidDoseLabels:
    """Filled in by the custody part of the family kit (issue 15)."""
