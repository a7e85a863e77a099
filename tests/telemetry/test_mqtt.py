"""Telemetry over a real Mosquitto broker: QoS 1 both ways, a persistent platform session, and a
broker restart in the middle of a run that loses nothing and doubles nothing."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.production import TelemetryReading
from nearfab.telemetry import BrokerAddress, MachineGateway, MqttPublisher, MqttSubscriber
from nearfab.telemetry.models import readings

seeded = fh.seeded
UNDER_CI = os.environ.get("CI", "").lower() == "true"
MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A private Mosquitto with persistence on, so the test can stop and start it at will."""

    def __init__(self, folder: Path) -> None:
        if MOSQUITTO is None:
            if UNDER_CI:
                pytest.fail("CI=true but the mosquitto binary is missing")
            pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)  # mosquitto started as root drops to its own user
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nmax_queued_messages 0\n"
            f"log_dest file {folder}/broker.log\nlog_type all\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)  # an orderly restart saves its state
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def broker() -> Iterator[Broker]:
    # not under tmp_path: mosquitto started as root drops to its own user, which must be able
    # to reach the folder to save its state
    folder = Path(tempfile.mkdtemp(prefix="nearfab-mqtt-"))
    folder.chmod(0o777)
    b = Broker(folder)
    b.start()
    yield b
    b.stop()
    shutil.rmtree(folder, ignore_errors=True)


def stored(app: App) -> tuple[int, int]:
    """(readings, distinct (series, time) pairs)."""
    with app.uow() as uow:
        total = uow.session.execute(select(func.count()).select_from(readings)).scalar_one()
        distinct = uow.session.execute(
            select(func.count()).select_from(
                select(readings.c.series_id, readings.c.ts_us).distinct().subquery()
            )
        ).scalar_one()
    return int(total), int(distinct)


def wait_for(check: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def test_broker_restart_mid_run_loses_and_doubles_nothing(seeded: App, broker: Broker) -> None:
    address = BrokerAddress("127.0.0.1", broker.port)
    machine = fh.machine(seeded, fh.machine_id(seeded, "GSTT printer A"))
    subscriber = MqttSubscriber(address, seeded.ingestor.ingest, client_id="platform-test")
    subscriber.start()
    publisher = MqttPublisher(
        address,
        "machine-test",
        will=MachineGateway.death_certificate(machine.site_id, machine.id, 7),
    )
    gw = MachineGateway(machine.site_id, machine.id, publisher, seeded.clock, bd_seq=7)
    gw.run_started("job-mqtt")
    messages, per_message = 120, 50
    for i in range(messages):
        batch = []
        for _ in range(per_message):
            seeded.clock.sleep(1)  # type: ignore[attr-defined]
            batch.append(TelemetryReading(seeded.clock.now(), "nozzle_temperature_c", 180.0, "°C"))
        gw.readings("job-mqtt", batch)
        if i == messages // 3:
            broker.stop()  # the broker goes away mid-run; the machine keeps publishing
        if i == messages // 2:
            broker.start()
    gw.run_ended("job-mqtt", True)
    assert publisher.wait_published(30), "the broker never acknowledged every message"
    expected = messages * per_message

    arrived = wait_for(lambda: stored(seeded)[0] >= expected and subscriber.idle())
    time.sleep(0.5)  # let any late redelivery arrive and be judged
    subscriber.stop()
    publisher.close()

    assert arrived, f"only {stored(seeded)[0]} of {expected} readings arrived"
    assert stored(seeded) == (expected, expected)  # none lost, none doubled
    with seeded.uow() as uow:
        assert seeded.telemetry.dead_letters(uow) == []
        assert all(not g.missing for g in seeded.telemetry.gaps(uow))
        run = seeded.telemetry.run(uow, "job-mqtt")
    assert run is not None and run.end_state == "COMPLETE" and run.points == expected
    assert subscriber.errors == 0


def test_death_certificate_marks_the_machine_offline(seeded: App, broker: Broker) -> None:
    address = BrokerAddress("127.0.0.1", broker.port)
    machine = fh.machine(seeded, fh.machine_id(seeded, "GSTT printer A"))
    subscriber = MqttSubscriber(address, seeded.ingestor.ingest, client_id="platform-death")
    subscriber.start()
    publisher = MqttPublisher(
        address,
        "machine-death",
        will=MachineGateway.death_certificate(machine.site_id, machine.id, 3),
    )
    gw = MachineGateway(machine.site_id, machine.id, publisher, seeded.clock, bd_seq=3)
    gw.run_started("job-d")

    def online() -> bool | None:
        with seeded.uow() as uow:
            rows = seeded.telemetry.machines(uow)
        return rows[0].online if rows else None

    assert wait_for(lambda: online() is True, 10)
    # vanish without saying goodbye: the broker sends the will
    publisher._client._sock.close()  # type: ignore[attr-defined]
    assert wait_for(lambda: online() is False, 20), "the death certificate never arrived"
    subscriber.stop()


def test_networked_mode_carries_a_batch_run_through_the_broker(seeded: App, broker: Broker) -> None:
    """With NEARFAB_MQTT_URL set, simulated machines publish over MQTT like real ones and the
    platform's persistent subscription stores their run."""
    seeded.settings.mqtt_url = f"mqtt://127.0.0.1:{broker.port}"
    seeded.start_telemetry()
    try:
        batch = fh.batch(seeded, fh.make_batch(seeded))

        def complete() -> bool:
            with seeded.uow() as uow:
                run = seeded.telemetry.run(uow, batch.job_id)
            return run is not None and run.end_state == "COMPLETE"

        assert wait_for(complete, 30), "the run never completed over MQTT"
        with seeded.uow() as uow:
            run = seeded.telemetry.run(uow, batch.job_id)
            dead = seeded.telemetry.dead_letters(uow)
        assert run is not None and run.points == len(batch.telemetry or [])
        assert dead == []
    finally:
        seeded.stop_telemetry()
