"""The ingest path: machine messages in, checked, deduplicated, stored in batches.

One `ingest` call is one transaction: readings, message identities, the machines' cursors, gaps,
dead letters, and whatever the point observers (SPC/MSPC scoring, wired in bootstrap) write.
Either all of it commits or none of it, so a caller that acknowledges messages only after
`ingest` returns (the MQTT subscriber does) never loses one, and a redelivery is recognised."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from nearfab.common.errors import NotFound
from nearfab.network import NetworkService
from nearfab.telemetry.logic import (
    RUN_END_STATES,
    Message,
    MessageKind,
    MessageRejected,
    MetricSpec,
    judge_sequence,
    parse_message,
    parse_topic,
)
from nearfab.telemetry.models import (
    DeadLetter,
    TelemetryGap,
    TelemetryMachine,
    TelemetryRun,
    TelemetrySeries,
    messages,
    readings,
)
from nearfab.uow import UnitOfWork

log = logging.getLogger(__name__)

# (metric, ts_us, value): what observers see of each stored point, grouped by machine and run
PointRow = tuple[str, int, float]
PointObserver = Callable[[UnitOfWork, str, str, Sequence[PointRow]], None]
RunEndObserver = Callable[[UnitOfWork, str, str, str], None]  # machine, run, end state


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, UTC)


@dataclass
class IngestReport:
    accepted: int = 0
    points: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    gaps: int = 0
    runs_ended: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: IngestReport) -> None:
        self.accepted += other.accepted
        self.points += other.points
        self.duplicates += other.duplicates
        self.dead_letters += other.dead_letters
        self.gaps += other.gaps
        self.runs_ended += other.runs_ended


@dataclass
class _Cursor:
    """In-memory copy of a machine's TelemetryMachine row, for the hot path."""

    site_id: str
    bd_seq: int | None
    high_water: int | None
    declared: dict[str, MetricSpec] | None
    open_gaps: dict[int, set[int]] = field(default_factory=dict)  # gap id -> missing seqs


class TelemetryIngestor:
    """Turns machine messages into stored readings. Thread-safe; one per database is enough."""

    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        network: NetworkService,
        *,
        batch_points: int = 5_000,
    ) -> None:
        self._uow = uow_factory
        self._network = network
        self._point_observers: list[PointObserver] = []
        self._run_end_observers: list[RunEndObserver] = []
        self._lock = threading.RLock()
        self._pending: list[tuple[str, bytes]] = []
        self._pending_points = 0
        self._batch_points = batch_points
        self._cursors: dict[str, _Cursor] = {}
        # (machine, run) -> metric -> series id, dropped when the run ends
        self._series_by_run: dict[tuple[str, str], dict[str, int]] = {}
        self.totals = IngestReport()

    def on_points(self, observer: PointObserver) -> None:
        self._point_observers.append(observer)

    def on_run_end(self, observer: RunEndObserver) -> None:
        self._run_end_observers.append(observer)

    # --- buffered entry (in-process bus) -----------------------------------------------------

    def submit(self, topic: str, payload: bytes) -> None:
        """Queue a message; it is stored at the next flush (at once for birth, state, death)."""
        with self._lock:
            self._pending.append((topic, payload))
            self._pending_points += payload.count(b'"name"')
            if self._pending_points >= self._batch_points or not topic.endswith("/data"):
                self.flush()

    def flush(self) -> IngestReport:
        with self._lock:
            batch, self._pending, self._pending_points = self._pending, [], 0
            return self.ingest(batch) if batch else IngestReport()

    # --- one transaction -------------------------------------------------------------------

    def ingest(self, batch: Sequence[tuple[str, bytes]]) -> IngestReport:
        """Store a batch of (topic, payload) messages in one transaction."""
        with self._lock:
            try:
                with self._uow() as uow:
                    report = self._ingest(uow, batch)
                    uow.commit()
            except Exception:
                # the caches may hold what was rolled back: start again from the database
                self._cursors.clear()
                self._series_by_run.clear()
                raise
            self.totals.add(report)
            return report

    def _ingest(self, uow: UnitOfWork, batch: Sequence[tuple[str, bytes]]) -> IngestReport:
        report = IngestReport()
        now = uow.clock.now()
        rows: list[tuple[int, int, float]] = []
        observed: dict[tuple[str, str], list[PointRow]] = {}
        taken: dict[tuple[str, int, int], str] = {}  # this batch's message identities
        touched: dict[str, Message] = {}
        run_points: dict[tuple[str, str], tuple[int, int, int]] = {}  # first, last, count
        ended: dict[tuple[str, str], Message] = {}
        session = uow.session
        for topic, payload in batch:
            digest = hashlib.blake2b(payload, digest_size=12).hexdigest()
            machine_id: str | None = None
            try:
                where = parse_topic(topic)
                machine_id = where.machine
                cursor = self._cursor(uow, where.site, where.machine)
                msg = parse_message(topic, payload, cursor.declared)
                if msg.seq is None:  # death: no sequence, it is the broker speaking for it
                    if cursor.bd_seq is not None and msg.bd_seq == cursor.bd_seq:
                        touched[machine_id] = msg
                    report.accepted += 1
                    continue
                key = (machine_id, msg.bd_seq, msg.seq)
                seen = taken.get(key)
                if seen is None and self._maybe_seen(cursor, msg):
                    seen = session.execute(
                        select(messages.c.digest).where(
                            messages.c.machine_id == machine_id,
                            messages.c.bd_seq == msg.bd_seq,
                            messages.c.seq == msg.seq,
                        )
                    ).scalar()
                same_session = cursor.bd_seq == msg.bd_seq
                gap_id = self._gap_holding(cursor, msg.seq) if same_session else None
                verdict = judge_sequence(
                    msg.bd_seq,
                    msg.seq,
                    cursor.bd_seq,
                    cursor.high_water,
                    gap_id is not None,
                    digest,
                    seen,
                )
                if verdict.duplicate:
                    report.duplicates += 1
                    continue
                if not verdict.accept:
                    raise MessageRejected(verdict.reason or "refused", code="sequence")
            except MessageRejected as exc:
                report.dead_letters += 1
                session.add(
                    DeadLetter(
                        received_at=now,
                        topic=topic[:255],
                        machine_id=machine_id,
                        code=exc.code,
                        reason=exc.reason,
                        payload=payload[:4096].decode("utf-8", "replace"),
                    )
                )
                continue
            # accepted: move the cursor first, so the next message in this batch sees it
            taken[key] = digest
            report.accepted += 1
            if msg.topic.kind is MessageKind.BIRTH or not same_session:
                cursor.bd_seq = msg.bd_seq
                cursor.high_water = None
                cursor.open_gaps.clear()
                if msg.topic.kind is MessageKind.BIRTH:
                    cursor.declared = {m.name: m for m in msg.metrics}
            if gap_id is not None:
                missing = cursor.open_gaps[gap_id]
                missing.discard(msg.seq)
                self._update_gap(uow, gap_id, missing, now)
                if not missing:
                    del cursor.open_gaps[gap_id]
            elif verdict.gap is not None and cursor.high_water is not None:
                report.gaps += 1
                self._open_gap(uow, machine_id, cursor, msg, verdict.gap, now)
            if cursor.high_water is None or msg.seq > cursor.high_water:
                cursor.high_water = msg.seq
            touched[machine_id] = msg
            if msg.topic.kind is MessageKind.DATA and msg.points:
                run = msg.run or ""
                ids = self._series_by_run.setdefault((machine_id, run), {})
                seen_here = observed.setdefault((machine_id, run), [])
                for metric, ts_ms, value in msg.points:
                    series_id = ids.get(metric)
                    if series_id is None:
                        series_id = self._series_id(uow, machine_id, metric, run, cursor)
                        ids[metric] = series_id
                    ts_us = ts_ms * 1000
                    rows.append((series_id, ts_us, value))
                    seen_here.append((metric, ts_us, value))
                if run:
                    stamps = [p[1] for p in msg.points]
                    first, last = min(stamps), max(stamps)
                    prev = run_points.get((machine_id, run))
                    if prev is not None:
                        first, last = min(first, prev[0]), max(last, prev[1])
                    count = len(msg.points) + (prev[2] if prev else 0)
                    run_points[(machine_id, run)] = (first, last, count)
            elif msg.topic.kind is MessageKind.STATE and msg.run and msg.state in RUN_END_STATES:
                report.runs_ended.append((machine_id, msg.run))
                ended[(machine_id, msg.run)] = msg
        if taken:
            session.execute(
                messages.insert(),
                [
                    {"machine_id": m, "bd_seq": b, "seq": s, "digest": d}
                    for (m, b, s), d in taken.items()
                ],
            )
        if rows:
            # straight to the driver: building a dict per row costs more than the insert
            connection = session.connection()
            marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
            connection.exec_driver_sql(
                f"INSERT INTO {readings.name} (series_id, ts_us, value) "
                f"VALUES ({marker}, {marker}, {marker})",
                rows,
            )
            report.points = len(rows)
        self._save_cursors(uow, touched, now)
        self._save_runs(uow, run_points, ended)
        for observer in self._point_observers:
            for (machine_id, run), points in observed.items():
                if points:
                    observer(uow, machine_id, run, points)
        for (machine_id, run), msg in ended.items():
            end_state = msg.state.value if msg.state else "COMPLETE"
            for end_observer in self._run_end_observers:
                end_observer(uow, machine_id, run, end_state)
            self._series_by_run.pop((machine_id, run), None)
        return report

    # --- helpers -------------------------------------------------------------------------------

    def _cursor(self, uow: UnitOfWork, site: str, machine_id: str) -> _Cursor:
        cursor = self._cursors.get(machine_id)
        if cursor is not None:
            if cursor.site_id != site:
                raise MessageRejected(
                    f"machine {machine_id} belongs to site {cursor.site_id}, not {site}",
                    code="wrong_site",
                )
            return cursor
        try:
            machine = self._network.get_machine(uow, machine_id)
        except NotFound:
            raise MessageRejected(
                f"machine {machine_id!r} is not registered in the network", code="unknown_machine"
            ) from None
        if machine.site_id != site:
            raise MessageRejected(
                f"machine {machine_id} belongs to site {machine.site_id}, not {site}",
                code="wrong_site",
            )
        row = uow.session.get(TelemetryMachine, machine_id)
        if row is None:
            cursor = _Cursor(machine.site_id, None, None, None)
        else:
            declared = {
                name: MetricSpec(name, spec.get("unit", ""), spec.get("datatype", "Double"))
                for name, spec in (row.metrics or {}).items()
            }
            cursor = _Cursor(row.site_id, row.bd_seq, row.high_water, declared or None)
            gaps = uow.session.scalars(
                select(TelemetryGap).where(
                    TelemetryGap.machine_id == machine_id,
                    TelemetryGap.bd_seq == row.bd_seq,
                    TelemetryGap.closed_at.is_(None),
                )
            )
            cursor.open_gaps = {g.id: {int(s) for s in g.missing} for g in gaps}
        self._cursors[machine_id] = cursor
        return cursor

    @staticmethod
    def _maybe_seen(cursor: _Cursor, msg: Message) -> bool:
        """Only a message at or below the high-water mark (or from an old session) can be a
        redelivery: only then is the message table consulted."""
        assert msg.seq is not None
        if cursor.bd_seq is None:
            return False
        if msg.bd_seq != cursor.bd_seq:
            return msg.bd_seq < cursor.bd_seq
        return cursor.high_water is not None and msg.seq <= cursor.high_water

    @staticmethod
    def _gap_holding(cursor: _Cursor, seq: int) -> int | None:
        for gap_id, missing in cursor.open_gaps.items():
            if seq in missing:
                return gap_id
        return None

    def _open_gap(
        self,
        uow: UnitOfWork,
        machine_id: str,
        cursor: _Cursor,
        msg: Message,
        span: tuple[int, int],
        now: datetime,
    ) -> None:
        start, end = span
        gap = TelemetryGap(
            machine_id=machine_id,
            bd_seq=msg.bd_seq,
            from_seq=start,
            to_seq=end,
            missing=list(range(start, end + 1)),
            run=msg.run,
            opened_at=now,
            closed_at=None,
        )
        uow.session.add(gap)
        uow.session.flush()
        cursor.open_gaps[gap.id] = set(range(start, end + 1))
        log.warning("telemetry gap on %s: seq %d..%d missing", machine_id, start, end)

    @staticmethod
    def _update_gap(uow: UnitOfWork, gap_id: int, missing: set[int], now: datetime) -> None:
        gap = uow.session.get(TelemetryGap, gap_id)
        if gap is not None:
            gap.missing = sorted(missing)
            if not missing:
                gap.closed_at = now

    def _series_id(
        self, uow: UnitOfWork, machine_id: str, metric: str, run: str, cursor: _Cursor
    ) -> int:
        """The series of one metric of one machine's run, created at its first reading."""
        series = uow.session.scalar(
            select(TelemetrySeries).where(
                TelemetrySeries.machine_id == machine_id,
                TelemetrySeries.metric == metric,
                TelemetrySeries.run == run,
            )
        )
        if series is None:
            spec = (cursor.declared or {}).get(metric)
            series = TelemetrySeries(
                machine_id=machine_id, metric=metric, run=run, unit=spec.unit if spec else ""
            )
            uow.session.add(series)
            uow.session.flush()
        return series.id

    def _save_cursors(self, uow: UnitOfWork, touched: dict[str, Message], now: datetime) -> None:
        for machine_id, msg in touched.items():
            cursor = self._cursors[machine_id]
            row = uow.session.get(TelemetryMachine, machine_id)
            if row is None:
                row = TelemetryMachine(
                    machine_id=machine_id,
                    site_id=cursor.site_id,
                    bd_seq=msg.bd_seq,
                    high_water=None,
                    online=True,
                    state=None,
                    run=None,
                    firmware=None,
                    metrics={},
                    birth_at=None,
                    last_seen_at=None,
                )
                uow.session.add(row)
            row.bd_seq = cursor.bd_seq if cursor.bd_seq is not None else msg.bd_seq
            row.high_water = cursor.high_water
            row.last_seen_at = now
            kind = msg.topic.kind
            if kind is MessageKind.BIRTH:
                row.metrics = {
                    m.name: {"unit": m.unit, "datatype": m.datatype} for m in msg.metrics
                }
                row.firmware = msg.firmware
                row.birth_at = _ts(msg.ts_ms)
                row.online = True
            elif kind is MessageKind.DEATH:
                row.online = False
            else:
                row.online = True
            if kind is MessageKind.STATE and msg.state is not None:
                row.state = msg.state.value
                row.run = None if msg.state in RUN_END_STATES else msg.run

    def _save_runs(
        self,
        uow: UnitOfWork,
        run_points: dict[tuple[str, str], tuple[int, int, int]],
        ended: dict[tuple[str, str], Message],
    ) -> None:
        for key in set(run_points) | set(ended):
            machine_id, run = key
            row = uow.session.get(TelemetryRun, key)
            if row is None:
                row = TelemetryRun(
                    machine_id=machine_id,
                    run=run,
                    site_id=self._cursors[machine_id].site_id,
                    first_at=None,
                    last_at=None,
                    ended_at=None,
                    end_state=None,
                    points=0,
                )
                uow.session.add(row)
            span = run_points.get(key)
            if span is not None:
                first, last = _ts(span[0]), _ts(span[1])
                row.first_at = first if row.first_at is None else min(row.first_at, first)
                row.last_at = last if row.last_at is None else max(row.last_at, last)
                row.points = (row.points or 0) + span[2]
            msg = ended.get(key)
            if msg is not None:
                row.ended_at = _ts(msg.ts_ms)
                row.end_state = msg.state.value if msg.state else None
