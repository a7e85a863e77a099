"""A site node works for its own site only. Its database starts as a copy of the network's, so
it holds the other sites' orders and machines too; planning, starting and running them there
would make another site's batches on a node that does not own them (found running `nearfab
demo --nodes`: the Manchester node made St Thomas' seeded orders, writing St Thomas' ledger
chain with a key the St Thomas' node never had)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.replication.test_replication_mqtt import nodes

from nearfab.bootstrap import App
from nearfab.common.errors import Refused
from nearfab.custody import LedgerEntry
from nearfab.identity import system_actor
from nearfab.identity.services.audit import create_checkpoint
from nearfab.orders.models import Order
from nearfab.production import BatchRecord
from nearfab.scheduling.models import Job

__all__ = ["nodes"]


def order_for(app: App, site_code: str) -> str:
    with app.uow() as uow:
        (order,) = app.orders.submit(
            uow, system_actor("prescriber"), fh.bundle(app), site_id=site_code
        )
    assert order.status == "designed", order.stop_reason
    return order.id


def test_a_site_node_plans_and_makes_its_own_sites_orders_on_its_own_machines(
    nodes: tuple[App, App],
) -> None:
    site, _control = nodes  # the site node is St Thomas' (GSTT-PH)
    gstt, man = fh.site_id(site, "GSTT-PH"), fh.site_id(site, "MAN-PH")
    ours = order_for(site, "GSTT-PH")
    theirs = order_for(site, "MAN-PH")

    # the planner's view: Manchester's machines are not candidates here, and say why
    with site.uow() as uow:
        eligible = site.scheduling.eligibility(uow, site.orders.get(uow, ours))
    assert eligible.candidates and {c.site_id for c in eligible.candidates} == {gstt}
    assert (
        eligible.excluded["MAN printer A"]
        == "another site's machine: this node makes its own site's work only"
    )

    fh.run(site)
    with site.uow() as uow:
        jobs = {j.order_id: j for j in uow.session.scalars(select(Job))}
        statuses = dict(uow.session.execute(select(Order.id, Order.status)).all())
        made_at = set(uow.session.scalars(select(BatchRecord.site_id)))
    assert jobs[ours].site_id == gstt  # planned on one of St Thomas' printers
    assert theirs not in jobs and statuses[theirs] == "designed"  # left for Manchester's node
    assert made_at <= {gstt}  # nothing made here for another site
    assert man not in made_at
    # the network plan made at this node: its own orders on its own machines only
    with site.uow() as uow:
        assert site.scheduling.planning is not None
        plan = site.scheduling.planning.current(uow)
        machines_here = {m.id for m in site.network.list_machines(uow) if m.site_id == gstt}
    assert plan is not None and plan.assignments
    assert {a["machine_id"] for a in plan.assignments} <= machines_here
    assert theirs not in {a["order_id"] for a in plan.assignments}
    # the control node makes nothing for a site either (the last test of this file)


def chain_length(app: App, site_code: str) -> int:
    with app.engine.connect() as c:
        found = c.execute(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.site_id == fh.site_id(app, site_code))
        ).scalar()
    return int(found or 0)


def test_a_site_node_never_writes_the_control_sites_chain(nodes: tuple[App, App]) -> None:
    """The control's ledger chain is the control node's: a site node does not anchor the
    sites' heads in it (refused, control_site_only), its runner's sweep leaves it alone, and
    its audit checkpoints go into its own site's chain, which travels to the control."""
    site, _control = nodes
    before = chain_length(site, "CTRL")
    with pytest.raises(Refused) as refused, site.uow() as uow:
        site.custody_chain.ledger.anchor(uow, system_actor("ledger"))
    assert refused.value.code == "control_site_only" and refused.value.field == "node"

    fh.make_batch(site)  # St Thomas' chain moves: packs commissioned at the site
    fh.run(site)  # the runner's sweep, where the control would anchor
    own = chain_length(site, "GSTT-PH")
    with site.uow() as uow:
        create_checkpoint(uow, fh.actor(site, "auditor"))
    assert chain_length(site, "CTRL") == before
    assert chain_length(site, "GSTT-PH") == own + 1
    with site.engine.connect() as c:
        last = c.execute(
            select(LedgerEntry.kind)
            .where(LedgerEntry.site_id == fh.site_id(site, "GSTT-PH"))
            .order_by(LedgerEntry.seq.desc())
            .limit(1)
        ).scalar()
    assert last == "audit_checkpoint"


def test_the_control_node_makes_nothing_for_a_site_an_order_taken_there_waits(
    nodes: tuple[App, App],
) -> None:
    """The control node's copy holds every site's machines too: an order for a site entered
    at the control node is not planned or made there (it would make that site's batch and
    write that site's ledger chain at the control); it waits, and the planner says why."""
    site, control = nodes
    theirs = order_for(control, "GSTT-PH")
    with control.uow() as uow:
        eligible = control.scheduling.eligibility(uow, control.orders.get(uow, theirs))
    assert eligible.candidates == []
    assert (
        eligible.excluded["GSTT printer A"]
        == "another site's machine: this node makes its own site's work only"
    )
    fh.run(control)
    with control.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(BatchRecord)) == 0
        assert uow.session.scalar(select(func.count()).select_from(Job)) == 0
        gstt = fh.site_id(control, "GSTT-PH")
        written = uow.session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.site_id == gstt)
        )
    with site.uow() as uow:  # the same copy: what the control holds of GSTT's chain is the seed's
        seeded = uow.session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.site_id == gstt)
        )
    assert written == seeded
