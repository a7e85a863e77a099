"""Replication over MQTT (Mosquitto): QoS 1 publishes whose PUBACKs mark the outbox, and a
persistent-session subscriber that acknowledges a message only after the transaction that
applied it committed. The broker (and, between sites, its bridges) does the store-and-forward;
the outbox and the inbox make it exactly-once in effect (docs/replication.md)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from nearfab.telemetry import BrokerAddress

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # a subscriber's queue outlives a week offline


def _client(client_id: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(500)
    return client


def _connect_properties(receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


class OutboxPublisher:
    """One node's publishing connection (persistent session, QoS 1). `send` publishes a batch
    and returns the keys whose PUBACK arrived within the time given."""

    def __init__(self, broker: BrokerAddress, client_id: str, *, connect_timeout_s: float = 5.0):
        self._broker = broker
        self._client = _client(client_id)
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        try:
            self._client.connect(
                broker.host,
                broker.port,
                keepalive=5,
                clean_start=False,
                properties=_connect_properties(),
            )
        except OSError as exc:
            raise ConnectionError(
                f"no MQTT broker answered at {broker.host}:{broker.port}: {exc}"
            ) from None
        self._client.loop_start()
        if not self._connected.wait(connect_timeout_s):
            self.close()
            raise ConnectionError(f"no MQTT broker answered at {broker.host}:{broker.port}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connected.clear()

    def send(self, messages: Sequence[tuple[str, bytes, str]], timeout_s: float) -> set[str]:
        """Publish (topic, payload, key) at QoS 1; the keys the broker acknowledged in time.
        Each message's own `MQTTMessageInfo` says whether its PUBACK came (message ids wrap
        and are reused, so they are not the key)."""
        if not self._connected.is_set():
            raise ConnectionError(
                f"the MQTT broker at {self._broker.host}:{self._broker.port} is not connected"
            )
        sent: list[tuple[mqtt.MQTTMessageInfo, str]] = []
        for topic_name, payload, key in messages:
            info = self._client.publish(topic_name, payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                break  # refused by the client (queue full): the rest waits in the outbox
            sent.append((info, key))
        deadline = time.monotonic() + timeout_s
        # a message the client could not send (the link went down mid-batch) gets no PUBACK
        waited = [i for i, _ in sent if i.rc == mqtt.MQTT_ERR_SUCCESS]
        while time.monotonic() < deadline and not all(_published(i) for i in waited):
            time.sleep(0.005)
        return {key for info, key in sent if _published(info)}

    def close(self) -> None:
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()


def _published(info: mqtt.MQTTMessageInfo) -> bool:
    """Whether the broker acknowledged the message. paho raises for one it never sent (the
    link dropped between the connected check and the publish: `MQTT_ERR_NO_CONN`); that one
    is simply not acknowledged and stays in the outbox for the next pass."""
    try:
        return bool(info.is_published())
    except (RuntimeError, ValueError):
        return False


class InboxSubscriber:
    """A node's receiving side: a persistent QoS 1 subscription to other nodes' records,
    applied in batches; a message is acknowledged only once its batch committed, so a crash or
    a broker restart before that gets it delivered again (and the inbox drops the copy)."""

    def __init__(
        self,
        broker: BrokerAddress,
        apply: Callable[[list[bytes]], object],
        subscriptions: Sequence[str],
        *,
        client_id: str,
        max_batch: int = 500,
    ) -> None:
        self._broker = broker
        self._apply = apply
        self._subscriptions = list(subscriptions)
        self._max_batch = max_batch
        self._queue: queue.Queue[tuple[bytes, int]] = queue.Queue()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.errors = 0
        self.received = 0
        self.last_message_at = time.monotonic()
        self._busy = False
        self._client = _client(client_id)
        self._client.manual_ack_set(True)
        self._pending_subs: set[int] = set()
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._worker = threading.Thread(target=self._work, name="replication-inbox", daemon=True)

    def start(self, timeout_s: float = 10.0) -> None:
        self._client.connect_async(
            self._broker.host,
            self._broker.port,
            keepalive=5,
            clean_start=False,
            properties=_connect_properties(receive_maximum=1000),
        )
        self._client.loop_start()
        self._worker.start()
        if not self.connected.wait(timeout_s):
            self.stop()
            raise ConnectionError(
                f"no MQTT broker answered at {self._broker.host}:{self._broker.port}"
            )

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            return
        # `connected` means subscribed: it is set when the broker has acknowledged every
        # subscription (SUBACK), so a record published after it is never missed, even by a
        # broker that restarted without the session
        self._pending_subs = {client.subscribe(sub, qos=1)[1] for sub in self._subscriptions}
        if not self._pending_subs:
            self.connected.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self._pending_subs.discard(mid)
        if not self._pending_subs:
            self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connected.clear()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.last_message_at = time.monotonic()
        self._queue.put((bytes(message.payload), message.mid))

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            self._busy = True
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._apply([payload for payload, _ in batch])
            except Exception:
                # not acknowledged: the broker delivers them again after a reconnect
                self.errors += 1
                log.exception("replication batch of %d messages not applied", len(batch))
                self._busy = False
                self._client.reconnect()
                continue
            for _, mid in batch:
                self._client.ack(mid, 1)
            self.received += len(batch)
            self._busy = False

    def idle_for(self, seconds: float) -> bool:
        """Nothing queued or being applied, and no message for `seconds`."""
        return (
            self._queue.empty()
            and not self._busy
            and time.monotonic() - self.last_message_at >= seconds
        )

    def stop(self) -> None:
        self._stop.set()
        if self._worker.is_alive():
            self._worker.join(timeout=5)
        self._client.disconnect()
        self._client.loop_stop()
