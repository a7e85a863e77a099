"""The deployment's shape: each site publishes to a Mosquitto of its own, bridged to the
control site's Mosquitto (QoS 1, persistent bridge session). The link between them (here: the
control broker itself) goes away while the site works and replicates to its local broker; when
it is back, the bridge delivers the backlog and the control inbox holds each record once."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.replication.test_replication_mqtt import (
    inbox_refs,
    nodes,
    owned_rows,
    repl,
    some_work,
    wait_for,
)
from tests.telemetry.test_mqtt import Broker

from nearfab.bootstrap import App
from nearfab.replication import replicate_once, start_inbox
from nearfab.replication.logic import TOPIC_ROOT
from nearfab.telemetry import BrokerAddress

__all__ = ["nodes"]


@pytest.fixture
def brokers(nodes: tuple[App, App]) -> Iterator[tuple[Broker, Broker]]:
    """(site broker bridged to the control broker, control broker)."""
    site, control = nodes
    folders = [Path(tempfile.mkdtemp(prefix=f"nearfab-{n}-")) for n in ("ctrl", "site")]
    for f in folders:
        f.chmod(0o777)  # mosquitto started as root drops to its own user
    hub = Broker(folders[0])
    local = Broker(folders[1])
    with local.conf.open("a") as conf:
        conf.write(
            "connection to-control\n"
            f"address 127.0.0.1:{hub.port}\n"
            f"topic {TOPIC_ROOT}/{repl(site).site_id}/# out 1\n"
            f"topic {TOPIC_ROOT}/{repl(control).site_id}/# in 1\n"
            f"remote_clientid nearfab-bridge-{repl(site).site_id}\n"
            "cleansession false\n"
            "restart_timeout 1 1\n"  # retry every second (a deployment: 5 30, backing off)
            "keepalive_interval 5\n"
            "try_private true\n"
        )
    hub.start()
    local.start()
    yield local, hub
    local.stop()
    hub.stop()
    for f in folders:
        shutil.rmtree(f, ignore_errors=True)


def test_a_site_cut_off_from_the_control_broker_catches_up_through_the_bridge(
    nodes: tuple[App, App], brokers: tuple[Broker, Broker]
) -> None:
    site, control = nodes
    local, hub = brokers
    at_site = BrokerAddress("127.0.0.1", local.port)
    at_control = BrokerAddress("127.0.0.1", hub.port)
    origin = repl(site).site_id
    inbox = start_inbox(
        repl(control), control.uow, at_control, control_site_id=repl(control).site_id
    )
    try:
        assert replicate_once(repl(site), site.uow, at_site).error is None
        assert wait_for(lambda: len(inbox_refs(control, origin)) == len(owned_rows(site)), 20)

        hub.stop()  # the site's link to the control site is gone
        some_work(site, 50)
        # the site's own broker still takes its records: the bridge queues them
        cut_off = replicate_once(repl(site), site.uow, at_site)
        assert cut_off.error is None and cut_off.acknowledged == 100
        time.sleep(0.5)
        hub.start()
        expected = owned_rows(site)
        assert wait_for(lambda: len(inbox_refs(control, origin)) >= len(expected), 30), (
            f"{len(inbox_refs(control, origin))} of {len(expected)} arrived"
        )
        time.sleep(0.3)
    finally:
        inbox.stop()
    refs = inbox_refs(control, origin)
    assert sorted(refs) == sorted(expected) and len(refs) == len(set(refs))
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.ok and status.head_seq == len(expected), status.to_dict()
