"""The node page (`/node`): at the control node it shows what each site sent, counted from the
site's own tables; a site-bound reader sees their own site's origin and not another's; at a
site node it says what waits for the control site; in one database it says there are no nodes.
Real Mosquitto, two nodes (tests/replication/test_replication_mqtt.py's fixtures)."""

from __future__ import annotations

import html
import re

from sqlalchemy import select
from tests import flow_helpers as fh
from tests.replication.test_order_handover import order_columns, pass_again, waiting_rows
from tests.replication.test_release_across import decide, deliver
from tests.replication.test_release_attacks import outcomes, send_forged
from tests.replication.test_replication_mqtt import (
    broker,
    inbox_count,
    nodes,
    owned_rows,
    repl,
    send,
    some_work,
    wait_for,
)
from tests.replication.test_site_node_work import order_for
from tests.telemetry.test_mqtt import Broker

from nearfab.bootstrap import App
from nearfab.custody import export_site_keys, import_site_keys, parse_site_keys
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import AuditEntry, system_actor
from nearfab.masterfiles import MasterFile
from nearfab.production.models import BatchRecord
from nearfab.replication import start_inbox
from nearfab.telemetry import BrokerAddress

__all__ = ["broker", "nodes"]


def row_of(page: str, code: str) -> list[str]:
    """The cells of the origin's row in the Received table, as text."""
    found = re.search(rf'<tr id="origin-{re.escape(code)}">(.*?)</tr>', page, re.S)
    assert found, f"no row for {code}"
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", found[1])]


def test_the_control_shows_each_site_as_the_site_holds_it(
    nodes: tuple[App, App], broker: Broker
) -> None:
    site, control = nodes
    address = BrokerAddress("127.0.0.1", broker.port)
    inbox = start_inbox(repl(control), control.uow, address, control_site_id=repl(control).site_id)
    try:
        some_work(site, 4)
        sent = send(site, broker)
        assert sent.error is None
        expected = len(owned_rows(site))  # every audit row and ledger entry of the site's
        assert wait_for(lambda: inbox_count(control) == expected)
    finally:
        inbox.stop()

    qa = fh.web_login(control, "auditor")  # a control-site reader: the whole network
    page = qa.get("/node")
    assert page.status_code == 200
    assert "Control node" in page.text
    records, head, missing, _duplicates, problems = row_of(page.text, "GSTT-PH")[1:6]
    assert (int(records), int(head), int(missing), int(problems)) == (expected, expected, 0, 0)
    # the site signs with a key it made after its copy: not complete until the control holds it
    assert "does not hold" in row_of(page.text, "GSTT-PH")[-1]
    with site.uow() as uow:
        exported = export_site_keys(uow.session, repl(site).site_id)
    with control.uow() as uow:
        import_site_keys(
            uow,
            system_actor("provisioning"),
            parse_site_keys(exported),
            own_site_id=repl(control).site_id,
            reason="the site's keys, checked with the site",
        )
    page = qa.get("/node")
    assert row_of(page.text, "GSTT-PH")[-1] == "Complete"
    assert 'href="/node"' in page.text  # in the menu of a node

    # the site's pharmacist, at the control node: their own site's origin
    gstt = fh.web_login(control, "pharmacist")
    assert "origin-GSTT-PH" in gstt.get("/node").text
    # another site's pharmacist does not see St Thomas' records
    fh.site_user(control, "pharm-man", "pharmacist", "MAN-PH")
    man = fh.web_login(control, "pharm-man").get("/node")
    assert man.status_code == 200 and "origin-GSTT-PH" not in man.text
    assert "Nothing received yet" in man.text
    # a role without audit.read is refused, as a page
    refused = fh.web_login(control, "operator").get("/node")
    assert refused.status_code == 403 and "text/html" in refused.headers["content-type"]


def test_a_site_node_says_what_waits_for_the_control_and_what_it_sent(
    nodes: tuple[App, App], broker: Broker
) -> None:
    site, _control = nodes
    some_work(site, 2)
    browser = fh.web_login(site, "pharmacist")  # the log-in is an audit row of the site's too
    expected = len(owned_rows(site))
    page = browser.get("/node").text
    assert "Site node" in page
    assert "QP release and rejection of batches" in page  # the waits section
    # nothing sent yet: every record waits (the site's own count, from its tables)
    assert f"{expected} records, {expected} waiting for the broker" in page
    assert send(site, broker).error is None
    # everything sent and acknowledged: none waits
    assert f"{expected} records, 0 waiting for the broker" in browser.get("/node").text


def test_in_one_database_the_page_says_there_are_no_nodes(seeded: App) -> None:
    browser = fh.web_login(seeded, "auditor")
    page = browser.get("/node")
    assert page.status_code == 200 and "runs in one database" in page.text
    assert 'href="/node"' not in browser.get("/").text  # not in the menu


def test_a_site_node_offers_no_signing_form_for_what_the_control_decides(
    nodes: tuple[App, App],
) -> None:
    """The QP at a site node finds the batch in the release queue with its blockers, but no
    "Sign…": the release is decided at the control site, and every page says so in one line."""
    site, control = nodes
    batch_id = fh.make_batch(site)  # made, steps signed, audit trail reviewed: ready to sign
    number = fh.batch(site, batch_id).batch_number
    page = fh.web_login(site, "qp").get("/release").text
    assert number in page
    assert 'class="sign' not in page  # neither "Sign…" nor "Reject…"
    assert 'id="node-note"' in page and "decided at the control site" in page
    # the control node takes those decisions: no such note there
    assert 'id="node-note"' not in fh.web_login(control, "qp").get("/release").text


def waiting_cells(page: str) -> list[list[str]]:
    """The rows of the "Waiting here" table, each as its cells' text."""
    found = re.search(r'<table id="waiting">(.*?)</table>', page, re.S)
    if found is None:
        return []
    rows = re.findall(r'<tr id="waiting-\d+">(.*?)</tr>', found[1], re.S)
    return [
        [
            html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<td>(.*?)</td>", r, re.S)
        ]
        for r in rows
    ]


def test_a_site_node_shows_the_controls_records_waiting_there_to_its_own_site_only(
    nodes: tuple[App, App],
) -> None:
    """An order handed over to St Thomas' whose master-file version is held there but not yet
    effective waits (docs/replication.md, "Orders handed over to the sites"). St Thomas'
    pharmacist finds it on the node page under "Waiting here": the control's record, what it
    is, since when, why and the code, as the site's own `replication_waiting` row holds them
    (read here directly); a Manchester pharmacist on the same node sees none of it. Once the
    version is effective the order is taken at the next pass and nothing waits."""
    site, control = nodes
    order_id = order_for(control, "GSTT-PH")
    mf_id = fh.master_file_id(site, HYDROCORTISONE)
    fh.edit(site, MasterFile, mf_id, status="approved")  # held here, not yet effective
    deliver(control, site)
    (row,) = waiting_rows(site, order_id)  # the site's own audit row
    assert row.new is not None and row.reason is not None
    made_to = order_columns(control, order_id)
    assert made_to is not None

    gstt = fh.web_login(site, "pharmacist")  # St Thomas' own
    page = gstt.get("/node")
    assert page.status_code == 200 and "Waiting here" in page.text
    ((record, what, since, why, code),) = waiting_cells(page.text)
    assert record == row.entity_id  # the control's record, as the site's row names it
    assert what == (
        f"order {order_id} handed over (made to {made_to['master_file_code']} "
        f"v{made_to['master_file_version']})"
    )
    assert since == row.at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert why == row.reason and "not yet effective here (approved here)" in why
    # the documented code of a version not effective here (orders' HANDOVER_WAITS)
    assert code == row.new["code"] == "master_file_not_effective"

    fh.site_user(site, "pharm-man", "pharmacist", "MAN-PH")
    man = fh.web_login(site, "pharm-man").get("/node")
    assert man.status_code == 200 and "Waiting here" in man.text
    assert waiting_cells(man.text) == []
    assert order_id not in man.text and row.entity_id not in man.text
    assert 'id="nothing-waiting"' in man.text

    fh.edit(site, MasterFile, mf_id, status="effective")
    pass_again(site)  # taken: the wait is settled, its row stays as history
    assert order_columns(site, order_id) is not None
    after = gstt.get("/node").text
    assert waiting_cells(after) == [] and order_id not in after
    assert len(waiting_rows(site, order_id)) == 1


def test_the_control_shows_what_a_site_node_refused_to_its_readers_only(
    nodes: tuple[App, App],
) -> None:
    """A QP release the site refuses (its record changed after the RTRT; a tampered site
    dropped that blocker from the dossier it sent): the site's refusal row reaches the control
    with the site's audit trail, and the control's node page lists it under "Refused or
    waiting at the site nodes" with the site's reason, for readers who see that site; another
    site's reader sees none. Before the refusal arrives the section says nothing is refused."""
    site, control = nodes
    batch_id = fh.make_batch(site)
    with site.uow() as uow:
        used = site.production.get(uow, batch_id).material_used_g or 0.0
    fh.edit(site, BatchRecord, batch_id, material_used_g=used + 5.0)
    with site.uow() as uow:
        real = site.quality.remote.dossier(uow, batch_id)
    send_forged(site, batch_id, blockers=[])
    deliver(site, control)
    decide(control, batch_id, shown_hash=real["shown_hash"])
    qa = fh.web_login(control, "auditor")
    assert "nothing-at-sites" in qa.get("/node").text
    deliver(control, site)  # the site refuses it, on record
    ((action, outcome),) = outcomes(site, batch_id)
    assert action == "refuse"
    with site.uow() as uow:  # the site's own refusal row, read from its table
        (refusal,) = [
            r
            for r in uow.session.scalars(
                select(AuditEntry).where(AuditEntry.entity_type == "replication_applied")
            )
            if r.new is not None and r.new.get("batch_id") == batch_id
        ]
    deliver(site, control)

    page = html.unescape(qa.get("/node").text)
    section = page[page.index('id="at-sites"') : page.index('id="origins"')]
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", section)]
    assert cells[:4] == [
        "GSTT-PH",
        refusal.entity_id,
        f"remote_release {batch_id}",
        "Refused",
    ]
    assert cells[4] == outcome and "changed after the RTRT" in cells[4]
    assert len(re.findall(r'<tr id="at-site-', section)) == 1
    # the site's pharmacist at the control sees it; another site's does not
    assert refusal.entity_id in html.unescape(fh.web_login(control, "pharmacist").get("/node").text)
    fh.site_user(control, "pharm-man", "pharmacist", "MAN-PH")
    man = fh.web_login(control, "pharm-man").get("/node").text
    assert "nothing-at-sites" in man and refusal.entity_id not in html.unescape(man)
