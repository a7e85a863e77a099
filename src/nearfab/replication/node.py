"""Which records a node owns, by its role, and its receiving side's subscriptions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nearfab.common.clock import Clock
from nearfab.replication.capture import CaptureConfig
from nearfab.replication.logic import origin_filter
from nearfab.replication.services import ReplicationService, SendResult
from nearfab.replication.transport import InboxSubscriber, OutboxPublisher
from nearfab.telemetry import BrokerAddress
from nearfab.uow import UnitOfWork

log = logging.getLogger(__name__)

# what the control site decides for the sites and sends them: recalls, master files (released
# versions), release decisions, orders it took for a site and their cancellations. Its other
# audit rows stay with it.
CONTROL_TO_SITES = frozenset(
    {
        "recall",
        "master_file",
        "master_file_published",
        "release_review",
        "remote_release",
        "order_handover",
        "order_cancellation",  # a handed-over order cancelled at the control (decisions.py)
        "order_transfer",  # an order moved from the site holding it to another (transfers.py)
    }
)


def _to_sites(row: dict[str, Any]) -> bool:
    return row.get("entity_type") in CONTROL_TO_SITES


def node_capture(site_id: str, clock: Clock, *, control: bool) -> CaptureConfig:
    """A site node owns its whole audit trail and its ledger chain; the control node sends the
    sites its decisions (`CONTROL_TO_SITES` audit rows) and its own ledger chain (anchors,
    audit checkpoints)."""
    if control:
        return CaptureConfig(site_id=site_id, clock=clock, audit=_to_sites, ledger=True)
    return CaptureConfig(site_id=site_id, clock=clock, audit=lambda row: True, ledger=True)


def inbox_client_id(site_id: str) -> str:
    """The MQTT client id of a node's inbox: its persistent session at the broker."""
    return f"nearfab-inbox-{site_id}"


def start_inbox(
    service: ReplicationService,
    uow_factory: Callable[[], UnitOfWork],
    broker: BrokerAddress,
    *,
    control_site_id: str | None,
    after: Callable[[Callable[[], UnitOfWork]], object] | None = None,
) -> InboxSubscriber:
    """Subscribe a node to what it receives: the control node to every origin, a site node to
    the control site's records only. Started; stop it with `.stop()`. `after`: run after each
    batch stored (the control node hands over the orders the sites gave up for a transfer,
    transfers.py); a failure there is logged, the batch stays stored, and the next batch or
    replicator pass runs it again."""
    if control_site_id is None or control_site_id == service.site_id:
        subscriptions = [origin_filter()]
    else:
        subscriptions = [origin_filter(control_site_id)]
    if service.decisions is not None:
        # a site node tries again what waits here, whether or not anything arrives (`nearfab
        # node receive` on a node cut off from the control; the link retries at each pass)
        try:
            service.decisions.retry_waiting(uow_factory)
        except Exception:  # the next batch or pass tries again
            log.exception("retrying the control's records waiting here failed")

    def apply(messages: list[bytes]) -> object:
        with uow_factory() as uow:
            applied = service.apply(uow, messages)
        if service.decisions is not None and applied.applied:
            # a site node acts on what it now holds; a failure leaves the batch unacknowledged,
            # so it comes again and the pass is retried (what was done is known by its audit row)
            service.decisions.apply_pending(uow_factory)
        if after is not None and applied.applied:
            try:
                after(uow_factory)
            except Exception:  # stored: acted on at the next batch or pass
                log.exception("acting on the records received failed; tried again later")
        return applied

    subscriber = InboxSubscriber(
        broker, apply, subscriptions, client_id=inbox_client_id(service.site_id)
    )
    subscriber.start()
    return subscriber


def replicate_once(
    service: ReplicationService,
    uow_factory: Callable[[], UnitOfWork],
    broker: BrokerAddress,
    *,
    timeout_s: float = 10.0,
    connect_timeout_s: float = 5.0,
) -> SendResult:
    """One pass of the replicator (`nearfab node replicate --once`): connect with the node's
    persistent session, send what is pending, mark what the broker acknowledged. A broker out
    of reach is an answer (`error`), not an exception: the records wait in the outbox."""
    try:
        publisher = OutboxPublisher(
            broker, f"nearfab-node-{service.site_id}", connect_timeout_s=connect_timeout_s
        )
    except ConnectionError as exc:
        with uow_factory() as uow:
            service.capture_now(uow)
        with uow_factory() as uow:
            left = service.outbox(uow).pending
        return SendResult(0, 0, left, str(exc))
    try:
        return service.replicate_once(uow_factory, publisher, timeout_s=timeout_s)
    finally:
        publisher.close()
