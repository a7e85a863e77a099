"""Monitoring events (published after commit)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MonitoringModelsChanged:
    """A model was approved or retired: scorers must reload what is in force."""

    model_id: str


@dataclass(frozen=True)
class AlarmRaised:
    alarm_id: str
    batch_id: str | None
