"""The machine side of the message scheme: what a site gateway (or a simulated machine) runs.

It numbers messages (bdSeq per session, seq per message), sends a birth before the first data
and again when a new metric appears, splits readings into messages of at most 50 points, and
reports run start and end as PackML states. It implements production's `TelemetrySink`, so the
digital twin publishes through exactly the path a real machine uses."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime

from nearfab.common.clock import Clock
from nearfab.production import TelemetryReading
from nearfab.telemetry.logic import (
    MAX_POINTS_PER_MESSAGE,
    MachineState,
    MessageKind,
    MetricSpec,
    Point,
    birth_body,
    data_body,
    death_body,
    encode,
    state_body,
    topic_for,
)
from nearfab.telemetry.transport import Publisher


def epoch_ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)


class MachineGateway:
    def __init__(
        self,
        site_id: str,
        machine_id: str,
        publisher: Publisher,
        clock: Clock,
        *,
        bd_seq: int | None = None,
        firmware: str | None = None,
        points_per_message: int = MAX_POINTS_PER_MESSAGE,
    ) -> None:
        self.site_id = site_id
        self.machine_id = machine_id
        self._publisher = publisher
        self._clock = clock
        # a new session number per start: the boot time in ms grows across restarts
        self.bd_seq = bd_seq if bd_seq is not None else epoch_ms(clock.now())
        self._seq = 0
        self._firmware = firmware
        self._metrics: dict[str, MetricSpec] = {}
        self._born = False
        self._chunk = max(1, min(points_per_message, MAX_POINTS_PER_MESSAGE))
        self._lock = threading.Lock()

    @staticmethod
    def death_certificate(site_id: str, machine_id: str, bd_seq: int) -> tuple[str, bytes]:
        """The will to register when connecting: the broker sends it if the machine vanishes."""
        return (
            topic_for(site_id, machine_id, MessageKind.DEATH),
            encode(death_body(bd_seq, bd_seq)),
        )

    def _send(self, kind: MessageKind, build: Callable[[int], dict[str, object]]) -> None:
        seq = self._seq
        self._seq += 1
        self._publisher.publish(topic_for(self.site_id, self.machine_id, kind), encode(build(seq)))

    def declare(self, metrics: Sequence[MetricSpec]) -> None:
        """(Re)send the birth when a metric is new: what a value means travels before it."""
        with self._lock:
            new = [m for m in metrics if self._metrics.get(m.name) != m]
            if self._born and not new:
                return
            for m in new:
                self._metrics[m.name] = m
            now = epoch_ms(self._clock.now())
            specs = list(self._metrics.values())
            self._send(
                MessageKind.BIRTH,
                lambda seq: birth_body(self.bd_seq, seq, now, specs, self._firmware),
            )
            self._born = True

    # --- production.TelemetrySink ------------------------------------------------------------

    def run_started(self, run: str) -> None:
        self.state(MachineState.EXECUTE, run)

    def readings(self, run: str | None, batch: Sequence[TelemetryReading]) -> None:
        if not batch:
            return
        self.declare([MetricSpec(r.metric, r.unit, "Double") for r in batch])
        points = [Point(r.metric, epoch_ms(r.at), r.value) for r in batch]
        with self._lock:
            now = epoch_ms(self._clock.now())
            for i in range(0, len(points), self._chunk):
                part = points[i : i + self._chunk]

                def body(seq: int, part: list[Point] = part) -> dict[str, object]:
                    return data_body(self.bd_seq, seq, now, run, part)

                self._send(MessageKind.DATA, body)

    def run_ended(self, run: str, ok: bool) -> None:
        self.state(MachineState.COMPLETE if ok else MachineState.ABORTED, run)

    # --- states and death --------------------------------------------------------------------

    def state(self, state: MachineState, run: str | None) -> None:
        if not self._born:
            self.declare([])
        with self._lock:
            now = epoch_ms(self._clock.now())
            self._send(MessageKind.STATE, lambda seq: state_body(self.bd_seq, seq, now, state, run))

    def death(self) -> None:
        """An orderly goodbye (the broker sends the same will on an unexpected loss)."""
        topic, payload = self.death_certificate(self.site_id, self.machine_id, self.bd_seq)
        self._publisher.publish(topic, payload)
