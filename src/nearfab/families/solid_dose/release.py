"""solid_dose's `release` part: implements nearfab.quality.kit.ReleaseKit."""

from __future__ import annotations


class SolidDoseRelease:
    """Filled in by the quality part of the family kit (issue 15)."""
