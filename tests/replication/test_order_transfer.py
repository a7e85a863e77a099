"""Issue 17, the order travels to the site that makes it: the control node moves an order from
the site node holding it (St Thomas', GSTT-PH) to another site's node (Manchester, MAN-PH). The
giving site gives it up by its own rules and sends it back signed; only then does the control
hand it to the receiving site, which makes it. Never made twice, never lost.

Three real nodes, each its own copy of the seeded network (test_chaos.network), records carried
as their inboxes take them (test_release_across.deliver). Expected values come from the nodes'
own tables read directly (the order's columns at the giving site, its job, the batches made)
and from the documented formula of the signed entries (SHA-256 of the canonical JSON of the
audit body they sign, computed here with `json.dumps`, not with the code's own helper)."""

from __future__ import annotations

import copy
import html
import json
import re
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.cli_helpers import run
from tests.conftest import CLOCK_JUMPS
from tests.quality.release_helpers import token
from tests.replication.test_chaos import SITES, network, node_folder
from tests.replication.test_handover_attacks import deliver_rechained, forge_control_row
from tests.replication.test_order_handover import (
    batches_of,
    cancel_at_control,
    order_columns,
    pass_again,
)
from tests.replication.test_release_across import (
    applied_rows,
    canonical_sha256,
    control_key_known,
    deliver,
    site_keys_known,
    unsent,
)
from tests.replication.test_replication_mqtt import broker, repl
from tests.replication.test_site_node_work import order_for
from tests.telemetry.test_mqtt import Broker

from nearfab.bootstrap import App, build_app
from nearfab.common.clock import ManualClock
from nearfab.common.errors import Forbidden, NotFound, Refused
from nearfab.config import Settings
from nearfab.custody import LedgerEntry
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import AuditEntry, Permission
from nearfab.masterfiles import MasterFile
from nearfab.network.models import Site
from nearfab.orders.models import Order
from nearfab.replication.link import provision_inbox
from nearfab.replication.outcomes import site_outcomes
from nearfab.replication.transfers import ControlTransfers, Transfer
from nearfab.scheduling import Job
from nearfab.telemetry import BrokerAddress
from nearfab.web.server import create_web_app

__all__ = ["broker", "network"]

GIVER, TAKER = "GSTT-PH", "MAN-PH"


def transfers_of(control: App) -> ControlTransfers:
    assert control.transfers is not None
    return control.transfers


def request(control: App, order_id: str, to: str = TAKER, who: str = "planner") -> Transfer:
    with control.uow() as uow:
        return transfers_of(control).request(
            uow, fh.actor(control, who), order_id, to_site=to, reason="GSTT printers down"
        )


def send(control: App, *sites: App) -> None:
    """The control's records not sent yet, to each of these site nodes (their inboxes store
    them, then each acts on the control's decisions), then marked sent: the broker carries
    the same records to every site, so a site not named now never gets them (a gap)."""
    records = unsent(control)
    for site in sites:
        with site.uow() as uow:
            repl(site).apply(uow, [r.to_message() for r in records])
        decisions = repl(site).decisions
        assert decisions is not None
        decisions.apply_pending(site.uow)
    with control.uow() as uow:
        ids = [r.id for r in records]
        repl(control).mark_published(uow, ids, ids)


def to_control(site: App, control: App) -> list[str]:
    """The site's records carried to the control, then the control's pass over the giving
    sites' answers (what its inbox does after each batch)."""
    deliver(site, control)
    return transfers_of(control).hand_over_released(control.uow)


def rows(app: App, entity: str, entity_id: str | None = None) -> list[AuditEntry]:
    with app.uow() as uow:
        found = list(
            uow.session.scalars(
                select(AuditEntry).where(AuditEntry.entity_type == entity).order_by(AuditEntry.seq)
            )
        )
        for row in found:
            uow.session.expunge(row)
    return [r for r in found if entity_id is None or r.entity_id == entity_id]


def signed_body(app: App, ref: str) -> list[dict[str, Any]]:
    """The bodies of `app`'s own ledger entries of kind `decision` with this ref."""
    with app.uow() as uow:
        entries = uow.session.scalars(
            select(LedgerEntry).where(LedgerEntry.kind == "decision", LedgerEntry.ref == ref)
        ).all()
        return [json.loads(e.payload)["body"] for e in entries]


def state(control: App, order_id: str) -> list[tuple[str, str | None]]:
    with control.uow() as uow:
        return [(t.status, t.outcome) for t in transfers_of(control).transfers(uow, order_id)]


def taken_at_giver(net: dict[str, App]) -> str:
    """An order taken at the control for St Thomas' and taken by St Thomas' node (Manchester's
    node has the control's records too, and ignores it)."""
    control = net["CTRL"]
    order_id = order_for(control, GIVER)
    send(control, net[GIVER], net[TAKER])
    assert order_columns(net[GIVER], order_id) is not None
    assert order_columns(net[TAKER], order_id) is None
    return order_id


# --- the three nodes with an order taken at St Thomas', built once ------------------------------
#
# Most tests begin where `taken_at_giver` leaves `network`: the control's key known at both
# sites, an order taken at the control for St Thomas' and taken by St Thomas' node. That start
# is built once per xdist worker (as `nodes_world` in test_replication_mqtt.py does for two
# nodes): the three data folders (databases and keys) become a template, and each test gets its
# own copy of all three, its `clock` moved to where the build stopped, and the order's id. No
# test sees another's writes: every test works on its own files.

_TAKEN: dict[str, tuple[Path, datetime, str]] = {}
NETWORK = (*SITES, "CTRL")  # the node sites of `network`, each a data folder of that name


def _network_apps(folder: Path, clock: ManualClock) -> dict[str, App]:
    return {
        code: build_app(
            Settings(data_dir=folder / code, node_site=code, **CLOCK_JUMPS),
            clock=clock,
            migrate=False,
        )
        for code in NETWORK
    }


def _taken_world(request: pytest.FixtureRequest) -> tuple[Path, datetime, str]:
    key = str(request.getfixturevalue("sqlite_template"))
    if key not in _TAKEN:
        folder: Path = request.getfixturevalue("tmp_path_factory").mktemp("taken-world")
        for code in NETWORK:
            node_folder(request, folder, code)  # a copy of the seeded network, as `network`
        clock = ManualClock()
        net = _network_apps(folder, clock)
        try:
            for code in SITES:  # provisioning, as `network` does
                control_key_known(net["CTRL"], net[code])
            order_id = taken_at_giver(net)
            for app in net.values():
                app.shutdown()  # nothing buffered is left behind
        finally:
            for app in net.values():
                app.engine.dispose()
        for code in NETWORK:  # fold each WAL into its file before copying
            with sqlite3.connect(folder / code / "nearfab.db") as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _TAKEN[key] = (folder, clock.now(), order_id)
    return _TAKEN[key]


@pytest.fixture
def taken(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[tuple[dict[str, App], str]]:
    """(`network`, order id) as `taken_at_giver(network)` leaves them: the test's own copy of
    the three nodes, on SQLite."""
    folder, at, order_id = _taken_world(request)
    for code in NETWORK:
        shutil.copytree(folder / code, tmp_path / code)
    clock.advance((at - clock.now()).total_seconds())  # where the build stopped
    net = _network_apps(tmp_path, clock)
    yield net, order_id
    for app in net.values():
        app.engine.dispose()


def test_an_order_moved_is_given_up_signed_by_its_site_then_made_by_the_other_only(
    taken: tuple[dict[str, App], str],
) -> None:
    network, order_id = taken
    control, giver, taker = network["CTRL"], network[GIVER], network[TAKER]
    before = order_columns(giver, order_id)
    assert before is not None
    made = request(control, order_id)
    assert (made.from_site_id, made.to_site_id) == (
        fh.site_id(control, GIVER),
        fh.site_id(control, TAKER),
    )
    # the control's decision signed: the entry names the SHA-256 of its audit body
    (decided,) = rows(control, "order_transfer", order_id)
    assert decided.new is not None and decided.new["transfer_id"] == made.transfer_id
    assert signed_body(control, f"order_transfer:{order_id}") == [
        {
            "sha256": canonical_sha256(decided.new),
            "order_id": order_id,
            "transfer_id": made.transfer_id,
        }
    ]

    send(control, giver, taker)
    assert fh.order_status(giver, order_id) == "cancelled"  # given up there: never made there
    # the receiving site gets nothing before the giving site's release reached the control
    assert order_columns(taker, order_id) is None
    (release,) = rows(giver, "order_release", order_id)
    assert release.new is not None
    # the order as the giving site held it, column for column (its own lock aside)
    sent = dict(release.new["handover"]["order"])
    assert {k: v for k, v in sent.items() if k != "row_version"} == {
        k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in before.items()
    }
    assert release.new["status_before"] == "designed"
    # signed with the giving site's key, in its own chain, naming the release's SHA-256
    assert signed_body(giver, f"order_release:{order_id}") == [
        {
            "sha256": canonical_sha256(release.new),
            "order_id": order_id,
            "transfer_id": made.transfer_id,
        }
    ]
    (applied,) = [r for r in applied_rows(giver, "order_transfer")]
    assert applied.action == "create" and applied.new is not None
    assert applied.new["outcome"] == f"given up here for site {made.to_site_id}"

    # the control hands it to Manchester once St Thomas' release arrived and verified
    assert to_control(giver, control) == [made.transfer_id]
    (handover,) = [
        r for r in rows(control, "order_handover", order_id) if (r.new or {}).get("transfer_id")
    ]
    assert handover.new is not None and handover.new["site_id"] == made.to_site_id
    assert handover.new["order"]["status"] == "designed"
    assert canonical_sha256(handover.new) in {
        b["sha256"] for b in signed_body(control, f"order_handover:{order_id}")
    }
    assert order_columns(control, order_id)["site_id"] == made.to_site_id  # type: ignore[index]
    assert state(control, order_id) == [("handed_over", f"handed over: {handover_record(control)}")]
    # run again: handed over once
    assert transfers_of(control).hand_over_released(control.uow) == []
    # Manchester holds it now: moving it "there" again is moving it nowhere
    with pytest.raises(Refused) as there:
        request(control, order_id, to=TAKER)
    assert there.value.code == "same_site"
    # nor back to St Thomas', which holds it cancelled (a hand-over there would take nothing)
    with pytest.raises(Refused) as back:
        request(control, order_id, to=GIVER)
    assert back.value.code == "given_up_there"

    send(control, giver, taker)
    here = order_columns(taker, order_id)
    assert here is not None
    assert {**here, "site_id": None, "status": None} == {
        **before,
        "site_id": None,
        "status": None,
    }
    assert (here["site_id"], here["status"]) == (made.to_site_id, "designed")
    send(control, giver, taker)  # the hand-over to Manchester is not St Thomas'
    assert fh.order_status(giver, order_id) == "cancelled"

    fh.run(giver)
    fh.run(taker)
    fh.run(control)
    assert (batches_of(giver, order_id), batches_of(taker, order_id)) == (0, 1)
    assert batches_of(control, order_id) == 0


def handover_record(control: App) -> str:
    """The control's record carrying its newest `order_handover` row."""
    (newest,) = rows(control, "order_handover")[-1:]
    return f"{repl(control).site_id}/audit:{newest.seq}"


def test_a_scheduled_order_leaves_the_giving_sites_plan_with_its_job(
    taken: tuple[dict[str, App], str],
) -> None:
    network, order_id = taken
    control, giver, taker = network["CTRL"], network[GIVER], network[TAKER]
    job_id = fh.schedule(giver, order_id)
    request(control, order_id)
    send(control, giver, taker)
    assert fh.order_status(giver, order_id) == "cancelled"
    with giver.uow() as uow:
        job = uow.session.get(Job, job_id)
        assert job is not None and job.status == "cancelled"  # its machine makes nothing of it
    (release,) = rows(giver, "order_release", order_id)
    assert release.new is not None and release.new["status_before"] == "scheduled"
    (applied,) = applied_rows(giver, "order_transfer")
    assert applied.new is not None
    assert applied.new["outcome"].endswith("taken off the plan with its job")
    to_control(giver, control)
    send(control, giver, taker)
    assert fh.order_status(taker, order_id) == "designed"  # planned again there, on its machines
    fh.run(taker)
    fh.run(giver)
    assert (batches_of(giver, order_id), batches_of(taker, order_id)) == (0, 1)


def test_an_order_a_batch_has_started_from_is_refused_at_its_site_and_never_reaches_the_other(
    taken: tuple[dict[str, App], str],
) -> None:
    network, order_id = taken
    control, giver, taker = network["CTRL"], network[GIVER], network[TAKER]
    fh.run(giver)  # made there
    made_state = fh.order_status(giver, order_id)
    assert made_state not in ("designed", "scheduled")
    transfer = request(control, order_id)
    send(control, giver, taker)
    assert fh.order_status(giver, order_id) == made_state  # kept, with its batch
    assert rows(giver, "order_release") == []
    (refused,) = applied_rows(giver, "order_transfer")
    assert refused.action == "refuse" and refused.new is not None
    assert f"order {order_id} is {made_state} here" in refused.new["outcome"]
    assert signed_body(giver, f"order_release:{order_id}") == []

    assert to_control(giver, control) == []
    ((status, outcome),) = state(control, order_id)
    assert status == "ended" and outcome is not None
    assert f"is {made_state} here" in outcome
    # nothing handed to Manchester, whatever it receives
    assert [r for r in rows(control, "order_handover") if (r.new or {}).get("transfer_id")] == []
    send(control, giver, taker)
    assert order_columns(taker, order_id) is None
    # the control's node page lists the site's refusal
    with control.uow() as uow:
        listed = site_outcomes(uow, [fh.site_id(control, GIVER)])
    (shown,) = [o for o in listed if o.entity_type == "order_transfer"]
    assert shown.state == "refused" and shown.entity_id == order_id
    assert shown.record_id == transfer.record_id
    # the order may be asked again once that transfer ended (and is refused again there)
    again = request(control, order_id)
    assert again.transfer_id != transfer.transfer_id


def test_a_replayed_transfer_is_not_acted_on_even_once_the_order_could_be_moved(
    taken: tuple[dict[str, App], str],
) -> None:
    """The transfer is refused at St Thomas' (a batch started); the run later fails and the
    order is re-planned there (designed: its rules would give it up now). The control's signed
    transfer replayed in a well-chained forged row is not acted on: one transfer, acted on
    once, by the first record carrying it."""
    network, order_id = taken
    control, giver, taker = network["CTRL"], network[GIVER], network[TAKER]
    fh.run(giver)
    request(control, order_id)
    send(control, giver, taker)
    ((first,),) = [[r.action for r in applied_rows(giver, "order_transfer")]]
    assert first == "refuse"
    fh.edit(giver, Order, order_id, status="designed")  # as a failed run re-planned leaves it
    (decided,) = rows(control, "order_transfer", order_id)
    forge_control_row(
        giver,
        control,
        entity_type="order_transfer",
        action="create",
        reason="replayed",
        entity_id=order_id,
        new=dict(decided.new or {}),
    )
    assert fh.order_status(giver, order_id) == "designed"
    assert rows(giver, "order_release") == []
    assert len(applied_rows(giver, "order_transfer")) == 1


def test_a_transfer_the_control_did_not_sign_is_never_acted_on(
    taken: tuple[dict[str, App], str],
) -> None:
    """A transfer written by hand on the control's topic, well chained: no signed entry names
    it, so St Thomas' gives nothing up and writes nothing about it."""
    network, order_id = taken
    control, giver = network["CTRL"], network[GIVER]
    body = {
        "format": "nearfab-order-transfer/1",
        "transfer_id": "TRF-forged",
        "order_id": order_id,
        "from_site_id": fh.site_id(control, GIVER),
        "to_site_id": fh.site_id(control, TAKER),
        "reason": "forged",
        "requested_by": "nobody",
        "requested_at": "2026-01-01T00:00:00+00:00",
    }
    forge_control_row(
        giver,
        control,
        entity_type="order_transfer",
        action="create",
        reason="forged",
        entity_id=order_id,
        new=body,
    )
    assert fh.order_status(giver, order_id) == "designed"
    assert applied_rows(giver, "order_transfer") == []
    assert rows(giver, "order_release") == []


def test_a_release_rewritten_on_the_way_is_not_handed_over(
    taken: tuple[dict[str, App], str],
) -> None:
    """St Thomas' gives the order up; on the way to the control its release is rewritten
    consistently (every plain hash and link redone): the units raised, and a release naming
    another order the control also asked to move. Its signed entry names the release as sent,
    so the control hands nothing over; the transfers stay asked, the order with no site's
    plan, listed for the control's people."""
    network, order_id = taken
    control, giver, taker = network["CTRL"], network[GIVER], network[TAKER]
    other = taken_at_giver(network)
    t1, t2 = request(control, order_id), request(control, other)
    send(control, giver, taker)
    assert fh.order_status(giver, other) == "cancelled"

    def edit(kind: str, payload: dict[str, Any]) -> None:
        if kind != "audit" or payload.get("entity_type") != "order_release":
            return
        if payload["entity_id"] == order_id:
            payload["new"]["handover"]["order"]["units"] = 99
        else:  # the other order's release made to carry this order instead
            forged = copy.deepcopy(payload["new"])
            forged["transfer_id"], forged["order_id"] = t1.transfer_id, order_id
            payload["new"] = forged

    deliver_rechained(giver, control, edit)
    assert transfers_of(control).hand_over_released(control.uow) == []
    assert [s for s, _ in state(control, order_id)] == ["requested"]
    assert [s for s, _ in state(control, other)] == ["requested"]
    assert t2.status == "requested"
    assert [r for r in rows(control, "order_handover") if (r.new or {}).get("transfer_id")] == []
    send(control, giver, taker)
    assert order_columns(taker, order_id) is None and order_columns(taker, other) is None


def test_the_request_is_refused_with_nothing_written_for_the_wrong_site_or_caller(
    taken: tuple[dict[str, App], str],
) -> None:
    network, order_id = taken
    control = network["CTRL"]
    fh.site_user(control, "planner-gstt", "planner", GIVER)
    fh.site_user(control, "planner-man", "planner", TAKER)
    fh.site_user(control, "clin-ctrl", "clinician", "CTRL")

    def refused(expected: type[Exception], **kw: Any) -> Any:
        args: dict[str, Any] = {"to": TAKER, "who": "planner", **kw}
        with pytest.raises(expected) as caught:
            request(control, args.pop("order_id", order_id), **args)
        return caught.value

    assert refused(Refused, to=GIVER).code == "same_site"
    assert refused(Refused, to="CTRL").code == "control_site"
    assert refused(NotFound, to="NOWHERE").field == "to_site"
    assert refused(NotFound, order_id="ORD-nothing").field == "order_id"
    # a planner of one of the two sites only does not reach the other
    assert refused(Forbidden, who="planner-gstt").code == "other_site"
    assert refused(Forbidden, who="planner-man").code == "other_site"
    assert refused(Forbidden, who="clin-ctrl").code == "forbidden"  # not a planner

    # a receiving site that makes nothing now, or that the order's master file does not list
    man = fh.site_id(control, TAKER)
    fh.edit(control, Site, man, status="paused")
    assert refused(Refused).code == "site_not_active"
    fh.edit(control, Site, man, status="active")
    mf_id = order_columns(control, order_id)["master_file_id"]  # type: ignore[index]
    with control.uow() as uow:
        listed = list(control.master_files.get(uow, mf_id).allowed_site_ids)
    assert man in listed
    fh.edit(control, MasterFile, mf_id, allowed_site_ids=[s for s in listed if s != man])
    assert refused(Refused).code == "site_not_allowed"
    fh.edit(control, MasterFile, mf_id, allowed_site_ids=listed)
    assert rows(control, "order_transfer") == []  # nothing written by any refusal

    made = request(control, order_id)
    assert refused(Refused).code == "transfer_open"  # one transfer at a time
    assert len(rows(control, "order_transfer")) == 1
    assert made.status == "requested"


def test_the_api_moves_an_order_for_a_planner_of_both_sites_only(
    taken: tuple[dict[str, App], str],
) -> None:
    network, order_id = taken
    control = network["CTRL"]
    fh.site_user(control, "planner-gstt", "planner", GIVER)
    api = TestClient(create_web_app(control))
    url = f"/api/v1/orders/{order_id}/transfer"
    body = {"to_site": TAKER, "reason": "GSTT printers down"}
    other = api.post(url, json=body, headers=token(control, "planner-gstt"))
    assert other.status_code == 403 and other.json()["error"]["code"] == "other_site"
    no_reason = api.post(url, json={**body, "reason": ""}, headers=token(control, "planner"))
    assert no_reason.status_code in (400, 422)
    assert rows(control, "order_transfer") == []
    done = api.post(url, json=body, headers=token(control, "planner"))
    assert done.status_code == 201, done.text
    assert done.json()["status"] == "requested"
    assert done.json()["to_site_id"] == fh.site_id(control, TAKER)
    # at a site node: not the control node
    site_api = TestClient(create_web_app(network[GIVER]))
    there = site_api.post(url, json=body, headers=token(network[GIVER], "planner"))
    assert there.status_code == 409 and there.json()["error"]["code"] == "not_control_node"


def test_at_the_receiving_site_the_handover_waits_for_its_master_file_version(
    network: dict[str, App],
) -> None:
    """The control publishes a new version and takes an order on it for St Thomas', which
    installs it and takes the order; the order is moved to Manchester, whose install of the
    publication fails once (a database error): the hand-over waits there, on record, and is
    taken in the next pass, once the version is effective."""
    control, giver, taker = network["CTRL"], network[GIVER], network[TAKER]
    decisions = repl(taker).decisions
    assert decisions is not None
    real = decisions._master_files

    class Broken:
        def install_published(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("disk I/O error")

    decisions._master_files = Broken()  # type: ignore[assignment]
    try:
        new_mf = fh.new_version(control, HYDROCORTISONE)
        order_id = order_for(control, GIVER)
        assert order_columns(control, order_id)["master_file_id"] == new_mf  # type: ignore[index]
        send(control, giver, taker)
        assert fh.order_status(giver, order_id) == "designed"
        request(control, order_id)
        send(control, giver, taker)
        assert to_control(giver, control) != []
        send(control, giver, taker)
    finally:
        decisions._master_files = real
    assert order_columns(taker, order_id) is None
    with taker.uow() as uow:
        waits = decisions.waiting(uow)
    assert any("not yet effective here" in why for why in waits.values()), waits
    pass_again(taker)  # the publication installed, then the hand-over taken
    assert fh.order_status(taker, order_id) == "designed"
    fh.run(taker)
    fh.run(giver)
    assert (batches_of(giver, order_id), batches_of(taker, order_id)) == (0, 1)


def test_the_commands_move_an_order_through_mosquitto(
    network: dict[str, App], broker: Broker
) -> None:
    """As a deployment runs it, every hop through a real Mosquitto: `nearfab node transfer` at
    the control, each node's `replicate --once` and `receive`; the control's `receive` hands
    the order over as St Thomas' release arrives (its inbox's pass after each batch), and
    `node transfers` lists it handed over. Without St Thomas' key registered at the control
    (it made it after its copy), the release is held and not acted on, and the node page
    shows the transfer stuck, naming `nearfab node keys import`; once it is registered, the
    control's `receive` hands the order over after St Thomas' next batch."""
    control, giver, taker = network["CTRL"], network[GIVER], network[TAKER]
    url = f"mqtt://127.0.0.1:{broker.port}"
    control_id = repl(control).site_id
    for app in (control, giver, taker):  # each inbox's session exists before anyone sends
        provision_inbox(BrokerAddress.parse(url), repl(app).site_id, control_id)

    def node(app: App, *args: str) -> Any:
        code = next(c for c, a in network.items() if a is app)
        done = run(["node", *args], env={"NEARFAB_NODE_SITE": code}, data_dir=app.settings.data_dir)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def hop(src: App, *dsts: App) -> None:
        node(src, "replicate", "--once", "--broker", url)
        for dst in dsts:
            node(dst, "receive", "--broker", url, "--idle", "0.5", "--seconds", "20")

    order_id = order_for(control, GIVER)
    hop(control, giver, taker)
    assert fh.order_status(giver, order_id) == "designed"
    made = json.loads(
        node(
            control, "transfer", order_id, "--to", TAKER, "--reason", "GSTT printers down", "--json"
        ).stdout
    )
    assert made["status"] == "requested" and made["to_site_id"] == fh.site_id(control, TAKER)
    hop(control, giver, taker)
    assert fh.order_status(giver, order_id) == "cancelled"
    assert order_columns(taker, order_id) is None
    # St Thomas' signed its release with a key it made after its copy, not registered at the
    # control yet: the release is held and not acted on, and the transfer says so, and what
    # to do, on the control's node page
    hop(giver, control)
    assert [s for s, _ in state(control, order_id)] == ["requested"]
    stuck = moving(fh.web_login(control, "auditor").get("/node").text)[order_id]
    assert f"given up at {GIVER}" in stuck
    assert "Stuck" in stuck and "nearfab node keys import" in stuck
    # registered as a deployment does (`node keys export` there, `keys import` here); the
    # control's `receive` hands the order over after the next batch from St Thomas' (its
    # anchor of what it received, say)
    site_keys_known(giver, control)
    node(giver, "inbox", "anchor")
    hop(giver, control)
    ((status, outcome),) = state(control, order_id)
    assert status == "handed_over" and outcome is not None
    (listed,) = json.loads(node(control, "transfers", "--order", order_id, "--json").stdout)
    assert (listed["status"], listed["outcome"]) == (status, outcome)
    hop(control, giver, taker)
    assert fh.order_status(taker, order_id) == "designed"
    assert order_columns(taker, order_id)["site_id"] == made["to_site_id"]  # type: ignore[index]


def test_an_order_the_site_took_itself_is_known_from_its_records_and_moved(
    network: dict[str, App],
) -> None:
    """An order St Thomas' node took itself (its own prescriber): the control holds no copy
    and knows it only from St Thomas' records. Unknown there until they arrive; then moved,
    and made at Manchester only, from the order as St Thomas' sent it."""
    control, giver, taker = network["CTRL"], network[GIVER], network[TAKER]
    order_id = order_for(giver, GIVER)
    with pytest.raises(NotFound):  # nothing of it has reached the control yet
        request(control, order_id)
    deliver(giver, control)
    assert order_columns(control, order_id) is None  # no copy at the control
    made = request(control, order_id)
    assert made.from_site_id == fh.site_id(control, GIVER)
    before = order_columns(giver, order_id)
    assert before is not None
    send(control, giver, taker)
    assert fh.order_status(giver, order_id) == "cancelled"
    assert to_control(giver, control) == [made.transfer_id]
    assert order_columns(control, order_id) is None  # still none: nothing to move there
    send(control, giver, taker)
    here = order_columns(taker, order_id)
    assert here is not None
    assert {**here, "site_id": None, "status": None} == {
        **before,
        "site_id": None,
        "status": None,
    }
    fh.run(giver)
    fh.run(taker)
    assert (batches_of(giver, order_id), batches_of(taker, order_id)) == (0, 1)


def test_a_cancellation_at_the_control_after_a_transfer_reaches_the_site_now_holding_it(
    taken: tuple[dict[str, App], str],
) -> None:
    """The control's copy follows the order to Manchester, so a cancellation made at the
    control afterwards goes to Manchester's node, which cancels it before making it; St
    Thomas', which gave it up, is not asked."""
    network, order_id = taken
    control, giver, taker = network["CTRL"], network[GIVER], network[TAKER]
    made = request(control, order_id)
    send(control, giver, taker)
    to_control(giver, control)
    send(control, giver, taker)
    assert fh.order_status(taker, order_id) == "designed"
    with pytest.raises(Forbidden):  # St Thomas' clinician reaches it no more: Manchester's
        cancel_at_control(control, order_id)
    cancel_at_control(control, order_id, by="admin")
    (cancelled,) = rows(control, "order_cancellation", order_id)
    assert cancelled.new is not None and cancelled.new["site_id"] == made.to_site_id
    send(control, giver, taker)
    assert fh.order_status(taker, order_id) == "cancelled"
    assert [r.new["outcome"] for r in applied_rows(taker, "order_cancellation") if r.new] == [
        "cancelled here"
    ]
    assert applied_rows(giver, "order_cancellation") == []
    fh.run(taker)
    assert batches_of(taker, order_id) == 0


def test_a_cancellation_of_an_order_whose_transferred_handover_was_refused_is_refused(
    taken: tuple[dict[str, App], str],
) -> None:
    """Manchester refuses the transferred order's hand-over (the order's master-file version is
    superseded there: final). A later cancellation at the control goes to Manchester (the
    control's copy moved there) and is refused there `not_taken_here`, at once: the order's
    first hand-over, to St Thomas', which Manchester's node also received and ignored, is not a
    hand-over to Manchester that could still be taken (it did wait for it for ever)."""
    network, order_id = taken
    control, giver, taker = network["CTRL"], network[GIVER], network[TAKER]
    mf_id = fh.master_file_id(taker, HYDROCORTISONE)
    with taker.uow() as uow:  # no version of the code effective at Manchester any more
        mf = uow.session.get(MasterFile, mf_id)
        assert mf is not None
        mf.status = "superseded"
        uow.commit()
    made = request(control, order_id)
    send(control, giver, taker)
    assert to_control(giver, control) == [made.transfer_id]
    send(control, giver, taker)
    assert order_columns(taker, order_id) is None
    (refused,) = [
        r
        for r in applied_rows(taker, "order_handover")
        if (r.new or {}).get("order_id") == order_id
    ]
    assert refused.action == "refuse" and "superseded here" in str((refused.new or {})["outcome"])
    # the control learns it from Manchester's records: refused there, the order held for
    # making by no site, said on the transfer
    deliver(taker, control)
    with control.uow() as uow:
        (seen,) = transfers_of(control).states(
            uow, fh.actor(control, "planner"), permission=Permission.PLAN_READ, now=uow.clock.now()
        )
    assert seen.state == "refused_there" and "superseded here" in seen.words
    assert seen.stuck is not None and f"{TAKER} refused it" in seen.stuck

    cancel_at_control(control, order_id, by="admin")
    (cancelled,) = rows(control, "order_cancellation", order_id)
    assert cancelled.new is not None and cancelled.new["site_id"] == made.to_site_id
    send(control, giver, taker)
    (answer,) = applied_rows(taker, "order_cancellation")
    assert answer.action == "refuse" and answer.new is not None
    # not_taken_here, in the words of the refusal (the applied row keeps the outcome)
    assert answer.new["outcome"] == (
        f"not applied here: order {order_id} was never taken here (its hand-over was not): "
        "nothing to cancel"
    ), answer.new
    decisions = repl(taker).decisions
    assert decisions is not None
    with taker.uow() as uow:
        assert decisions.waiting(uow) == {}  # nothing left waiting at Manchester
    assert applied_rows(giver, "order_cancellation") == []  # St Thomas' ignores it


def moving(page: str) -> dict[str, str]:
    """The node page's section "Orders moving between sites": order id -> the row's text."""
    section = re.search(r'<section id="transfers">(.*?)</section>', page, re.S)
    assert section is not None, "no section Orders moving between sites"
    out = {}
    for row in re.findall(r"<tr id=\"transfer-[^\"]+\"(.*?)</tr>", section.group(1), re.S):
        order = re.search(r"<code>([^<]+)</code>", row)
        assert order is not None
        out[order.group(1)] = html.unescape(re.sub(r"<[^>]+>", " ", row))
    return out


def test_the_transfers_are_read_by_each_role_from_its_site_another_site_and_the_control(
    taken: tuple[dict[str, App], str],
) -> None:
    """`GET /api/v1/order-transfers` and the control's node page list a transfer, with where it
    is, to a reader whose grant reaches both its sites only: the control's planner and auditor
    see it; a planner or pharmacist of St Thomas' or of Manchester alone (a transfer names
    both sites' orders) sees none of it, through the API and the page; a role without the
    permission is refused; a site node answers 409 and its page has no such section."""
    network, order_id = taken
    control, giver, taker = network["CTRL"], network[GIVER], network[TAKER]
    made = request(control, order_id)
    fh.site_user(control, "planner-gstt", "planner", GIVER)
    fh.site_user(control, "planner-man", "planner", TAKER)
    fh.site_user(control, "pharm-man", "pharmacist", TAKER)
    fh.site_user(control, "clin-ctrl", "clinician", "CTRL")
    api = TestClient(create_web_app(control))
    url = "/api/v1/order-transfers"

    def listed(who: str) -> list[dict[str, Any]]:
        got = api.get(url, headers=token(control, who))
        assert got.status_code == 200, got.text
        return list(got.json())

    (first,) = listed("planner")
    assert (first["order_id"], first["transfer_id"]) == (order_id, made.transfer_id)
    assert (first["from_site_code"], first["to_site_code"]) == (GIVER, TAKER)
    assert (first["state"], first["stuck"]) == ("requested", None)  # just asked: not late
    assert [t["transfer_id"] for t in listed("auditor")] == [made.transfer_id]
    for who in ("planner-gstt", "planner-man", "pharm-man", "pharmacist"):
        assert listed(who) == [], who  # one of the two sites only
    refused = api.get(url, headers=token(control, "clin-ctrl"))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    site_api = TestClient(create_web_app(giver))
    there = site_api.get(url, headers=token(giver, "planner"))
    assert there.status_code == 409 and there.json()["error"]["code"] == "not_control_node"

    # the giving site gives it up, the control hands it over, the receiving site takes it:
    # each state as the control learns it from the sites' records
    send(control, giver, taker)
    deliver(giver, control)  # the release held, not acted on yet (the pass comes next)
    (given,) = listed("planner")
    assert given["state"] == "given_up" and given["stuck"] is None
    assert transfers_of(control).hand_over_released(control.uow) == [made.transfer_id]
    (handed,) = listed("planner")
    assert handed["state"] == "handed_over"
    assert handed["handover_record"] == handover_record(control)
    send(control, giver, taker)
    deliver(taker, control)  # Manchester's applied row about the hand-over
    (taken,) = listed("planner")
    assert taken["state"] == "taken" and taken["state_words"].startswith(f"taken at {TAKER}")

    # the page: the control's reader of the whole network sees it, a site's reader does not
    page = fh.web_login(control, "auditor").get("/node")
    assert page.status_code == 200
    assert f"taken at {TAKER}" in moving(page.text)[order_id]
    fh.site_user(control, "pharm-gstt", "pharmacist", GIVER)
    for who in ("pharm-gstt", "pharm-man"):
        text = fh.web_login(control, who).get("/node").text
        assert moving(text) == {} and 'id="no-transfers"' in text, who
    assert fh.web_login(control, "operator").get("/node").status_code == 403
    at_site = fh.web_login(giver, "auditor").get("/node")
    assert at_site.status_code == 200 and 'id="transfers"' not in at_site.text


def test_a_stuck_transfer_says_so_and_what_to_do(
    taken: tuple[dict[str, App], str], clock: ManualClock
) -> None:
    """A transfer whose giving site has not answered within `ANSWER_DUE` (an hour) is shown
    stuck, naming the site's link; one whose release is held but does not verify (rewritten on
    the way) is shown given up there and stuck, with the reason: nothing hands it on."""
    network, order_id = taken
    control, giver, taker = network["CTRL"], network[GIVER], network[TAKER]
    request(control, order_id)
    with control.uow() as uow:
        (fresh,) = transfers_of(control).states(
            uow, fh.actor(control, "planner"), permission=Permission.PLAN_READ, now=clock.now()
        )
    assert fresh.stuck is None
    clock.sleep(3601)  # an hour and a second: late
    late = moving(fh.web_login(control, "auditor").get("/node").text)[order_id]
    assert "Stuck" in late and f"no answer from {GIVER}" in late

    send(control, giver, taker)

    def edit(kind: str, payload: dict[str, Any]) -> None:
        if kind == "audit" and payload.get("entity_type") == "order_release":
            payload["new"]["handover"]["order"]["units"] = 99

    deliver_rechained(giver, control, edit)
    assert transfers_of(control).hand_over_released(control.uow) == []
    row = moving(fh.web_login(control, "auditor").get("/node").text)[order_id]
    assert f"given up at {GIVER}" in row
    assert "Stuck" in row and "release is held here but not acted on" in row
