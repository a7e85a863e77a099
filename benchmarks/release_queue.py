"""The QP's release queue with N batches waiting: SQL statements and wall time of the QP's
worklist (`worklist_view`: audit trails to review, batches to certify) and of the /release
page's read (`pending_view` and the release checks of each row, as `release_page` builds it),
against a raw baseline in the same run: one bare SELECT of the waiting batches.

The batches are made through the product (prescription, plan, machine, steps signed, audit
trail reviewed: `tests/flow_helpers.make_batch`), on the seeded demo network, so each one's
checks meet what a real one has (sign-offs, machine steps, audit rows). Sizes grow in one
database: the first size's batches stay for the next.

    python benchmarks/release_queue.py --json [--sizes 1,10,50] [--repeat 5] [--smoke]
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_TRANSACTION = ("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT")


@contextmanager
def _counted(engine: Any) -> Iterator[list[str]]:
    """The SQL statements this thread sends (transaction control left out), as
    tests/custody/test_statement_counts.py counts them."""
    from sqlalchemy import event

    statements: list[str] = []
    caller = threading.get_ident()

    def count(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if threading.get_ident() == caller and not sql.lstrip().upper().startswith(_TRANSACTION):
            statements.append(sql)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _measure(
    app: Any, call: Callable[[Any, Any], Any], repeat: int, setup: Callable[[Any], Any]
) -> tuple[int, float]:
    """Statements of one `call(uow, setup(uow))` (`setup` neither counted nor timed; each call
    in its own unit of work, so nothing is cached in the session between calls) and the median
    wall time over `repeat` calls, in ms."""
    with app.uow() as uow:
        given = setup(uow)
        with _counted(app.engine) as statements:
            call(uow, given)
    times = []
    for _ in range(repeat):
        with app.uow() as uow:
            given = setup(uow)
            started = time.perf_counter()
            call(uow, given)
            times.append((time.perf_counter() - started) * 1000)
    return len(statements), round(statistics.median(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,10,50", help="waiting batches, growing")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny run (tests)")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    if args.smoke:
        sizes, args.repeat = [1, 2], 1

    from sqlalchemy import select
    from tests import flow_helpers as fh

    from nearfab.bootstrap import build_app
    from nearfab.common.clock import ManualClock
    from nearfab.config import Settings
    from nearfab.demo import seed
    from nearfab.production import BatchRecord
    from nearfab.readmodels import pending_view
    from nearfab.web.pages import _with_blockers
    from nearfab.worklist import worklist_view

    shm = Path("/dev/shm")  # in memory where there is one: the fsyncs of making the batches
    tmp = Path(tempfile.mkdtemp(prefix="nearfab-release-queue-", dir=shm if shm.is_dir() else None))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # no database left behind
    app = build_app(Settings(data_dir=tmp / "data"), clock=ManualClock())
    seed(app, fh.TEST_PASSWORD)
    qp = fh.actor(app, "qp")

    def nothing(_uow: Any) -> None:
        return None

    def worklist(uow: Any, _: Any) -> None:
        worklist_view(app, uow, qp)

    def release_page(uow: Any, _: Any) -> None:
        _with_blockers(app, uow, qp, pending_view(app, uow, qp))

    def release_checks(uow: Any, queue: list[dict[str, Any]]) -> None:
        _with_blockers(app, uow, qp, queue)  # the rows' release checks alone

    def baseline(uow: Any, _: Any) -> None:  # the waiting batches' rows, nothing checked
        uow.session.execute(
            select(BatchRecord.__table__).where(BatchRecord.status == "completed")
        ).all()

    measured = (
        ("worklist", worklist, nothing),
        ("release_page", release_page, nothing),
        ("release_checks", release_checks, lambda uow: pending_view(app, uow, qp)),
        ("baseline", baseline, nothing),
    )
    runs = []
    made = 0
    for size in sizes:
        while made < size:
            fh.make_batch(app)  # steps signed, audit trail reviewed: ready to certify
            made += 1
        with app.uow() as uow:
            waiting = len(app.quality.pending(uow))
            certify = len(worklist_view(app, uow, qp)["certify"])
        run: dict[str, Any] = {"waiting": waiting, "certify": certify}
        for name, call, setup in measured:
            statements, ms = _measure(app, call, args.repeat, setup)
            run[f"{name}_statements"], run[f"{name}_ms"] = statements, ms
        run["worklist_vs_baseline"] = round(run["worklist_ms"] / run["baseline_ms"], 1)
        run["release_page_vs_baseline"] = round(run["release_page_ms"] / run["baseline_ms"], 1)
        runs.append(run)
    last = runs[-1]
    out = {
        "runs": runs,
        "waiting": last["waiting"],
        "worklist_statements": last["worklist_statements"],
        "worklist_ms": last["worklist_ms"],
        "release_page_statements": last["release_page_statements"],
        "release_page_ms": last["release_page_ms"],
        "release_checks_statements": last["release_checks_statements"],
        "release_checks_ms": last["release_checks_ms"],
        "baseline_ms": last["baseline_ms"],
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print("waiting | worklist stmts, ms | /release stmts, ms | its checks stmts, ms | baseline ms")
    for r in runs:
        print(
            f"{r['waiting']:7d} | {r['worklist_statements']:5d} {r['worklist_ms']:8.1f} | "
            f"{r['release_page_statements']:5d} {r['release_page_ms']:8.1f} | "
            f"{r['release_checks_statements']:5d} {r['release_checks_ms']:8.1f} | "
            f"{r['baseline_ms']:.2f}"
        )


if __name__ == "__main__":
    main()
