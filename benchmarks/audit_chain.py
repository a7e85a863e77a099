"""Cost of the audit hash chain: audit rows appended per second with the chain (head-row lock,
canonical JSON, SHA-256, the keyed HMAC, head update) against the same inserts with the chain's
flush hooks replaced by a plain counter, in the same run, alternating rounds (medians of 5).
Also the cost of a signed checkpoint (`checkpoint_ms`: head lock, ledger heads, Ed25519, the
ledger entry) and of `verify_chain` over the rows written (`verify_rows_per_s`: hashes, MACs,
links, checkpoints).

Prints JSON per backend and rows-per-transaction: `chained_rows_per_s`, `raw_rows_per_s`,
`ratio`. SQLite always; PostgreSQL when `--postgres URL` is given.

    python benchmarks/audit_chain.py --json [--smoke] [--postgres postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(url: str, data_dir: Path, *, rounds: int = 5, scale: int = 1) -> list[dict[str, Any]]:
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    # the module itself (the package's `audit` name is the function of that name)
    chain = importlib.import_module("nearfab.identity.services.audit")
    from nearfab.bootstrap import build_app
    from nearfab.common.clock import ManualClock
    from nearfab.config import Settings
    from nearfab.identity import AuditEntry, audit, system_actor

    app = build_app(Settings(data_dir=data_dir, database_url=url), clock=ManualClock())
    actor = system_actor("bench")
    counter = itertools.count(-1, -1)

    def plain_numbering(session: Session, _ctx: Any, _inst: Any) -> None:
        for obj in session.new:
            if isinstance(obj, AuditEntry):
                obj.seq, obj.prev_hash, obj.row_hash = next(counter), "-", "-"

    def raw() -> None:
        event.remove(Session, "before_flush", chain._number_new_entries)
        event.remove(Session, "after_flush", chain._move_head_after_flush)
        event.listen(Session, "before_flush", plain_numbering)

    def chained() -> None:
        event.remove(Session, "before_flush", plain_numbering)
        event.listen(Session, "before_flush", chain._number_new_entries)
        event.listen(Session, "after_flush", chain._move_head_after_flush)

    def rate(per_tx: int, txs: int) -> float:
        start = time.perf_counter()
        for _ in range(txs):
            with app.uow() as uow:
                for i in range(per_tx):
                    audit(uow, actor, "create", "bench", "b", new={"i": i}, reason="bench")
                uow.commit()
        return per_tx * txs / (time.perf_counter() - start)

    out = []
    for per_tx, txs in ((1, max(1, 150 // scale)), (50, max(1, 8 // scale))):
        base, with_chain = [], []
        for _ in range(rounds):
            raw()
            base.append(rate(per_tx, txs))
            chained()
            with_chain.append(rate(per_tx, txs))
        b, c = statistics.median(base), statistics.median(with_chain)
        out.append(
            {
                "backend": app.engine.dialect.name,
                "rows_per_transaction": per_tx,
                "raw_rows_per_s": round(b),
                "chained_rows_per_s": round(c),
                "ratio": round(c / b, 2),
            }
        )
    # the rounds end with the chain's hooks back: a signed checkpoint's cost here; the whole
    # check on a fresh database of chained rows (the raw rounds' rows here have no chain)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        with app.uow() as uow:
            chain.take_checkpoint(uow)
            uow.commit()
        times.append((time.perf_counter() - start) * 1000)
    app.engine.dispose()
    fresh = _fresh(url)
    app = build_app(Settings(data_dir=data_dir / "verify", database_url=fresh), clock=ManualClock())
    n = max(200, 5000 // scale)
    with app.uow() as uow:
        for i in range(n):
            audit(uow, actor, "create", "bench", "b", new={"i": i}, reason="bench")
        uow.commit()
    with app.uow() as uow:
        chain.take_checkpoint(uow)
        uow.commit()
    with app.engine.connect() as conn:
        start = time.perf_counter()
        report = chain.verify_chain(conn)
        verify_s = time.perf_counter() - start
    assert report.ok and report.keyed, report.first_bad
    out.append(
        {
            "backend": app.engine.dialect.name,
            "checkpoint_ms": round(statistics.median(times), 2),
            "verify_rows": report.rows_checked,
            "verify_rows_per_s": round(report.rows_checked / verify_s),
        }
    )
    app.engine.dispose()
    _drop(fresh)
    return out


def _fresh(url: str) -> str:
    """Another empty database beside `url` (SQLite: a file beside it; PostgreSQL: a database
    named after it with `_v`, made now on the same server, dropped by `_drop`)."""
    if url.startswith("sqlite:///"):
        return url.replace(".db", "-verify.db")
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres".replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}_v" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}_v"')
    return f"{base}/{name}_v"


def _drop(url: str) -> None:
    if url.startswith("postgresql"):
        import psycopg

        base, name = url.rsplit("/", 1)
        with psycopg.connect(f"{base}/postgres".replace("+psycopg", ""), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--postgres", help="an empty PostgreSQL database URL to measure too")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (the test suite)")
    args = parser.parse_args()
    size = {"rounds": 1, "scale": 50} if args.smoke else {}
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(f"sqlite:///{tmp}/bench.db", Path(tmp) / "data", **size)
        if args.postgres:
            rows += measure(args.postgres, Path(tmp) / "data-pg", **size)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            if "checkpoint_ms" in r:
                print(
                    f"{r['backend']:10} checkpoint {r['checkpoint_ms']} ms; verify "
                    f"{r['verify_rows_per_s']} rows/s over {r['verify_rows']} rows"
                )
                continue
            print(
                f"{r['backend']:10} {r['rows_per_transaction']:>3} rows/tx: raw "
                f"{r['raw_rows_per_s']:>7} rows/s, chained {r['chained_rows_per_s']:>7} rows/s, "
                f"ratio {r['ratio']}"
            )


if __name__ == "__main__":
    main()
