"""How machine messages travel: in-process (embedded default) or over MQTT (networked).

Both sides speak (topic, payload bytes). The machine side publishes through a `Publisher`; the
platform side delivers to a `TelemetryIngestor`. Over MQTT the subscriber acknowledges a message
(QoS 1, manual ack) only after the transaction that stored it has committed, and keeps a
persistent session, so a broker or platform restart loses nothing; redeliveries are dropped by
the ingestor's duplicate check.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from nearfab.telemetry.logic import SUBSCRIPTION

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes) -> None: ...

    def close(self) -> None: ...


class LocalPublisher:
    """In-process delivery: the embedded default, and what tests and the demo use."""

    def __init__(self, deliver: Callable[[str, bytes], None]) -> None:
        self._deliver = deliver

    def publish(self, topic: str, payload: bytes) -> None:
        self._deliver(topic, payload)

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """`mqtt://host:port` (port 1883 when omitted)."""
        parsed = urlparse(url)
        if parsed.scheme != "mqtt" or not parsed.hostname:
            raise ValueError(f"broker URL {url!r} must look like mqtt://host:1883")
        return cls(parsed.hostname, parsed.port or 1883)


def _client(client_id: str) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    # queue QoS 1 messages while the broker is away and send them when it is back
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(200)
    return client


def _session_properties(expiry_s: int, receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


class MqttPublisher:
    """A machine's (or site gateway's) connection: QoS 1 publishes, death certificate as will."""

    def __init__(
        self,
        broker: BrokerAddress,
        client_id: str,
        *,
        will: tuple[str, bytes] | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._client = _client(client_id)
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1, retain=False)
        self._connected = threading.Event()
        # mids the broker has not acknowledged yet (a message published while the broker is
        # away waits in paho's queue and is sent, with the same mid, after the reconnect)
        self._unacked: set[int] = set()
        self._acked_early: set[int] = set()
        self._lock = threading.Lock()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.connect_async(
            broker.host,
            broker.port,
            keepalive=5,
            clean_start=False,
            properties=_session_properties(3600),
        )
        self._client.loop_start()
        if not self._connected.wait(connect_timeout_s):
            self._client.loop_stop()
            raise ConnectionError(f"no MQTT broker answered at {broker.host}:{broker.port}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connected.clear()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._lock:
            if mid in self._unacked:
                self._unacked.discard(mid)
            else:  # acknowledged before publish() returned and recorded it
                self._acked_early.add(mid)

    def publish(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            raise ConnectionError("the MQTT client's outgoing queue is full")
        with self._lock:
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
            else:
                self._unacked.add(info.mid)

    def unacknowledged(self) -> int:
        with self._lock:
            return len(self._unacked)

    def wait_published(self, timeout_s: float = 30.0) -> bool:
        """Block until the broker has acknowledged everything published so far."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.unacknowledged():
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self.wait_published(5.0)
        self._client.disconnect()
        self._client.loop_stop()


class MqttSubscriber:
    """The platform's side: a persistent QoS 1 subscription feeding the ingestor in batches."""

    def __init__(
        self,
        broker: BrokerAddress,
        ingest: Callable[[list[tuple[str, bytes]]], object],
        *,
        client_id: str = "nearfab-platform",
        max_batch: int = 500,
        receive_maximum: int = 1000,
    ) -> None:
        self._broker = broker
        self._ingest = ingest
        self._max_batch = max_batch
        self._queue: queue.Queue[tuple[str, bytes, int]] = queue.Queue()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.errors = 0
        self._client = _client(client_id)
        self._client.manual_ack_set(True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._receive_maximum = receive_maximum
        self._worker = threading.Thread(target=self._work, name="telemetry-ingest", daemon=True)

    def start(self, timeout_s: float = 10.0) -> None:
        self._client.connect_async(
            self._broker.host,
            self._broker.port,
            keepalive=5,
            clean_start=False,
            properties=_session_properties(24 * 3600, self._receive_maximum),
        )
        self._client.loop_start()
        self._worker.start()
        if not self.connected.wait(timeout_s):
            raise ConnectionError(
                f"no MQTT broker answered at {self._broker.host}:{self._broker.port}"
            )

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            return
        client.subscribe(SUBSCRIPTION, qos=1)
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connected.clear()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._queue.put((message.topic, bytes(message.payload), message.mid))

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._ingest([(t, p) for t, p, _ in batch])
            except Exception:
                # not acknowledged: the broker delivers again after a reconnect
                self.errors += 1
                log.exception("telemetry batch of %d messages not stored", len(batch))
                self._client.reconnect()
                continue
            for _, _, mid in batch:
                self._client.ack(mid, 1)

    def idle(self) -> bool:
        return self._queue.empty()

    def stop(self) -> None:
        self._stop.set()
        self._worker.join(timeout=5)
        self._client.disconnect()
        self._client.loop_stop()
