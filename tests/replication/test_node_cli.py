"""`nearfab node ...` on two data folders (a site node and the control node) and a real
Mosquitto: the commands a deployment runs (docs/replication.md)."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

from sqlalchemy import select
from tests import flow_helpers as fh
from tests.cli_helpers import run
from tests.replication.test_order_handover import (
    adjust_at_control,
    order_columns,
    pass_again,
    waiting_rows,
    with_dose_rule,
)
from tests.replication.test_release_across import deliver
from tests.replication.test_replication_mqtt import broker, nodes, owned_rows, repl, some_work
from tests.replication.test_site_node_work import order_for
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
        # a plain export, taken on the word of whoever runs it (no network CA in this test)
        [
            "node",
            "keys",
            "import",
            str(tmp_path / "keys.json"),
            "--trust-on-word",
            "--reason",
            "GSTT-PH's node",
        ],
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


def test_inbox_status_and_receive_name_the_controls_records_waiting_at_the_site(
    nodes: tuple[App, App], broker: Broker
) -> None:
    """A dose adjusted at the control for an order scheduled at St Thomas': the new version
    waits there (its job would make the old dose). `inbox status` (text and --json, under the
    control's origin) and `receive --json` name it: the control's record, what it is, since
    when, why and the code, as the site's own `replication_waiting` row holds them (read here
    directly). Once the first version leaves the plan it is taken, and nothing is listed."""
    site, control = nodes
    with_dose_rule(site, control)
    first = order_for(control, "GSTT-PH")
    deliver(control, site)
    fh.schedule(site, first)
    second = adjust_at_control(control, first)
    deliver(control, site)
    (row,) = waiting_rows(site, second)  # the site's own audit row
    assert row.new is not None and row.reason is not None
    version = order_columns(control, second)
    assert version is not None
    expected = {
        "record_id": row.entity_id,
        "what": (
            f"new version of order {first}: order {second} (prescription version 2, made to "
            f"{version['master_file_code']} v{version['master_file_version']}), a dose "
            "adjusted at the control site"
        ),
        "order_id": second,
        "supersedes": first,
        "since": row.at.replace(tzinfo=UTC).isoformat(),
        "reason_since": row.at.replace(tzinfo=UTC).isoformat(),
        "reason": row.reason,
        "code": "scheduled",  # the documented code: the order it replaces is scheduled here
    }
    control_id = repl(control).site_id

    shown = run(["node", "inbox", "status", "--json"], env=SITE, data_dir=folder(site))
    origins = {o["origin_site"]: o for o in json.loads(shown.stdout)}
    assert origins[control_id]["waiting"] == [expected]
    text = run(["node", "inbox", "status"], env=SITE, data_dir=folder(site)).stdout
    flat = " ".join(text.split())  # the console wraps long lines
    assert f"1 of the control site's records wait here: {row.entity_id}:" in flat
    assert " ".join(row.reason.split()) in flat and "(code scheduled)" in flat

    url = f"mqtt://127.0.0.1:{broker.port}"
    got = run(
        ["node", "receive", "--broker", url, "--idle", "0.3", "--json"],
        env=SITE,
        data_dir=folder(site),
    )
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["waiting"] == [expected]

    with site.uow() as uow:  # the first version taken off the plan at the site
        site.scheduling.unschedule(uow, fh.actor(site, "planner"), first, reason="dose changed")
    pass_again(site)
    assert order_columns(site, second) == order_columns(control, second)
    shown = run(["node", "inbox", "status", "--json"], env=SITE, data_dir=folder(site))
    origins = {o["origin_site"]: o for o in json.loads(shown.stdout)}
    assert origins[control_id]["waiting"] == []
