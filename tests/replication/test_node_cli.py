"""`nearfab node ...` on two data folders (a site node and the control node) and a real
Mosquitto: the commands a deployment runs (docs/replication.md)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from tests.cli_helpers import run
from tests.replication.test_replication_mqtt import broker, nodes, owned_rows, some_work
from tests.telemetry.test_mqtt import Broker

from nearfab.bootstrap import App
from nearfab.replication.models import InboxRecord

__all__ = ["broker", "nodes"]

SITE = {"NEARFAB_NODE_SITE": "GSTT-PH"}
CONTROL = {"NEARFAB_NODE_SITE": "CTRL"}


def folder(app: App) -> Path:
    return Path(app.settings.data_dir)


def test_outbox_replicate_receive_and_inbox_status(
    nodes: tuple[App, App], broker: Broker, tmp_path: Path
) -> None:
    site, control = nodes
    some_work(site, 5)
    url = f"mqtt://127.0.0.1:{broker.port}"
    expected = owned_rows(site)

    out = run(["node", "outbox", "--json"], env=SITE, data_dir=folder(site))
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["records"] == len(expected) and status["pending"] == len(expected)

    # the control node's persistent session exists before the site sends (as deployed)
    first = run(
        ["node", "receive", "--broker", url, "--idle", "0.3"], env=CONTROL, data_dir=folder(control)
    )
    assert first.returncode == 0, first.stderr

    broker.stop()
    down = run(["node", "replicate", "--once", "--broker", url], env=SITE, data_dir=folder(site))
    assert down.returncode == 3
    assert f"{len(expected)} records wait in the outbox" in down.stdout
    broker.start()

    sent = run(
        ["node", "replicate", "--once", "--broker", url, "--json"], env=SITE, data_dir=folder(site)
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert json.loads(sent.stdout)["acknowledged"] == len(expected)

    got = run(
        ["node", "receive", "--broker", url, "--idle", "0.5", "--json"],
        env=CONTROL,
        data_dir=folder(control),
    )
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["received"] == len(expected)
    with control.uow() as uow:
        refs = set(uow.session.scalars(select(InboxRecord.source_ref)))
    assert refs == expected

    shown = run(["node", "inbox", "status", "--json"], env=CONTROL, data_dir=folder(control))
    assert shown.returncode == 0, shown.stdout
    (origin,) = json.loads(shown.stdout)
    assert origin["ok"] and origin["records"] == len(expected) and origin["gaps"] == []

    # the site signed with a key it made after its copy: registered at the control first
    exported = run(["node", "keys", "export", "--out", str(tmp_path / "keys.json")], env=SITE,
                   data_dir=folder(site))  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    imported = run(
        ["node", "keys", "import", str(tmp_path / "keys.json"), "--reason", "GSTT-PH's node"],
        env=CONTROL,
        data_dir=folder(control),
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    anchored = run(["node", "inbox", "anchor", "--json"], env=CONTROL, data_dir=folder(control))
    assert anchored.returncode == 0, anchored.stdout
    assert json.loads(anchored.stdout)["anchored"][origin["origin_site"]]["seq"] == len(expected)


def test_a_data_folder_that_is_not_a_node_is_told_so(nodes: tuple[App, App]) -> None:
    site, _ = nodes
    out = run(["node", "outbox"], env={"NEARFAB_NODE_SITE": None}, data_dir=folder(site))
    assert out.returncode == 2
    assert "NEARFAB_NODE_SITE" in out.stderr
