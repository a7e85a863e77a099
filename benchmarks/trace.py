"""Forward trace from one material lot over many custody events: `p99_ms` of
`TraceService.lot_units` (lot -> its TransformationEvents -> output packs -> patients), with the
bare indexed lookup of the lot's events as `baseline_p99_ms` in the same run.

    python benchmarks/trace.py --json [--events 1000000] [--lots 20000] [--smoke]
"""

from __future__ import annotations

import argparse
import atexit
import json
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[max(0, int(len(values) * q) - 1)] * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--lots", type=int, default=2_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny run (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.lots, args.queries = 600, 20, 10

    from sqlalchemy import insert, select, text
    from tests import flow_helpers as fh

    from nearfab.bootstrap import build_app
    from nearfab.common.clock import ManualClock
    from nearfab.config import Settings
    from nearfab.custody import CustodyChain, EpcisEvent, SerialUnit
    from nearfab.custody.logic import epcis as ev
    from nearfab.custody.models import EpcisEpc
    from nearfab.demo import seed

    tmp = Path(tempfile.mkdtemp(prefix="nearfab-trace-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # no database left behind
    app = build_app(Settings(data_dir=tmp / "data"), clock=ManualClock())
    seed(app, fh.TEST_PASSWORD)
    chain = CustodyChain.build(app.custody, tmp / "data" / "keys")
    batch_id = fh.make_batch(app)
    with app.uow() as uow:
        t = app.custody.units_of_batch(uow, batch_id)[0]
        uow.session.expunge(t)
    now = datetime.now().astimezone()
    rng = random.Random(7)
    started = time.perf_counter()
    packs_per_event = 3
    with app.engine.begin() as conn:
        events, epcs, units = [], [], []
        for i in range(args.events):
            h = f"ni:///sha-256;{i:064x}?ver=CBV2.0"
            lot = ev.lot_uri(f"LOT-{i % args.lots:06d}")
            events.append(
                {"event_hash": h, "event_id": h, "event_type": "TransformationEvent",
                 "event_time": now, "record_time": now, "action": None,
                 "biz_step": "creating_class_instance", "disposition": "active",
                 "read_point": None, "biz_location": None, "site_id": None,
                 "source": "nearfab", "body": {}}
            )  # fmt: skip
            epcs.append({"event_hash": h, "epc": lot, "role": "input"})
            for k in range(packs_per_event):
                serial = f"B{i:09d}{k}"
                epcs.append({"event_hash": h, "epc": ev.sgtin_dl(t.gtin, serial), "role": "output"})
                units.append(
                    {"id": f"u{i:09d}{k}", "row_version": 1, "batch_id": t.batch_id,
                     "order_id": t.order_id, "patient_id": t.patient_id,
                     "pack_index": 100 + i * packs_per_event + k, "quantity": 30,
                     "gtin": t.gtin, "serial": serial, "batch_number": t.batch_number,
                     "expiry": t.expiry, "status": "released", "created_at": now}
                )  # fmt: skip
            if len(events) == 5000:
                conn.execute(insert(EpcisEvent), events)
                conn.execute(insert(EpcisEpc), epcs)
                conn.execute(insert(SerialUnit), units)
                events, epcs, units = [], [], []
        if events:
            conn.execute(insert(EpcisEvent), events)
            conn.execute(insert(EpcisEpc), epcs)
            conn.execute(insert(SerialUnit), units)
        if app.engine.dialect.name == "sqlite":
            conn.execute(text("ANALYZE"))
    load_s = time.perf_counter() - started
    lots = [f"LOT-{rng.randrange(args.lots):06d}" for _ in range(args.queries)]
    base, full = [], []
    sizes = []
    for lot in lots:
        with app.uow() as uow:
            t0 = time.perf_counter()
            list(
                uow.session.scalars(
                    select(EpcisEpc.event_hash).where(
                        EpcisEpc.epc == ev.lot_uri(lot), EpcisEpc.role == "input"
                    )
                )
            )
            base.append(time.perf_counter() - t0)
        with app.uow() as uow:
            t0 = time.perf_counter()
            found = chain.trace.lot_units(uow, lot)
            full.append(time.perf_counter() - t0)
            sizes.append(len(found))
    out = {
        "events": args.events,
        "lots": args.lots,
        "units_per_lot": round(sum(sizes) / len(sizes), 1),
        "load_s": round(load_s, 1),
        "p50_ms": _p(full, 0.5),
        "p99_ms": _p(full, 0.99),
        "baseline_p99_ms": _p(base, 0.99),
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
