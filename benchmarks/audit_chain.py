"""Cost of the audit hash chain: audit rows appended per second with the chain (head-row lock,
canonical JSON, SHA-256, head update) against the same inserts with the chain's flush hooks
replaced by a plain counter, in the same run, alternating rounds (medians of 5).

Prints JSON per backend and rows-per-transaction: `chained_rows_per_s`, `raw_rows_per_s`,
`ratio`. SQLite always; PostgreSQL when `--postgres URL` is given.

    python benchmarks/audit_chain.py --json [--postgres postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(url: str, data_dir: Path) -> list[dict[str, Any]]:
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    import nearfab.identity.services.audit as chain
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
    for per_tx, txs in ((1, 150), (50, 8)):
        base, with_chain = [], []
        for _ in range(5):
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
    app.engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--postgres", help="an empty PostgreSQL database URL to measure too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(f"sqlite:///{tmp}/bench.db", Path(tmp) / "data")
        if args.postgres:
            rows += measure(args.postgres, Path(tmp) / "data-pg")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(
                f"{r['backend']:10} {r['rows_per_transaction']:>3} rows/tx: raw "
                f"{r['raw_rows_per_s']:>7} rows/s, chained {r['chained_rows_per_s']:>7} rows/s, "
                f"ratio {r['ratio']}"
            )


if __name__ == "__main__":
    main()
