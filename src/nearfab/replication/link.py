"""A serving node's link to the others: the replicator (a pass every few seconds) and the
inbox, in the background of `nearfab serve` / `nearfab demo` when the data folder is a node and
a replication broker is named (NEARFAB_REPLICATION_URL). The same passes as `nearfab node
replicate` and `nearfab node receive`; a broker out of reach is waited for, never fatal: the
node works on and its outbox grows (docs/replication.md)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from nearfab.common.clock import Clock
from nearfab.replication.logic import origin_filter
from nearfab.replication.node import inbox_client_id, replicate_once, start_inbox
from nearfab.replication.services import ReplicationService, SendResult
from nearfab.replication.transport import InboxSubscriber
from nearfab.telemetry import BrokerAddress
from nearfab.uow import UnitOfWork

log = logging.getLogger(__name__)

# the most of a node's time its link's retries of what waits may take (`_retry_waiting`)
RETRY_SHARE = 0.1


@dataclass(frozen=True)
class LinkState:
    """What the page shows of the link: the broker, whether the inbox is subscribed, and the
    last replicator pass (when, what it sent, what waits, the error if the broker refused)."""

    broker: str
    inbox_connected: bool
    last_pass_at: datetime | None
    last: SendResult | None


class NodeLink:
    """Runs a node's replicator and inbox until `stop`. One per serving process."""

    def __init__(
        self,
        service: ReplicationService,
        uow_factory: Callable[[], UnitOfWork],
        broker: BrokerAddress,
        clock: Clock,
        *,
        control_site_id: str | None,
        every_s: float = 2.0,
        before_pass: Callable[[Callable[[], UnitOfWork]], object] | None = None,
        after_receive: Callable[[Callable[[], UnitOfWork]], object] | None = None,
    ) -> None:
        """`before_pass`: run before each replicator pass with the unit-of-work factory (a
        site node sends its release dossiers, replication/releases.py; the control node hands
        over the orders given up for a transfer, transfers.py). `after_receive`: run after each
        batch the inbox stores (the control node: the same hand-overs, at once)."""
        self.service = service
        self._uow = uow_factory
        self._broker = broker
        self._clock = clock
        self._control = control_site_id
        self._every = every_s
        self._before_pass = before_pass
        self._after_receive = after_receive
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nearfab-link", daemon=True)
        self._inbox: InboxSubscriber | None = None
        self._last: SendResult | None = None
        self._last_at: datetime | None = None
        self._retry_after = 0.0  # monotonic: no retry of what waits before (`_retry_waiting`)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started (a link may be run pass by pass)
            self._thread.join(timeout=30)
        if self._inbox is not None:
            self._inbox.stop()
            self._inbox = None

    def state(self) -> LinkState:
        return LinkState(
            broker=f"{self._broker.host}:{self._broker.port}",
            inbox_connected=self._inbox is not None and self._inbox.connected.is_set(),
            last_pass_at=self._last_at,
            last=self._last,
        )

    def _subscribe(self) -> None:
        if self._inbox is not None:
            return
        try:
            self._inbox = start_inbox(
                self.service,
                self._uow,
                self._broker,
                control_site_id=self._control,
                after=self._after_receive,
            )
        except ConnectionError as exc:  # the broker is away: the next pass tries again
            log.info("inbox not subscribed yet: %s", exc)

    def pass_once(self) -> None:
        """One pass of the link: the inbox subscribed if it is not yet; at a site node, the
        control's records that wait here tried again (`ControlDecisions.retry_waiting`:
        nothing, not a statement, while nothing waits; a decisions pass when something waits
        and this node has written anything since the last one), whether or not anything
        arrived and even with the broker away, before the replicator's pass, which so sends
        what it did at once; then the replicator's pass."""
        self._subscribe()
        self._retry_waiting()
        if self._before_pass is not None:
            self._before_pass(self._uow)
        self._last = replicate_once(self.service, self._uow, self._broker, connect_timeout_s=2.0)
        self._last_at = self._clock.now()

    def _retry_waiting(self) -> None:
        """On a busy node (its audit trail moving at every pass) with a record waiting, each
        retry is a decisions pass, whose cost grows with what the node holds (146 ms with
        1,000 control records held: benchmarks/inbox_reads.py): the next retry waits until
        the last one's length is `RETRY_SHARE` of the time since it began."""
        decisions = self.service.decisions
        if decisions is None:
            return  # the control node acts on no one's decisions
        if time.monotonic() < self._retry_after:
            return  # the last retry was a moment ago, for what it cost
        began = time.monotonic()
        try:
            done = decisions.retry_waiting(self._uow)
        except Exception:  # the replicator's pass goes on; the next pass tries again
            log.exception("retrying the control's records waiting here failed")
            done = True
        if done is not None:
            self._retry_after = began + (time.monotonic() - began) / RETRY_SHARE

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.pass_once()
            except Exception:  # keep the link alive; the records wait in the outbox
                log.exception("replication pass failed")
            self._stop.wait(self._every)


def provision_inbox(broker: BrokerAddress, site_id: str, control_site_id: str) -> None:
    """Create a node's persistent session at the broker before the node first runs, as a
    deployment does when it adds a node: MQTT keeps messages only for a session that exists, so
    records sent to a node before its first subscription would otherwise never reach it. The
    session is the one `start_inbox` resumes (same client id, same subscriptions); nothing is
    taken from it here (a message that arrives is left unacknowledged, and comes again)."""

    def keep(messages: list[bytes]) -> object:
        raise RuntimeError("provisioning only: left for the node")

    control = site_id == control_site_id
    subscriptions = [origin_filter()] if control else [origin_filter(control_site_id)]
    subscriber = InboxSubscriber(broker, keep, subscriptions, client_id=inbox_client_id(site_id))
    subscriber.start()
    subscriber.stop()
