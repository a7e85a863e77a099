"""cell_therapy's `labels` part: implements nearfab.custody.kit.LabelKit."""

from __future__ import annotations


class CellTherapyLabels:
    """Filled in by the cell therapy family's custody part (issue 15)."""
