"""In-process domain-event bus. Subscriptions are wired only in bootstrap."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[Any], None]


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type, list[Handler]] = defaultdict(list)

    def subscribe(self, event_type: type, handler: Handler) -> None:
        self._handlers[event_type].append(handler)

    def publish(self, event: Any) -> None:
        """Deliver after the producing transaction committed; handlers open their own."""
        for handler in self._handlers.get(type(event), []):
            try:
                handler(event)
            except Exception:  # the producer's change is committed; one reaction failing
                # must not hide it or stop the others (the runner's sweep retries)
                log.exception(
                    "handler %s failed on %r", getattr(handler, "__name__", handler), event
                )
