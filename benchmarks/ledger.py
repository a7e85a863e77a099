"""Custody ledger throughput: signed appends and chain verification per second, through the
real service (`CustodyLedger.append_many`, `CustodyLedger.verify`) on a SQLite file.

Prints JSON. `append_per_s`: entries canonicalised, hashed, signed (Ed25519, one signature per
block of 256 entries and per call: `append_many`) and inserted, one transaction (and commit)
per 1,000 entries (--entries of them); `baseline_append_each_signed_per_s`: the same with
every entry signed (`block=1`, the format before issue 18 item 8); `append_single_per_s`:
the one-entry-per-call `append` used by most custody steps.

Verification runs on a ledger of --verify-entries entries (default 10 x --entries, over three
sites' chains): `verify_per_s`, the full `verify-ledger` check from the database (hash links,
columns against the payload, the signature at each key segment's end, anchors, every custody
event has its entry); `verify_all_signatures_per_s`, the same with every signature checked;
`check_in_memory_per_s`, the chain check alone over the same rows already read.

Raw baselines in the same run: a bare Ed25519 sign loop (`baseline_sign_per_s`), plain inserts
of the same rows without hashing or signing (`baseline_insert_per_s`), the driver's own cursor
reading every row and column of the verified ledger without checking it
(`baseline_read_per_s`), and a bare SHA-256 over the very bytes each entry's hash covers,
held in memory (`baseline_hash_per_s`). `verify_vs_read` and `verify_vs_read_and_hash` (against
1 / (1/read + 1/hash): reading every row and hashing it, nothing else) are the ratios. The
verify figures are medians of --repeat interleaved runs, as wall-clock rates (`*_per_s`) and as
rates of this process's own CPU time (`*_cpu_per_s`, less disturbed when other processes share
the machine).

    python benchmarks/ledger.py --json [--entries 20000] [--verify-entries 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--single", type=int, default=2_000, help="entries for append()")
    parser.add_argument(
        "--verify-entries",
        type=int,
        default=None,
        help="entries in the ledger that is verified (default: 10 x --entries)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each verify figure")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n = args.entries
    verify_n = max(args.verify_entries or 10 * n, n + min(args.single, n))

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from sqlalchemy import delete, insert, select, text

    from nearfab.bootstrap import build_app
    from nearfab.common.clock import ManualClock
    from nearfab.config import Settings
    from nearfab.custody.enums import LedgerKind
    from nearfab.custody.models import LedgerEntry

    bodies = [
        {"type": "ObjectEvent", "epcList": [f"https://id.gs1.org/01/09506000134352/21/S{i:011d}"],
         "action": "OBSERVE", "bizStep": "dispensing", "disposition": "dispensed"}
        for i in range(n)
    ]  # fmt: skip
    items = [(LedgerKind.EPCIS, f"r{i}", body) for i, body in enumerate(bodies)]

    # raw baseline: signing alone
    key = Ed25519PrivateKey.generate()
    digests = [hashlib.sha256(str(i).encode()).digest() for i in range(n)]
    t = time.perf_counter()
    for d in digests:
        key.sign(d)
    baseline_sign = n / (time.perf_counter() - t)

    tmp = Path(tempfile.mkdtemp(prefix="nearfab-ledger-"))
    app = build_app(Settings(data_dir=tmp / "data"), clock=ManualClock())
    ledger = app.custody_chain.ledger
    site_id, other_id, third_id = "site_bench", "site_other", "site_third"
    with app.engine.begin() as conn:  # two sites, nothing else: the ledger alone is measured
        for sid, code in ((site_id, "B1"), (other_id, "B2"), (third_id, "B3")):
            conn.execute(
                text(
                    "INSERT INTO sites (id, row_version, code, name, kind, status, created_at) "
                    "VALUES (:id, 1, :code, :code, 'clinic', 'active', :t)"
                ),
                {"id": sid, "code": code, "t": app.clock.now()},
            )
    batch = 1000

    # the append path, timed
    t = time.perf_counter()
    for start in range(0, n, batch):
        with app.uow() as uow:
            ledger.append_many(uow, site_id, items[start : start + batch])
            uow.commit()
    append = n / (time.perf_counter() - t)

    # same-run baseline: the same batches with every entry signed (block=1, the old format),
    # on a third site's chain
    t = time.perf_counter()
    for start in range(0, n, batch):
        with app.uow() as uow:
            ledger.append_many(uow, third_id, items[start : start + batch], block=1)
            uow.commit()
    append_each_signed = n / (time.perf_counter() - t)
    with app.engine.begin() as conn:  # verification below reads the block-signed format
        conn.execute(delete(LedgerEntry).where(LedgerEntry.site_id == third_id))

    # one entry per call (the custody steps' path), on another site's chain
    single = min(args.single, n)
    t = time.perf_counter()
    for start in range(0, single, batch):
        with app.uow() as uow:
            for kind, ref, body in items[start : min(start + batch, single)]:
                ledger.append(uow, other_id, kind, ref, body)
            uow.commit()
    append_single = single / (time.perf_counter() - t)

    # baseline: the same rows inserted plainly, same batches and commits (then removed)
    with app.engine.connect() as conn:
        rows = [
            dict(r._mapping)
            for r in conn.execute(
                select(LedgerEntry.__table__).where(LedgerEntry.site_id == site_id)
            )
        ]
    for r in rows:
        del r["id"]
        r["seq"] += 10_000_000
    t = time.perf_counter()
    for start in range(0, n, batch):
        with app.uow() as uow:
            uow.session.execute(insert(LedgerEntry), rows[start : start + batch])
            uow.commit()
    baseline_insert = n / (time.perf_counter() - t)
    with app.engine.begin() as conn:
        conn.execute(delete(LedgerEntry).where(LedgerEntry.seq > 10_000_000))
        if app.engine.dialect.name == "sqlite":
            conn.execute(text("ANALYZE"))

    # the ledger that is verified: topped up (untimed, same `append_many`) to --verify-entries
    # entries over the three sites' chains, so one verification takes a few seconds
    have = n + single
    chains = (site_id, other_id, third_id)
    turn = 0
    while have < verify_n:
        take = min(5000, verify_n - have)
        chunk = [(LedgerKind.EPCIS, f"v{have + i}", bodies[(have + i) % n]) for i in range(take)]
        with app.uow() as uow:
            ledger.append_many(uow, chains[turn % 3], chunk)
            uow.commit()
        have, turn = have + take, turn + 1
    if app.engine.dialect.name == "sqlite":
        with app.engine.begin() as conn:
            conn.execute(text("ANALYZE"))

    from nearfab.custody.logic.ledger import STREAM_COLUMNS, ChainChecker

    def read_rows() -> int:
        """Raw baseline: the driver's own cursor reading every row, every column, in
        (site, seq) order, no checks, 500 rows a fetch like verification on SQLite (fewer
        rows a fetch read faster: they stay in the CPU's cache)."""
        with app.engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute(
                "SELECT id, site_id, seq, kind, ref, payload, prev_hash, entry_hash, key_id,"
                " signature FROM custody_ledger ORDER BY site_id, seq"
            )
            total = 0
            while part := cursor.fetchmany(500):
                total += len(part)
            cursor.close()
        return total

    # what verification hashes, held in memory: the bare SHA-256 baseline and the check alone
    with app.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(
            f"SELECT site_id, {', '.join(STREAM_COLUMNS[:-1])}, NULL FROM custody_ledger"
            " ORDER BY site_id, seq"
        )
        held = cursor.fetchall()
        cursor.close()
    hashed = [f"{r[7]}\n{r[6]}".encode() for r in held]
    per_site: dict[str, list[tuple[object, ...]]] = {}
    for r in held:
        per_site.setdefault(r[0], []).append(tuple(r[1:]))
    del held

    def bare_hash() -> int:
        sha256 = hashlib.sha256
        for b in hashed:
            sha256(b).hexdigest()
        return len(hashed)

    def check_alone() -> int:
        checker = ChainChecker(lambda *_: True, fetch_signature=lambda _id: "")
        for site, rows in per_site.items():
            for start in range(0, len(rows), 5000):
                checker.feed(site, rows[start : start + 5000])
        checker.close()
        return checker.entries

    def verify_with(every: bool) -> Callable[[], int]:
        def run() -> int:
            with app.uow() as uow:
                report = ledger.verify(uow, all_signatures=every)
            assert report.ok, report.problems[:3]
            return report.entries

        return run

    # each measured --repeat times, interleaved (a busy machine slows them alike); the median
    # of the wall-clock rates and of the CPU-time rates (this process's own CPU seconds: less
    # disturbed by other processes on a shared machine) is reported
    measured = {
        "verify": verify_with(False),
        "verify_all_signatures": verify_with(True),
        "baseline_read": read_rows,
        "baseline_hash": bare_hash,
        "check_in_memory": check_alone,
    }
    wall: dict[str, list[float]] = {name: [] for name in measured}
    cpu: dict[str, list[float]] = {name: [] for name in measured}
    counts: dict[str, int] = {}
    for _ in range(args.repeat):
        for name, run in measured.items():
            w, c = time.perf_counter(), time.process_time()
            counts[name] = run()
            w, c = time.perf_counter() - w, time.process_time() - c
            wall[name].append(counts[name] / w)
            cpu[name].append(counts[name] / max(c, 1e-9))
    rate = {name: statistics.median(values) for name, values in wall.items()}
    cpu_rate = {name: statistics.median(values) for name, values in cpu.items()}
    app.engine.dispose()

    def floor(r: dict[str, float]) -> float:
        """Reading every row and hashing it, nothing else: 1 / (1/read + 1/hash)."""
        return 1 / (1 / r["baseline_read"] + 1 / r["baseline_hash"])

    out = {
        "entries": n,
        "verified_entries": counts["verify"],
        "append_per_s": round(append),
        "append_single_per_s": round(append_single),
        "baseline_append_each_signed_per_s": round(append_each_signed),
        "append_vs_each_signed": round(append / append_each_signed, 3),
        "baseline_sign_per_s": round(baseline_sign),
        "baseline_insert_per_s": round(baseline_insert),
        "append_vs_sign": round(append / baseline_sign, 3),
        "append_vs_insert": round(append / baseline_insert, 3),
        "verify_per_s": round(rate["verify"]),
        "verify_all_signatures_per_s": round(rate["verify_all_signatures"]),
        "baseline_read_per_s": round(rate["baseline_read"]),
        "baseline_hash_per_s": round(rate["baseline_hash"]),
        "check_in_memory_per_s": round(rate["check_in_memory"]),
        "verify_vs_read": round(rate["verify"] / rate["baseline_read"], 3),
        "verify_vs_read_and_hash": round(rate["verify"] / floor(rate), 3),
        "verify_cpu_per_s": round(cpu_rate["verify"]),
        "verify_all_signatures_cpu_per_s": round(cpu_rate["verify_all_signatures"]),
        "baseline_read_cpu_per_s": round(cpu_rate["baseline_read"]),
        "baseline_hash_cpu_per_s": round(cpu_rate["baseline_hash"]),
        "verify_cpu_vs_read": round(cpu_rate["verify"] / cpu_rate["baseline_read"], 3),
        "verify_cpu_vs_read_and_hash": round(cpu_rate["verify"] / floor(cpu_rate), 3),
        "repeats": args.repeat,
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
