"""The verification log: who verified which pack, with what answer, when, written through a
group-commit writer so a verification at dispense never waits for a commit.

A verification changes nothing, so its log row need not share a transaction with anything.
`VerificationLog.submit` queues the row (its time taken by the caller, on the platform clock);
one thread drains the queue, waits up to `interval_s` (20 ms) for more, or less once
`early_rows` are queued, and commits everything queued in one INSERT. On SQLite every commit
is an fsync behind the one writer lock, so one commit per batch instead of one per scan is
what keeps verification off that lock; and a commit costs the process about 1.4 ms of CPU
whether it holds one row or ten (the audit chain's head read and moved, the transaction), so
at a server's rate of a few hundred scans a second the wait decides most of what the log
costs a verification (docs/performance.md, "Seventh pass" and "Ninth pass": 4 ms gave about
one row a commit). `flush()` writes everything submitted before the call and returns once it
is committed; it runs on interpreter exit and on server shutdown. Rows that could not be
written stay queued and are retried (and `flush` raises)."""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from typing import Any

from sqlalchemy.engine import Engine

from nearfab.identity import append_audit_rows

log = logging.getLogger(__name__)

_LIVE: weakref.WeakSet[VerificationLog] = weakref.WeakSet()


class VerificationLog:
    def __init__(
        self, *, interval_s: float = 0.020, early_rows: int = 64, max_batch: int = 2000
    ) -> None:
        self.interval_s = interval_s
        # this many rows queued make a commit's worth: written without waiting longer
        self.early_rows = early_rows
        self.max_batch = max_batch
        self._engine: Engine | None = None
        self._pending: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        # held while rows are taken from the queue and written: `flush` waits for a batch
        # the thread is writing, then writes what is left itself
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self.written = 0
        _LIVE.add(self)

    def bind(self, engine: Engine) -> None:
        if self._engine is None:
            self._engine = engine
        elif self._engine is not engine:
            raise RuntimeError("a verification log writes to one database")

    def submit(self, engine: Engine, row: dict[str, Any]) -> None:
        """Queue one audit row (the columns of `AuditEntry`, `at` already set)."""
        self.bind(engine)
        with self._cond:
            self._pending.append(row)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="nearfab-verification-log", daemon=True
                )
                self._thread.start()
            queued = len(self._pending)
            # the writer waits for a first row, then for a commit's worth or its time: wake it
            # for those only (a wake-up per row would cost each verification a thread switch)
            if queued == 1 or queued == self.early_rows:
                self._cond.notify()

    @property
    def queued(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Commit every row submitted before this call; the number this call wrote."""
        written = 0
        while True:
            with self._write_lock:
                if not self._pending:
                    return written
                written += self._write_batch()

    def _run(self) -> None:
        idle_rounds = 0
        while True:
            with self._cond:
                if not self._pending:
                    self._cond.wait(timeout=1.0)
                if not self._pending:
                    idle_rounds += 1
                    if idle_rounds >= 5:  # idle: the next submit starts a new thread
                        self._thread = None
                        return
                    continue
                idle_rounds = 0
                # group commit: let the rows of concurrent verifications gather, for at most
                # `interval_s`, less once a commit's worth is queued; after a failure, the
                # whole back-off (however many rows wait)
                wait = self.interval_s * (1 + min(self._failures, 50) * 25)
                deadline = time.monotonic() + wait
                while self._failures or len(self._pending) < self.early_rows:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            try:
                with self._write_lock:
                    if self._pending:
                        self._write_batch()
            except Exception:  # pragma: no cover - logged and retried
                log.exception("writing the verification log failed; the rows stay queued")

    def _write_batch(self) -> int:
        """Write up to max_batch queued rows in one transaction (caller holds _write_lock).
        On failure the rows go back to the front of the queue."""
        batch: list[dict[str, Any]] = []
        while self._pending and len(batch) < self.max_batch:
            batch.append(self._pending.popleft())
        if not batch:
            return 0
        assert self._engine is not None
        try:
            with self._engine.begin() as conn:
                append_audit_rows(conn, batch)  # numbered and hash-chained like every row
        except Exception:
            self._failures += 1
            self._pending.extendleft(reversed(batch))
            raise
        self._failures = 0
        self.written += len(batch)
        return len(batch)


def flush_all() -> None:
    """Flush every live verification log (on interpreter exit, and on server shutdown)."""
    for vlog in list(_LIVE):
        try:
            vlog.flush()
        except Exception:  # pragma: no cover - nothing to do but say so
            log.exception("the verification log could not be flushed; %d rows lost", vlog.queued)


atexit.register(flush_all)
