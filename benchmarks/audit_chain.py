"""Cost of the audit hash chain: rows/s appended with the chain (head lock + SHA-256 + head
update) vs the same inserts without it (listeners removed, seq from a counter), same run."""
import itertools, sys, time, shutil
from pathlib import Path
from sqlalchemy import event
from sqlalchemy.orm import Session
from nearfab.bootstrap import build_app
from nearfab.config import Settings
from nearfab.common.clock import ManualClock
from nearfab.identity import AuditEntry, audit, system_actor
import importlib; chain = importlib.import_module("nearfab.identity.services.audit")

url = sys.argv[1]
app = build_app(Settings(data_dir=Path("/tmp/acb/data"), database_url=url), clock=ManualClock())
actor = system_actor("bench")
counter = itertools.count(-1, -1)

def raw_numbering(session, ctx, inst):
    for o in session.new:
        if isinstance(o, AuditEntry):
            o.seq, o.prev_hash, o.row_hash = next(counter), "-", "-"

def run(per_tx, txs):
    t = time.perf_counter()
    for _ in range(txs):
        with app.uow() as uow:
            for i in range(per_tx):
                audit(uow, actor, "create", "bench", "b", new={"i": i, "v": 1.5}, reason="bench")
            uow.commit()
    return per_tx * txs / (time.perf_counter() - t)

import statistics
def without():
    event.remove(Session, "before_flush", chain._number_new_entries)
    event.remove(Session, "after_flush", chain._move_head_after_flush)
    event.listen(Session, "before_flush", raw_numbering)
def with_chain():
    event.remove(Session, "before_flush", raw_numbering)
    event.listen(Session, "before_flush", chain._number_new_entries)
    event.listen(Session, "after_flush", chain._move_head_after_flush)
for per_tx, txs in [(1, 150), (50, 8)]:
    base, chained = [], []
    for _ in range(5):
        without(); base.append(run(per_tx, txs))
        with_chain(); chained.append(run(per_tx, txs))
    b, c = statistics.median(base), statistics.median(chained)
    print(f"{app.engine.dialect.name:10} {per_tx:>3} rows/tx: without chain {b:8.0f} rows/s, chained {c:8.0f} rows/s, ratio {c/b:.2f} (medians of 5 alternating rounds)")
