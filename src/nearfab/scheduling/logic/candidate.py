"""The foundation's single-order rule: pick the candidate that finishes first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Candidate:
    machine_id: str
    machine_name: str
    site_id: str
    material_lot_id: str
    available_from: datetime
    duration_s: float

    @property
    def finish(self) -> datetime:
        return self.available_from + timedelta(seconds=self.duration_s)


def earliest_finish(candidates: list[Candidate]) -> Candidate | None:
    """The candidate with the earliest finish; ties go to the machine name, so plans repeat."""
    if not candidates:
        return None
    return min(candidates, key=lambda c: (c.finish, c.machine_name, c.machine_id))
