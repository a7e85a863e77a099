"""`nearfab demo --nodes` as a user runs it: four real processes (the control node and the three
site nodes, each its own SQLite database and web server) replicating through a real Mosquitto.

What each node holds is read from its own database file, not from the replication code's
answers: a site node takes only its own site's prescriptions, the control node takes one
central prescription for a site and hands it over (the site's node holds it with the same id), every
record the control received from a site is that site's own record (same id, same hash, a gapless
prefix of its outbox), and the control's records reached every site the same way."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from tests.replication.test_replication_mqtt import broker
from tests.telemetry.test_mqtt import Broker

from nearfab.bootstrap import build_app
from nearfab.config import Settings
from nearfab.custody.models import SiteKey
from nearfab.identity import AuditEntry
from nearfab.network import Site
from nearfab.orders.models import Order
from nearfab.replication.models import InboxRecord, OutboxRecord

__all__ = ["broker"]

CODES = ("CTRL", "GSTT-PH", "MAN-PH", "MOB-1")


def four_free_ports() -> int:
    for base in range(23_000, 60_000, 97):
        ok = True
        for port in range(base, base + 4):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no four free ports")


@pytest.fixture
def demo(tmp_path: Path, broker: Broker) -> Iterator[tuple[subprocess.Popen[str], Path, int]]:
    port = four_free_ports()
    env = dict(os.environ, NEARFAB_DEMO_PASSWORD="nodes-demo-password-1")
    for name in ("NEARFAB_NODE_SITE", "NEARFAB_DATABASE_URL", "NEARFAB_REPLICATION_URL"):
        env.pop(name, None)
    args = ["demo", "--nodes", "--port", str(port), "--speed", "600"]
    args += ["--broker", f"mqtt://127.0.0.1:{broker.port}", "--data-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nearfab", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield proc, tmp_path / "nodes", port
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def engine_of(folder: Path) -> Engine:
    return create_engine(f"sqlite:///{folder / 'nearfab.db'}")


def read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"{marker!r} not printed:\n{''.join(seen)}")


def orders(folder: Path) -> dict[str, str]:
    with engine_of(folder).connect() as c:
        return {oid: site for oid, site in c.execute(select(Order.id, Order.site_id))}


def site_ids(folder: Path) -> dict[str, str]:
    with engine_of(folder).connect() as c:
        return {code: sid for sid, code in c.execute(select(Site.id, Site.code))}


def outbox(folder: Path, origin: str) -> dict[int, tuple[str, str]]:
    with engine_of(folder).connect() as c:
        rows = c.execute(
            select(OutboxRecord.seq, OutboxRecord.id, OutboxRecord.record_hash).where(
                OutboxRecord.origin_site == origin
            )
        )
        return {seq: (rid, h) for seq, rid, h in rows}


def inbox(folder: Path, origin: str) -> dict[int, tuple[str, str, str]]:
    with engine_of(folder).connect() as c:
        rows = c.execute(
            select(
                InboxRecord.seq, InboxRecord.id, InboxRecord.record_hash, InboxRecord.payload
            ).where(InboxRecord.origin_site == origin)
        )
        return {seq: (rid, h, payload) for seq, rid, h, payload in rows}


def holds_a_new_order(records: dict[int, tuple[str, str, str]]) -> bool:
    """An order the demo's prescription stream submitted at the node (not one of the seed's)."""
    rows = [json.loads(p) for _, _, p in records.values()]
    return any(
        r.get("entity_type") == "order" and "demo-prescriber" in str(r.get("actor_id"))
        for r in rows
    )


def handed_over(folder: Path) -> dict[str, str]:
    """The orders the control node took for a site and handed over: order id -> site id."""
    with engine_of(folder).connect() as c:
        rows = c.execute(
            select(AuditEntry.entity_id, AuditEntry.site_id).where(
                AuditEntry.entity_type == "order_handover"
            )
        )
        return {str(oid): str(site) for oid, site in rows}


def test_four_nodes_each_work_for_their_own_site_and_replicate_both_ways(
    demo: tuple[subprocess.Popen[str], Path, int],
) -> None:
    proc, nodes, port = demo
    printed = read_until(proc, "Ctrl-C stops", timeout_s=240)
    for i, code in enumerate(CODES):
        assert f"http://127.0.0.1:{port + i}/" in printed and code in printed
    ids = site_ids(nodes / "CTRL")
    control = ids["CTRL"]
    # the same seeded network in every node's database (a copy of the control's)
    assert all(site_ids(nodes / code) == ids for code in CODES)

    # each site's own prescription reaches the control as an audit record of that site
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        got = {code: inbox(nodes / "CTRL", ids[code]) for code in CODES[1:]}
        back = {code: inbox(nodes / code, control) for code in CODES[1:]}
        central = handed_over(nodes / "CTRL")
        arrived = all(
            oid in orders(nodes / code)
            for oid, site in central.items()
            for code in CODES[1:]
            if ids[code] == site
        )
        if (
            all(holds_a_new_order(r) for r in got.values())
            and all(back.values())
            and central
            and arrived
        ):
            break
        time.sleep(1)
    else:
        raise AssertionError(f"not replicated in time: {[len(r) for r in got.values()]}")

    proc.send_signal(signal.SIGTERM)  # as Ctrl-C: every node stops with it
    assert proc.wait(timeout=60) == 0
    for i in range(4):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port + i)) != 0, f"node {CODES[i]} still serves"

    # the control checked every signature the sites made: it held their keys (provisioned)
    control_app = build_app(Settings(data_dir=nodes / "CTRL", node_site="CTRL"), migrate=False)
    try:
        with control_app.uow() as uow:
            assert control_app.replication is not None
            statuses = {s.origin_site: s for s in control_app.replication.inbox_status(uow)}
    finally:
        control_app.engine.dispose()
    for code in CODES[1:]:
        st = statuses[ids[code]]
        assert st.ok and st.unverified_keys == [], st.to_dict()
        assert st.signatures_verified > 0, code

    # no node can sign for another site: each holds the private half of its own keys only
    for code in CODES:
        with engine_of(nodes / code).connect() as c:
            signers = set(
                c.scalars(select(SiteKey.site_id).where(SiteKey.private_key_encrypted != b""))
            )
        assert signers <= {ids[code]}, code

    # the control took one central prescription for a site and handed it over: the rest of
    # what it holds is the seed's
    central = handed_over(nodes / "CTRL")
    assert len(central) == 1
    ((central_id, central_site),) = central.items()
    at_control = orders(nodes / "CTRL")
    assert at_control[central_id] == central_site
    seeded = {oid: site for oid, site in at_control.items() if oid != central_id}
    for code in CODES[1:]:
        folder = nodes / code
        # a site node took only its own site's prescriptions, and the order the control took
        # for it arrived with the same id
        new = {oid: site for oid, site in orders(folder).items() if oid not in seeded}
        assert new and set(new.values()) == {ids[code]}, code
        assert (central_id in new) == (central_site == ids[code]), code
        # what the control holds of this site: a gapless prefix of its outbox, record for record
        received = inbox(nodes / "CTRL", ids[code])
        sent = outbox(folder, ids[code])
        assert sorted(received) == list(range(1, len(received) + 1))
        assert {s: (r[0], r[1]) for s, r in received.items()} == {s: sent[s] for s in received}
        # and what the site holds of the control's decisions, the same way
        came = inbox(folder, control)
        control_sent = outbox(nodes / "CTRL", control)
        assert sorted(came) == list(range(1, len(came) + 1))
        assert {s: (r[0], r[1]) for s, r in came.items()} == {s: control_sent[s] for s in came}
