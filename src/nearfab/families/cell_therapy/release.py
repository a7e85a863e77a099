"""cell_therapy's `release` part: implements nearfab.quality.kit.ReleaseKit."""

from __future__ import annotations


class CellTherapyRelease:
    """Filled in by the cell therapy family's quality part (issue 15)."""
