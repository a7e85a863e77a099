"""Custody ledger throughput: signed appends and chain verification per second, through the
real service (`CustodyLedger.append_many`, `CustodyLedger.verify`) on a SQLite file.

Prints JSON. `append_per_s`: entries canonicalised, hashed, signed (Ed25519, one signature per
block of 256 entries and per call: `append_many`) and inserted, one transaction (and commit)
per 1,000 entries; `baseline_append_each_signed_per_s`: the same with every entry signed
(`block=1`, the format before issue 18 item 8); `append_single_per_s`:
the one-entry-per-call `append` used by most custody steps; `verify_per_s`: the full
`verify-ledger` check from the database (hash links, columns against the payload, the
signature at each key segment's end, anchors, every custody event has its entry);
`verify_all_signatures_per_s`: the same with every signature checked; `check_in_memory_per_s`:
the chain check alone over the same rows already read (no database).

Raw baselines in the same run: a bare Ed25519 sign loop (`baseline_sign_per_s`), a bare
SHA-256 over the same payloads (`baseline_hash_per_s`), plain inserts of the same rows without
hashing or signing (`baseline_insert_per_s`), and reading the rows without checking them
(`baseline_read_per_s`).

    python benchmarks/ledger.py --json [--entries 20000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--single", type=int, default=2_000, help="entries for append()")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n = args.entries

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

    # raw baselines: signing alone, hashing alone
    key = Ed25519PrivateKey.generate()
    digests = [hashlib.sha256(str(i).encode()).digest() for i in range(n)]
    t = time.perf_counter()
    for d in digests:
        key.sign(d)
    baseline_sign = n / (time.perf_counter() - t)
    payloads = [json.dumps(b, sort_keys=True).encode() for b in bodies]
    t = time.perf_counter()
    for p in payloads:
        hashlib.sha256(p).hexdigest()
    baseline_hash = n / (time.perf_counter() - t)

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

    # baseline: reading the same rows with the driver's own cursor, no checks
    t = time.perf_counter()
    with app.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(
            "SELECT id, site_id, seq, kind, ref, payload, prev_hash, entry_hash, key_id,"
            " signature FROM custody_ledger ORDER BY site_id, seq"
        )
        total = 0
        while part := cursor.fetchmany(5000):
            total += len(part)
        cursor.close()
    baseline_read = total / (time.perf_counter() - t)

    # the chain check alone (ChainChecker over the same rows held in memory, no database)
    from nearfab.custody.logic.ledger import ChainChecker

    with app.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(
            "SELECT id, site_id, seq, kind, ref, payload, prev_hash, entry_hash, key_id,"
            " NULL FROM custody_ledger ORDER BY site_id, seq"
        )
        held = cursor.fetchall()
        cursor.close()
    checker = ChainChecker(lambda *_: True, fetch_signature=lambda _id: "")
    t = time.perf_counter()
    for start in range(0, len(held), 5000):
        checker.feed(held[start : start + 5000])
    checker.close()
    check_only = len(held) / (time.perf_counter() - t)

    t = time.perf_counter()
    with app.uow() as uow:
        report = ledger.verify(uow, all_signatures=False)
    verify = report.entries / (time.perf_counter() - t)
    assert report.ok, report.problems[:3]
    t = time.perf_counter()
    with app.uow() as uow:
        full = ledger.verify(uow, all_signatures=True)
    verify_all = full.entries / (time.perf_counter() - t)
    assert full.ok, full.problems[:3]
    app.engine.dispose()

    out = {
        "entries": n,
        "verified_entries": report.entries,
        "append_per_s": round(append),
        "append_single_per_s": round(append_single),
        "baseline_append_each_signed_per_s": round(append_each_signed),
        "append_vs_each_signed": round(append / append_each_signed, 3),
        "baseline_sign_per_s": round(baseline_sign),
        "baseline_insert_per_s": round(baseline_insert),
        "append_vs_sign": round(append / baseline_sign, 3),
        "append_vs_insert": round(append / baseline_insert, 3),
        "verify_per_s": round(verify),
        "verify_all_signatures_per_s": round(verify_all),
        "baseline_read_per_s": round(baseline_read),
        "check_in_memory_per_s": round(check_only),
        "baseline_hash_per_s": round(baseline_hash),
        "verify_vs_read": round(verify / baseline_read, 3),
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
