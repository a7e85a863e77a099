"""Custody ledger throughput: signed appends and chain verification per second.

Prints JSON. `append_per_s`: entries hashed, signed (Ed25519) and inserted in one SQLite
transaction per batch; `append_sign_only_per_s`: hashing and signing alone; `verify_per_s`:
full check (hash links + the signature at each key segment's end), `verify_all_signatures_per_s`
(every signature), both from the database. Baselines in the same run: a bare SHA-256 over the
same payloads (`baseline_hash_per_s`) and plain inserts without hashing or signing
(`baseline_insert_per_s`).

    python benchmarks/ledger.py --json [--entries 20000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, text

from nearfab.custody.logic.ledger import GENESIS, Row, entry_hash, payload_of, verify_chain
from nearfab.db import make_engine
from nearfab.migrations import upgrade


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n = args.entries
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    bodies = [
        {"type": "ObjectEvent", "epcList": [f"https://id.gs1.org/01/09506000134352/21/S{i:011d}"],
         "action": "OBSERVE", "bizStep": "dispensing", "disposition": "dispensed"}
        for i in range(n)
    ]  # fmt: skip

    # baseline: hashing the payloads only
    payloads = [json.dumps(b, sort_keys=True) for b in bodies]
    t = time.perf_counter()
    for p in payloads:
        hashlib.sha256(p.encode()).hexdigest()
    baseline_hash = n / (time.perf_counter() - t)

    # hash + sign
    rows = []
    t = time.perf_counter()
    prev = GENESIS
    for i, body in enumerate(bodies, start=1):
        payload = payload_of(
            site_id="site_bench", seq=i, kind="epcis", ref=f"r{i}",
            recorded_at="2026-01-01T00:00:00.000Z", body=body,
        )  # fmt: skip
        digest = entry_hash(prev, payload)
        rows.append(
            {"site_id": "site_bench", "seq": i, "kind": "epcis", "ref": f"r{i}",
             "recorded_at": now, "payload": payload, "prev_hash": prev, "entry_hash": digest,
             "key_id": "lk_bench", "signature": key.sign(bytes.fromhex(digest)).hex()}
        )  # fmt: skip
        prev = digest
    sign_only = n / (time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(text("PRAGMA foreign_keys=OFF"))
            conn.execute(
                text(
                    "INSERT INTO sites (id, row_version, code, name, kind, status, created_at) "
                    "VALUES ('site_bench', 1, 'B', 'Bench', 'clinic', 'active', :t)"
                ),
                {"t": now},
            )
        from nearfab.custody.models import LedgerEntry

        plain = [dict(r, site_id="site_plain") for r in rows]
        t = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text("PRAGMA foreign_keys=OFF"))
            conn.execute(insert(LedgerEntry), plain)
        baseline_insert = n / (time.perf_counter() - t)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM custody_ledger"))

        t = time.perf_counter()
        prev = GENESIS
        batch = []
        with engine.begin() as conn:
            conn.execute(text("PRAGMA foreign_keys=OFF"))
            for i, body in enumerate(bodies, start=1):
                payload = payload_of(
                    site_id="site_bench", seq=i, kind="epcis", ref=f"r{i}",
                    recorded_at="2026-01-01T00:00:00.000Z", body=body,
                )  # fmt: skip
                digest = entry_hash(prev, payload)
                batch.append(
                    dict(rows[i - 1], payload=payload, prev_hash=prev, entry_hash=digest,
                         signature=key.sign(bytes.fromhex(digest)).hex())
                )  # fmt: skip
                prev = digest
                if len(batch) == 1000:
                    conn.execute(insert(LedgerEntry), batch)
                    batch = []
            if batch:
                conn.execute(insert(LedgerEntry), batch)
        append = n / (time.perf_counter() - t)

        def check(key_id: str, site_id: str, digest: str, signature: str) -> bool:
            try:
                public.verify(bytes.fromhex(signature), bytes.fromhex(digest))
            except Exception:
                return False
            return True

        def load() -> list[Row]:
            with engine.connect() as conn:
                return [
                    Row(*r)
                    for r in conn.execute(
                        text(
                            "SELECT id, site_id, seq, kind, ref, payload, prev_hash, entry_hash,"
                            " key_id, signature FROM custody_ledger ORDER BY site_id, seq"
                        )
                    )
                ]

        t = time.perf_counter()
        problems = verify_chain(load(), check, all_signatures=False)
        verify = n / (time.perf_counter() - t)
        assert not problems, problems[:3]
        t = time.perf_counter()
        problems = verify_chain(load(), check, all_signatures=True)
        verify_all = n / (time.perf_counter() - t)
        assert not problems
        engine.dispose()
    out = {
        "entries": n,
        "append_per_s": round(append),
        "append_sign_only_per_s": round(sign_only),
        "baseline_insert_per_s": round(baseline_insert),
        "verify_per_s": round(verify),
        "verify_all_signatures_per_s": round(verify_all),
        "baseline_hash_per_s": round(baseline_hash),
        "append_vs_insert": round(append / baseline_insert, 3),
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
