"""How fast the embedded default takes prescriptions in and makes batches.

Prints JSON: prescriptions/s through `OrderService.submit` (FHIR parse + validation + design +
pseudonymisation + audit, one transaction each), a raw baseline measured in the same run
(json parse + one plain INSERT per prescription into a table of the same width), their ratio,
and batches/s through the runner with machines on a manual clock (no waiting on the printer).

    .venv/bin/python benchmarks/flow_throughput.py [--orders 200] [--json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from nearfab.bootstrap import App, build_app
from nearfab.common.clock import ManualClock
from nearfab.config import Settings
from nearfab.demo import complete_record, prescription_bundle, seed
from nearfab.identity import actor_of


def raw_baseline(bundles: list[dict[str, object]], path: Path) -> float:
    """json round trip + one INSERT and COMMIT per prescription: the floor for one-by-one intake."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE o (id TEXT, status TEXT, medication TEXT, dose REAL, units INT,"
        " design TEXT, raw TEXT)"
    )
    texts = [json.dumps(b) for b in bundles]
    start = time.perf_counter()
    for i, text in enumerate(texts):
        doc = json.loads(text)
        conn.execute(
            "INSERT INTO o VALUES (?,?,?,?,?,?,?)",
            (str(i), "designed", "x", 2.5, 21, json.dumps(doc["entry"]), text),
        )
        conn.commit()
    elapsed = time.perf_counter() - start
    conn.close()
    return len(bundles) / elapsed


def run_to_completion(app: App, password: str) -> tuple[list[str], float]:
    """Runner passes until idle, the steps each machine waits for (line clearance, material
    loaded) signed between passes as the site's operator and pharmacist would (not timed: the
    figure is the runner's). Returns the batches completed and the runner's seconds."""
    completed: list[str] = []
    run_s = 0.0
    while True:
        start = time.perf_counter()
        completed += app.runner.run_until_idle().batches_completed
        run_s += time.perf_counter() - start
        with app.uow() as uow:
            waiting = [
                b.id
                for b in app.production.batches(uow, status="in_progress")
                if b.handed_over_at is None and app.production.steps_before_start(uow, b)
            ]
        if not waiting:
            return completed, run_s
        for batch_id in waiting:
            complete_record(app, batch_id, password, before_start=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny run (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.orders = 3
    with tempfile.TemporaryDirectory() as tmp:
        clock = ManualClock()
        app = build_app(Settings(data_dir=Path(tmp) / "data"), clock=clock)
        seed(app, "bench-password-1")
        rng = random.Random(1)
        today = clock.now().date()
        bundles = [prescription_bundle(rng, today=today, days=3) for _ in range(args.orders)]
        # the demo clinician: every order belongs to a point-of-care site, here the user's own
        with app.uow() as uow:
            user = app.users.by_username(uow, "clinician")
            assert user is not None
            actor = actor_of(user, uow.session)
        start = time.perf_counter()
        for bundle in bundles:
            with app.uow() as uow:
                app.orders.submit(uow, actor, bundle)
        intake = args.orders / (time.perf_counter() - start)
        raw = raw_baseline(bundles, Path(tmp) / "raw.db")
        completed, run_s = run_to_completion(app, "bench-password-1")
        made = len(completed)
        with app.uow() as uow:
            tablets = [app.production.get(uow, b).units_made or 0 for b in completed]
        result = {
            "orders": args.orders,
            "prescriptions_per_s": round(intake, 1),
            "raw_prescriptions_per_s": round(raw, 1),
            "ratio": round(intake / raw, 3),
            "batches": made,
            "batches_per_s": round(made / run_s, 2),
            "tablets_per_batch": round(sum(tablets) / max(1, len(tablets)), 1),
        }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
