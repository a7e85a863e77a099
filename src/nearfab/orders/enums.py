"""Order lifecycle."""

from enum import StrEnum


class OrderStatus(StrEnum):
    RECEIVED = "received"
    DESIGNED = "designed"
    STOPPED = "stopped"
    SCHEDULED = "scheduled"
    IN_PRODUCTION = "in_production"
    FAILED = "failed"
    AWAITING_RELEASE = "awaiting_release"
    RELEASED = "released"
    REJECTED = "rejected"
    DISPENSED = "dispensed"
    CANCELLED = "cancelled"


ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.RECEIVED: frozenset(
        {OrderStatus.DESIGNED, OrderStatus.STOPPED, OrderStatus.CANCELLED}
    ),
    OrderStatus.DESIGNED: frozenset(
        {OrderStatus.SCHEDULED, OrderStatus.STOPPED, OrderStatus.CANCELLED}
    ),
    OrderStatus.SCHEDULED: frozenset(
        {OrderStatus.IN_PRODUCTION, OrderStatus.DESIGNED, OrderStatus.CANCELLED}
    ),
    OrderStatus.IN_PRODUCTION: frozenset({OrderStatus.AWAITING_RELEASE, OrderStatus.FAILED}),
    # a failed run goes back to planning: a new batch is made from scratch
    OrderStatus.FAILED: frozenset({OrderStatus.DESIGNED, OrderStatus.CANCELLED}),
    OrderStatus.AWAITING_RELEASE: frozenset({OrderStatus.RELEASED, OrderStatus.REJECTED}),
    OrderStatus.RELEASED: frozenset({OrderStatus.DISPENSED}),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.STOPPED: frozenset(),
    OrderStatus.DISPENSED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}

# an order no batch will come from any more: its dose is not adjusted (docs/dose-adjustment.md)
ENDED_STATES = frozenset(
    {OrderStatus.CANCELLED.value, OrderStatus.STOPPED.value, OrderStatus.REJECTED.value}
)
# an order that has not started a batch: a new version of it takes its place (it is cancelled)
NOT_STARTED_STATES = frozenset(
    {OrderStatus.RECEIVED.value, OrderStatus.DESIGNED.value, OrderStatus.FAILED.value}
)
