"""The replication inbox's reads that grow with what a node holds (issue 17), with a raw
baseline from the same run:

1. **An idle pass of a site node's link** (`NodeLink.pass_once`: the inbox subscribed, the
   waiting control records retried, the replicator's pass through a private Mosquitto, nothing
   to send or receive), CPU seconds of this process per pass (`time.process_time`, the paho
   threads included), with 0 and with N control records held in the site's inbox. Beside it:
   `retry_idle_us`, the retry alone when nothing waits (what the pass added), and
   `full_pass_ms`, a whole decisions pass over what is held (`apply_pending`: what a retry
   costs when something waits and something changed here since the last pass).
2. **The two reads that found their rows by a text scan of the records' JSON** (until
   migration 0033): the control's `site_outcomes` over a site's audit records and the site's
   `waiting_at` over the control's, with M records held of each, median ms; beside each the
   text scan it replaced (`LIKE '%"entity_type":"…"%'` over the payloads, the same select
   the function used to make) and the select by the indexed `about` column.

Two nodes (the site GSTT-PH and the control CTRL), each its own SQLite copy of the seeded
demo network, as `tests/replication` builds them. The records held are written through the
product (audit rows of kinds the other node carries but does not act on, 100 to a
transaction), captured, and applied by the other node's inbox.

    python benchmarks/inbox_reads.py --json [--held 1000] [--scan 20000] [--passes 30] [--smoke]
"""

from __future__ import annotations

import argparse
import atexit
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._nodes import site_and_control


def _median_ms(call: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 4)


def _cpu_ms_per_call(call: Callable[[], Any], repeat: int) -> float:
    started = time.process_time()
    for _ in range(repeat):
        call()
    return round((time.process_time() - started) * 1000 / repeat, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--held", type=int, default=1000, help="control records held at the site")
    parser.add_argument("--scan", type=int, default=20000, help="records held for the reads")
    parser.add_argument("--passes", type=int, default=30, help="idle passes measured")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny run (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.held, args.scan, args.passes, args.repeat = 20, 60, 2, 1

    from sqlalchemy import or_, select
    from tests.telemetry.test_mqtt import Broker

    from nearfab.identity import AuditAction, audit, system_actor
    from nearfab.replication.decisions import waiting_at
    from nearfab.replication.link import NodeLink
    from nearfab.replication.models import InboxRecord
    from nearfab.replication.outcomes import site_outcomes
    from nearfab.telemetry import BrokerAddress

    nodes = site_and_control("nearfab-inbox-reads-")
    site, control, clock, tmp = nodes.site, nodes.control, nodes.clock, nodes.folder
    site_repl, control_repl = site.replication, control.replication
    assert site_repl is not None and control_repl is not None
    decisions = site_repl.decisions
    assert decisions is not None
    actor = system_actor("benchmark")

    def deliver(src: Any, dst: Any) -> None:
        repl_src, repl_dst = src.replication, dst.replication
        with src.uow() as uow:
            repl_src.capture_now(uow)
        while True:
            with src.uow() as uow:
                records = repl_src.pending(uow, 5000)
            if not records:
                return
            with dst.uow() as uow:
                repl_dst.apply(uow, [r.to_message() for r in records])
            with src.uow() as uow:
                ids = [r.id for r in records]
                repl_src.mark_published(uow, ids, ids)

    def write(app: Any, n: int, entity: Callable[[int], str], start: int = 0) -> None:
        """`n` audit rows of the app's own site, 100 to a transaction."""
        at = app.replication.site_id
        for first in range(start, start + n, 100):
            with app.uow() as uow:
                for i in range(first, min(first + 100, start + n)):
                    new = {"i": i}
                    why = "benchmark"
                    audit(
                        uow,
                        actor,
                        AuditAction.UPDATE,
                        entity(i),
                        f"b-{i}",
                        new=new,
                        reason=why,
                        site_id=at,
                    )
                uow.commit()

    # --- 1. the idle pass, 0 and `held` control records held at the site -----------------------
    folder = tmp / "broker"
    broker = Broker(folder)
    broker.start()
    atexit.register(broker.stop)
    address = BrokerAddress("127.0.0.1", broker.port)
    link = NodeLink(site_repl, site.uow, address, clock, control_site_id=control_repl.site_id)
    idle: dict[str, Any] = {}
    try:
        deliver(control, site)  # what the control sent since the copy (nothing, or its keys)
        decisions.apply_pending(site.uow)
        for held in (0, args.held):
            if held:
                # the control's master-file audit rows: carried to the sites, not acted on
                write(control, held, lambda i: "master_file")
                deliver(control, site)
                decisions.apply_pending(site.uow)
            with site.uow() as uow:
                count = len(
                    uow.session.scalars(
                        select(InboxRecord.id).where(
                            InboxRecord.origin_site == control_repl.site_id
                        )
                    ).all()
                )
            link.pass_once()  # subscribed, warm
            idle[str(held)] = {
                "records_held": count,
                "idle_pass_cpu_ms": _cpu_ms_per_call(link.pass_once, args.passes),
                "idle_pass_wall_ms": _median_ms(link.pass_once, args.passes),
                "retry_idle_us": round(
                    _median_ms(lambda: decisions.retry_waiting(site.uow), args.passes * 10) * 1000,
                    1,
                ),
                "full_pass_ms": _median_ms(
                    lambda: decisions.apply_pending(site.uow), max(1, args.repeat // 2)
                ),
            }
    finally:
        link.stop()
        broker.stop()

    # --- 2. the reads, `scan` records held of each side -----------------------------------------
    kinds = ("replication_applied", "replication_waiting", "replication_refused")

    def site_entity(i: int) -> str:  # one row in a hundred is about a control record
        return kinds[i // 100 % 3] if i % 100 == 0 else "work"

    write(site, args.scan, site_entity)
    with site.uow() as uow:  # the link's passes sent the site's first records to the broker
        site_repl.resend_from(uow, 1)
    deliver(site, control)
    write(control, args.scan, lambda i: "master_file", start=args.held)
    deliver(control, site)
    origin, control_id = site_repl.site_id, control_repl.site_id

    def text_scan(session: Any, origin_site: str, entities: tuple[str, ...]) -> int:
        about = or_(*(InboxRecord.payload.contains(f'"entity_type":"{e}"') for e in entities))
        query = select(InboxRecord.id).where(
            InboxRecord.origin_site == origin_site, InboxRecord.kind == "audit", about
        )
        return len(session.execute(query).all())

    def by_column(session: Any, origin_site: str, entities: tuple[str, ...]) -> int:
        query = select(InboxRecord.id, InboxRecord.kind).where(
            InboxRecord.about.in_(entities),
            InboxRecord.origin_site == origin_site,
        )
        return sum(kind == "audit" for _id, kind in session.execute(query))

    orders = ("order_handover", "order_cancellation")
    reads: dict[str, Any] = {}
    with control.uow() as uow:
        held = len(uow.session.scalars(select(InboxRecord.id)).all())
        reads["control_records_held"] = held
        reads["site_outcomes_ms"] = _median_ms(lambda: site_outcomes(uow, [origin]), args.repeat)
        reads["outcomes_text_scan_ms"] = _median_ms(
            lambda: text_scan(uow.session, origin, kinds), args.repeat
        )
        reads["outcomes_column_ms"] = _median_ms(
            lambda: by_column(uow.session, origin, kinds), args.repeat
        )
    with site.uow() as uow:
        held = len(uow.session.scalars(select(InboxRecord.id)).all())
        reads["site_records_held"] = held
        reads["waiting_at_ms"] = _median_ms(
            lambda: waiting_at(uow, origin, control_id), args.repeat
        )
        reads["waiting_text_scan_ms"] = _median_ms(
            lambda: text_scan(uow.session, control_id, orders), args.repeat
        )
        reads["waiting_column_ms"] = _median_ms(
            lambda: by_column(uow.session, control_id, orders), args.repeat
        )
    for app in (site, control):
        app.engine.dispose()
    out = {
        "idle": idle,
        **{f"{k}_{held}": v for held, fig in idle.items() for k, v in fig.items()},
        **reads,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print("control records held | idle pass CPU ms | wall ms | retry alone us | full pass ms")
    for fig in idle.values():
        print(
            f"{fig['records_held']:20d} | {fig['idle_pass_cpu_ms']:16.2f} | "
            f"{fig['idle_pass_wall_ms']:7.2f} | {fig['retry_idle_us']:14.1f} | "
            f"{fig['full_pass_ms']:.1f}"
        )
    for key, value in reads.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
