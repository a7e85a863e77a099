"""Issue 17 with issue 19: the control node's cross-site comparability report holds the batches
the site nodes made (docs/replication.md, "Comparability across the network").

Two real nodes (a site node GSTT-PH and the control node, each its own SQLite database): the
site makes batches and sends their summaries; the control's report then shows the site's
group with the values the site's own tables give. Expected values come from the site's
database: read directly (each batch's telemetry mean of a process parameter, averaged by hand
here) and through the same report run at the site node over its own batches."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

import pytest
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.conftest import CLOCK_JUMPS
from tests.replication import test_replication_mqtt as base
from tests.replication.test_release_across import deliver, unsent
from tests.replication.test_replication_mqtt import repl

from nearfab.bootstrap import App, build_app
from nearfab.common.clock import ManualClock
from nearfab.config import Settings
from nearfab.production import BatchRecord
from nearfab.replication.logic import Record, record_hash, record_id
from nearfab.replication.models import InboxRecord

# the fixtures: two nodes, each its own database and data folder; the same after a batch made
# at the site (copied per test)
nodes, made_at_site = base.nodes, base.made_at_site

MADE = ("completed", "released", "rejected")  # docs/comparability.md, "What is compared"


def report(app: App, code: str, by: str = "site") -> dict[str, Any]:
    with app.uow() as uow:
        return app.comparability.report(uow, fh.actor(app, "qp"), code, by)


def groups(found: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int, float, Any]]:
    """(attribute, group label) -> (n, batches, mean, sd), rounded past float noise."""
    return {
        (a["name"], g["label"]): (
            g["n"],
            g["batches"],
            round(g["mean"], 9),
            None if g["sd"] is None else round(g["sd"], 9),
        )
        for a in found["attributes"]
        for g in a["groups"]
    }


def code_of(app: App, batch_id: str) -> str:
    return fh.batch(app, batch_id).master_file_code


def own_made(app: App, code: str, site_id: str | None = None) -> list[BatchRecord]:
    """The node's own made, finished batches of the master file (at one site), from its
    table."""
    query = select(BatchRecord).where(
        BatchRecord.master_file_code == code,
        BatchRecord.status.in_(MADE),
        BatchRecord.finished_at.is_not(None),
    )
    if site_id is not None:
        query = query.where(BatchRecord.site_id == site_id)
    with app.uow() as uow:
        rows = list(uow.session.scalars(query))
        for row in rows:
            uow.session.expunge(row)
    return rows


def forge_next(control: App, origin: str, summary: dict[str, Any]) -> Record:
    """The next record of `origin`'s chain as the control holds it, carrying `summary` as a
    batch summary (seq and previous hash continue the chain: the control stores it as sent)."""
    with control.uow() as uow:
        last = uow.session.scalars(
            select(InboxRecord)
            .where(InboxRecord.origin_site == origin)
            .order_by(InboxRecord.seq.desc())
            .limit(1)
        ).one()
        seq, prev, created = last.seq + 1, last.record_hash, last.created_at.isoformat()
    ref = f"batch:{summary['id']}@audit:{summary['audit_seq']}"
    fields: dict[str, Any] = {
        "id": record_id(origin, ref),
        "origin_site": origin,
        "seq": seq,
        "kind": "batch",
        "source_ref": ref,
        "chain_hash": "0" * 64,
        "prev_hash": prev,
        "payload": json.dumps(summary, sort_keys=True, separators=(",", ":")),
    }
    return Record(**fields, record_hash=record_hash(**fields), created_at=created)


def test_the_control_report_holds_the_site_nodes_batches_as_the_site_computes_them(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    assert site.comparability.reports.received_batches is None  # wired at the control only
    assert control.comparability.reports.received_batches is not None
    made = [fh.make_batch(site) for _ in range(3)]  # each: several audited changes
    code = code_of(site, made[0])
    gstt = repl(site).site_id
    assert {fh.batch(site, b).site_id for b in made} == {gstt}
    with site.uow() as uow:
        cpp = sorted(site.master_files.effective_for_code(uow, code).process_parameters)[0]
    # the site's own tables: its made batches of the code (the seed's and the three new)
    mine = own_made(site, code, gstt)
    assert set(made) <= {b.id for b in mine}
    cpp_means = [float((b.telemetry_summary or {})[cpp]["mean"]) for b in mine]
    before = groups(report(control, code))
    assert before.get((cpp, "GSTT-PH"), (0,))[0] == len(mine) - 3  # the seed's only

    records = unsent(site)
    assert sum(r.kind == "batch" for r in records) > 3  # several summaries per batch
    deliver(site, control)
    at_control = report(control, code)
    at_site = report(site, code)
    found = groups(at_control)
    # by hand from the site's own rows: n and mean of the batches' CPP means
    (row,) = [
        g
        for a in at_control["attributes"]
        if a["name"] == cpp
        for g in a["groups"]
        if g["label"] == "GSTT-PH"
    ]
    assert (row["n"], row["batches"]) == (len(mine), len(mine))
    assert row["mean"] == pytest.approx(fmean(cpp_means), rel=1e-12)
    assert len(cpp_means) > 1 and row["sd"] == pytest.approx(stdev(cpp_means), rel=1e-9)
    # the site's report over its own tables: every group, every attribute, the same
    assert found == groups(at_site)
    assert at_control["batches"] == at_site["batches"]
    for by in ("machine", "material_lot", "month"):
        assert groups(report(control, code, by)) == groups(report(site, code, by)), by
    assert {p["batch_number"] for a in at_control["attributes"] for p in a["points"]} >= {
        fh.batch(site, b).batch_number for b in made
    }

    # delivered again (the broker's at-least-once): duplicates, nothing counted twice
    with control.uow() as uow:
        again = repl(control).apply(uow, [r.to_message() for r in records])
    assert again.applied == 0
    assert groups(report(control, code)) == found
    # a later change of a site batch sends its summary again: still one batch
    fh.make_batch(site)  # and one more batch: n grows by exactly one
    deliver(site, control)
    grown = groups(report(control, code))
    assert grown[(cpp, "GSTT-PH")][0] == len(mine) + 1
    assert grown == groups(report(site, code))


def test_a_summary_claiming_another_site_or_unfinished_is_not_counted(
    made_at_site: tuple[App, App, str],
) -> None:
    site, control, batch_id = made_at_site  # `nodes`, then fh.make_batch(site)
    code = code_of(site, batch_id)
    deliver(site, control)
    origin = repl(site).site_id
    with site.uow() as uow:
        cpp = sorted(site.master_files.effective_for_code(uow, code).process_parameters)[0]
    with control.uow() as uow:
        (genuine,) = [
            json.loads(p)
            for p in uow.session.scalars(
                select(InboxRecord.payload)
                .where(InboxRecord.kind == "batch", InboxRecord.origin_site == origin)
                .order_by(InboxRecord.seq.desc())
                .limit(1)
            )
        ]
    assert genuine["id"] == batch_id and genuine["status"] in MADE
    man = fh.site_id(control, "MAN-PH")
    with control.uow() as uow:
        man_machine = next(m.id for m in control.network.list_machines(uow) if m.site_id == man)
    before = groups(report(control, code))
    total = report(control, code)["batches"]

    def send(**change: Any) -> None:
        record = forge_next(control, origin, {**genuine, **change})
        with control.uow() as uow:
            applied = repl(control).apply(uow, [record.to_message()])
        assert applied.applied == 1 and applied.problems == [], applied

    # the premise: a further batch of the sender's own site is counted (n + 1)
    send(id="forged-own", batch_number="FORGED-OWN")
    mine = groups(report(control, code))
    assert mine[(cpp, "GSTT-PH")][0] == before[(cpp, "GSTT-PH")][0] + 1
    # one claiming MAN-PH's batch, sent by GSTT-PH's node: ignored
    send(id="forged-man", batch_number="FORGED-MAN", site_id=man, machine_id=man_machine)
    assert groups(report(control, code)) == mine
    assert report(control, code)["batches"] == total + 1
    # an unfinished or not made batch is not counted
    send(id="forged-running", batch_number="FORGED-RUN", status="in_progress", finished_at=None)
    send(id="forged-open", batch_number="FORGED-OPEN", finished_at=None)
    assert groups(report(control, code)) == mine
    # a newer summary of the counted batch that claims another site drops it (newest wins)
    later = genuine["audit_seq"] + 1  # another record than the first forged one
    send(id="forged-own", batch_number="FORGED-OWN", site_id=man, audit_seq=later)
    assert groups(report(control, code)) == before
    with control.uow() as uow:
        held = uow.session.scalar(
            select(func.count()).select_from(BatchRecord).where(BatchRecord.id == batch_id)
        )
    assert held == 0  # the control holds the site's batch only as its summary


@pytest.fixture
def split_after_a_batch(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[tuple[App, App, str]]:
    """(site node GSTT-PH, control node, batch id): one database for the network makes a
    batch at GSTT-PH, then is copied into the two nodes (as `nodes`), so both hold it."""
    fh._seeded_sqlite(request, tmp_path)
    template = fh._TEMPLATES[("sqlite", str(request.getfixturevalue("sqlite_template")))]
    one = tmp_path / "one"
    one.mkdir()
    shutil.copyfile(tmp_path / "nearfab.db", one / "nearfab.db")
    shutil.copytree(fh._KEYS[template], one / "keys")
    network = build_app(Settings(data_dir=one, **CLOCK_JUMPS), clock=clock, migrate=False)
    batch_id = fh.make_batch(network, ready=False)
    network.engine.dispose()
    apps = []
    for name, code in (("site", "GSTT-PH"), ("control", "CTRL")):
        data = tmp_path / name
        shutil.copytree(one, data)
        settings = Settings(data_dir=data, node_site=code, **CLOCK_JUMPS)
        apps.append(build_app(settings, clock=clock, migrate=False))
    yield apps[0], apps[1], batch_id
    for app in apps:
        app.engine.dispose()


def test_a_batch_the_control_holds_itself_is_counted_once(
    split_after_a_batch: tuple[App, App, str],
) -> None:
    """The batch made before the split is in the control's own tables; the site node then
    completes its record and sends its summary: the control counts it once, as the site does."""
    site, control, shared = split_after_a_batch
    code = code_of(site, shared)
    gstt = repl(site).site_id
    assert [b.id for b in own_made(control, code, gstt)] == [shared]
    fh.prepare_release(site, shared)  # audited changes of the shared batch, at the site node
    fh.make_batch(site)
    summaries = [json.loads(r.payload) for r in unsent(site) if r.kind == "batch"]
    assert shared in {s["id"] for s in summaries}  # the premise: its summary is sent
    deliver(site, control)
    with site.uow() as uow:
        cpp = sorted(site.master_files.effective_for_code(uow, code).process_parameters)[0]
    found = groups(report(control, code))
    assert found[(cpp, "GSTT-PH")][:2] == (2, 2)  # the shared batch and the new one
    assert found == groups(report(site, code))
    assert report(control, code)["batches"] == 2
