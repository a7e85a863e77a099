"""The control's check of a site node's release dossier before its QP signs
(`ControlReleases._check_as_sent`: the dossier against the audit row that sent it, and the
site's signed ledger entry naming it, docs/replication.md "Release across the network"),
with a backlog of N records of that site held at the control, against two figures from the
same run: the whole-chain check of that origin as `inbox status` makes it (`verify_chain` and
`verify_signatures` over every record held: what the dossier check cost before it read only
the batch's entries and the key rotations), and a raw baseline, one bare SELECT of the
origin's record ids.

Two nodes (a site and the control) are copies of one seeded demo network, each its own
SQLite database, as `tests/replication` builds them; the backlog is site work (each
transaction a ledger entry and an audit row, 100 to a transaction), one real batch made
through the product, its dossier sent, and everything applied at the control.

    python benchmarks/remote_decision.py --json [--sizes 1000,10000] [--repeat 5] [--smoke]
"""

from __future__ import annotations

import argparse
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
    return round(statistics.median(times), 2)


def _figures(control: Any, uow: Any, origin: str, received: Any, repeat: int) -> dict[str, float]:
    """The dossier check, the whole-chain check and the bare select, medians in ms."""
    from sqlalchemy import select

    from nearfab.custody.reads import site_public_keys
    from nearfab.replication.logic import verify_chain
    from nearfab.replication.models import InboxRecord
    from nearfab.replication.signatures import KeyBook, verify_signatures

    def check() -> None:
        control.remote_releases._check_as_sent(uow, received)  # raises if not verified

    def whole_chain() -> None:
        records = control.replication.received(uow, origin)
        verify_chain(records)
        verify_signatures(records, KeyBook(site_public_keys(uow.session)))

    def baseline() -> None:
        uow.session.execute(select(InboxRecord.id).where(InboxRecord.origin_site == origin)).all()

    return {
        "check_ms": _median_ms(check, repeat),
        "whole_chain_ms": _median_ms(whole_chain, repeat),
        "baseline_ms": _median_ms(baseline, repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000", help="site transactions, growing")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny run (tests)")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    if args.smoke:
        sizes, args.repeat = [10], 1

    from sqlalchemy import select
    from tests import flow_helpers as fh

    from nearfab.custody import export_site_keys, import_site_keys, parse_site_keys
    from nearfab.custody.enums import LedgerKind
    from nearfab.identity import AuditAction, audit, system_actor
    from nearfab.replication.models import InboxRecord

    nodes = site_and_control("nearfab-remote-decision-")
    site, control = nodes.site, nodes.control
    site_repl, control_repl = site.replication, control.replication
    assert site_repl is not None and control_repl is not None
    assert site.dossiers is not None and control.remote_releases is not None
    origin = site_repl.site_id
    operator = system_actor("operator")

    def deliver() -> None:
        with site.uow() as uow:
            site_repl.capture_now(uow)
        with site.uow() as uow:
            records = site_repl.pending(uow, 1_000_000)
        with control.uow() as uow:
            control_repl.apply(uow, [r.to_message() for r in records])
        with site.uow() as uow:
            ids = [r.id for r in records]
            site_repl.mark_published(uow, ids, ids)

    def site_work(n: int, start: int) -> None:
        for first in range(start, start + n, 100):
            with site.uow() as uow:
                for i in range(first, min(first + 100, start + n)):
                    site.custody_chain.ledger.append(
                        uow, origin, LedgerKind.EPCIS, f"work-{i}", {"step": i}
                    )
                    audit(uow, operator, AuditAction.CREATE, "work", f"w-{i}", new={"i": i})
                uow.commit()

    runs = []
    done = 0
    for size in sizes:
        site_work(size - done, done)
        done = size
        batch_id = fh.make_batch(site)
        site.dossiers.send_ready(site.uow)
        deliver()
        with site.uow() as uow:  # the site's keys registered at the control
            document = export_site_keys(uow.session, origin)
        with control.uow() as uow:
            import_site_keys(
                uow,
                system_actor("provisioning"),
                parse_site_keys(document),
                own_site_id=control_repl.site_id,
                reason="benchmark",
            )
        with control.uow() as uow:
            held = len(uow.session.scalars(select(InboxRecord.id)).all())
            received = control.remote_releases.newest(uow, batch_id)
            runs.append(
                {"records_held": held, **_figures(control, uow, origin, received, args.repeat)}
            )
    for app in (site, control):
        app.engine.dispose()
    last = runs[-1]
    out = {"runs": runs, **last}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print("records held | dossier check ms | whole-chain check ms | bare select ms")
    for r in runs:
        print(
            f"{r['records_held']:12d} | {r['check_ms']:16.1f} | {r['whole_chain_ms']:20.1f} | "
            f"{r['baseline_ms']:.2f}"
        )


if __name__ == "__main__":
    main()
