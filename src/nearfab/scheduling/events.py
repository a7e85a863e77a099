"""Planning events, and the reactions bootstrap subscribes to other domains' events."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nearfab.identity import Actor
from nearfab.uow import UnitOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanChanged:
    """A new plan version was stored (after its transaction committed)."""

    plan_id: str
    number: int
    trigger: str


class _Replanner(Protocol):
    def refresh(self, uow: UnitOfWork, actor: Actor, *, reason: str | None = None) -> Any: ...


def replan_handler(
    uow_factory: Callable[[], UnitOfWork], scheduling: _Replanner, actor: Actor
) -> Callable[[Any], None]:
    """A bus handler for any event that may spoil the plan (a machine out of service, a lot
    recalled, a site paused, an order made urgent): it replans in its own unit of work, naming
    the trigger from what changed. Idempotent: with nothing changed it does nothing."""

    def on_event(event: Any) -> None:
        with uow_factory() as uow:
            scheduling.refresh(uow, actor, reason=f"after {type(event).__name__}")

    on_event.__name__ = "replan_on_change"
    return on_event
