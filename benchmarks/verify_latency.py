"""Verification at dispense under load: POST /api/v1/verify over HTTP from a second process,
against a database holding --units serialised packs (default 100,000; the issue's full run is
--units 1000000), with a bare endpoint (`GET /bench/ping`, same server, same auth-free
stack) measured the same way in the same run as the baseline.

The packs are spread as a real network holds them: over --batches released batches (default
5,000) made at every site that has a machine of the product's type, each with its own QP
release signature and its signed release entry in the custody ledger; every request scans a
pack of a batch picked at random, so the per-process caches (QP signatures: 10,000 entries,
signed ledger facts: 20,000) miss on the first scan of each batch in each server process, as
after a restart. `batches_scanned` says how many distinct batches a run touched. The copies
are built by bulk inserts from one batch made and released through the product
(`spread_batches`), their signatures recomputed over their own records; before the load, a
sample of the packs must verify `ok` through the API.

Two measurements per concurrency:

- *saturation* (closed loop): `clients` keep-alive connections, each sending its next request
  as soon as the previous answer arrives; gives `rps` (the most the server does) and its
  p50/p99, which at saturation are queueing time (p99 ≈ clients / rps).
- *latency at a given load* (open loop): requests sent at a fixed rate (`--load` × the
  verify saturation rps of the same run) over the same connections, each timed from when it
  was due, not when a connection came free (no coordinated omission); gives `p50_ms`/`p99_ms`
  at that load, for verify and for the bare endpoint at the same rate.

And first, without HTTP (`in_process`, `--in-process N`): N verifications called directly on
a freshly built app, each of a pack of a different batch (`cold`: the caches empty), then the
same N again (`warm`), with their SQL statements counted, against the pack's bare look-up by
GTIN and serial (`lookup_p50_ms`): where the time of a first scan of a batch goes; their CPU
time per verification (`cold_cpu_ms`, `warm_cpu_ms`: this thread's, steadier than the wall
clock on a shared machine); and N look-ups of a bearer token (`token_p50_ms`,
`token_statements`), which every API request makes before its route runs and the bare
endpoint does not; and the verification log's group commits for those 2 × N verifications
(`log_commits`, `log_rows_per_commit`: the writer's CPU is per commit). The statement counts
include the log writer's, which shares the engine.

The load generator is one asyncio process with pre-built request bytes (HTTP/1.1 keep-alive),
so it takes little of the two cores from the server. The server is uvicorn (h11; httptools
and uvloop when installed) with `--workers` processes sharing one socket. Each saturation run
also reads the server processes' CPU time (`cpu_ms_per_verify`, `cpu_ms_per_bare`,
`cpu_vs_baseline`): what a request costs the server, steadier than rps when other work shares
the machine.

    python benchmarks/verify_latency.py --json [--units 1000000] [--batches 5000]
        [--clients 16 64] [--workers 1 2] [--seconds 5] [--load 0.5] [--in-process 300]
        [--smoke] [--no-http]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import importlib.util
import json
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

START = datetime.fromisoformat("2026-01-05T08:00:00+00:00")  # the ManualClock's start


# --- the server ----------------------------------------------------------------------------
def _web(data_dir: Path) -> Any:
    from nearfab.bootstrap import build_app
    from nearfab.common.clock import ManualClock
    from nearfab.config import Settings
    from nearfab.web.server import create_web_app

    app = build_app(Settings(data_dir=data_dir), clock=ManualClock(START))
    web = create_web_app(app)

    @web.get("/bench/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    return app, web


def _uvicorn_config(web: Any) -> Any:
    import uvicorn

    extra: dict[str, Any] = {}
    if importlib.util.find_spec("httptools"):
        extra["http"] = "httptools"
    if importlib.util.find_spec("uvloop"):
        extra["loop"] = "uvloop"
    return uvicorn.Config(
        web, log_level="warning", access_log=False, lifespan="off", backlog=4096, **extra
    )


def _serve(data_dir: Path, sock: socket.socket, ready: Any) -> None:
    """One server worker process (spawned), serving on the shared socket."""
    import uvicorn

    app, web = _web(data_dir)
    server = uvicorn.Server(_uvicorn_config(web))
    threading.Thread(target=lambda: (time.sleep(0.5), ready.put(True)), daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        app.custody.flush_verification_log()


# --- the data: packs spread over thousands of released batches at several sites --------------
def _site_machines(app: Any, batch_id: str) -> list[tuple[str, str]]:
    """(site, machine) of every machine of the template batch's machine type: the sites that
    can make this product."""
    from sqlalchemy import select

    from nearfab.network.models import Machine
    from nearfab.production import BatchRecord

    with app.uow() as uow:
        template = uow.session.get(BatchRecord, batch_id)
        kind = uow.session.get(Machine, template.machine_id).machine_type
        return sorted(
            (site, machine)
            for machine, site in uow.session.execute(
                select(Machine.id, Machine.site_id).where(Machine.machine_type == kind)
            )
        )


def spread_batches(app: Any, batch_id: str, n: int, units: int) -> list[str]:
    """`n` released batches and `units` packs spread round-robin over them, built from one
    batch made and released through the product, by bulk inserts, spread over the sites and
    machines of its type, as a real network holds them: for each batch its job, batch record,
    release review and QP signature (bound to its own record: record hash and signature hash
    recomputed), its packs, and the signed `release` entry of the custody ledger that a
    verification checks each pack against (written through `CustodyLedger.append_many`, one
    chain per site, the body `CustodyService._record_disposition` writes). The template's
    manual steps and deviations are not copied, so the copies' signed content has none. A
    sample is checked with the product's own signature and integrity checks. Returns one scan
    per batch (its first pack)."""
    from sqlalchemy import insert, select

    from nearfab.custody import SerialUnit, make_identifier
    from nearfab.custody.enums import LedgerKind
    from nearfab.custody.services.signedfacts import pack_facts, release_ref
    from nearfab.identity import Signature
    from nearfab.identity.logic import record_hash
    from nearfab.identity.services.signatures import hash_of
    from nearfab.production import BatchRecord
    from nearfab.quality.models import ReleaseReview
    from nearfab.scheduling.models import Job

    places = _site_machines(app, batch_id)
    with app.uow() as uow:
        batch = uow.session.get(BatchRecord, batch_id)
        review = app.quality.review_for(uow, batch_id)
        signed = app.quality._signed_content(uow, batch, review, review.decision, review.reason)
        unit = app.custody.units_of_batch(uow, batch_id)[0]

        def row(obj: Any) -> dict[str, Any]:
            return {c.key: getattr(obj, c.key) for c in obj.__mapper__.column_attrs}

        job_row = row(uow.session.get(Job, batch.job_id))
        batch_row, review_row, unit_row = row(batch), row(review), row(unit)
        sig_row = row(uow.session.get(Signature, review.signature_id))
    content = {k: v for k, v in signed.items() if k != "record_steps"}
    content["deviations"] = []
    rng = random.Random(1)
    alphabet = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
    now = app.clock.now()
    jobs, records, reviews, sigs, packs = [], [], [], [], []
    releases: dict[str, list[tuple[Any, str, dict[str, Any]]]] = {}
    scans: list[str] = []
    per_batch = [units // n + (1 if i < units % n else 0) for i in range(n)]
    index = 0
    for i in range(n):
        site, machine = places[i % len(places)]
        b_id, number = f"bat_s{i:08d}", f"S{i:08d}"
        jobs.append({**job_row, "id": f"job_s{i:08d}", "site_id": site, "machine_id": machine})
        record = {**batch_row, "id": b_id, "batch_number": number, "job_id": jobs[-1]["id"],
                  "site_id": site, "machine_id": machine}  # fmt: skip
        records.append(record)
        sig = Signature(**{**sig_row, "id": f"sig_s{i:08d}", "record_id": b_id})
        sig.record_hash = record_hash({**content, "batch": BatchRecord(**record).content()})
        sig.signature_hash = hash_of(sig)
        sigs.append(row(sig))
        reviews.append({**review_row, "id": f"rev_s{i:08d}", "batch_id": b_id,
                        "site_id": site, "signature_id": sig.id})  # fmt: skip
        mine = []
        for k in range(per_batch[i]):
            serial = "".join(rng.choice(alphabet) for _ in range(12))
            mine.append(
                {
                    **unit_row,
                    "id": f"unit_s{index:09d}",
                    "row_version": 1,
                    "batch_id": b_id,
                    "pack_index": 1 + k,
                    "serial": serial,
                    "batch_number": number,
                    "status": "released",
                    "created_at": now,
                }
            )
            index += 1
        packs += mine
        if mine:
            ident = make_identifier(unit_row["gtin"], mine[0]["serial"], number, unit.expiry)
            scans.append("]d2" + ident.datamatrix_data())
        facts = [pack_facts(SerialUnit(**u)) for u in mine]
        body = {
            "batch_id": b_id,
            "batch_number": number,
            "decision": review_row["decision"],
            "decided_by": review_row["decided_by"],
            "signature_id": sig.id,
            "signature_hash": sig.signature_hash,
            "signed_record_hash": sig.record_hash,
            "record_hash": review_row["record_hash"],
            "units": [f["serial"] for f in facts],
            "packs": facts,
        }
        releases.setdefault(site, []).append((LedgerKind.RELEASE, release_ref(b_id), body))
    with app.engine.begin() as conn:
        for model, rows in ((Job, jobs), (BatchRecord, records), (Signature, sigs),
                            (ReleaseReview, reviews), (SerialUnit, packs)):  # fmt: skip
            for k in range(0, len(rows), 2000):
                conn.execute(insert(model), rows[k : k + 2000])
    ledger = app.custody.ledger
    assert ledger is not None, "no custody ledger: verification would refuse every pack"
    with app.uow() as uow:
        for site, items in sorted(releases.items()):
            for k in range(0, len(items), 1000):
                ledger.append_many(uow, site, items[k : k + 1000])
        uow.commit()
    with app.uow() as uow:  # the product's own checks accept the copies
        for i in range(0, n, max(1, n // 10)):
            b_id = f"bat_s{i:08d}"
            review = uow.session.scalar(select(ReleaseReview).where(ReleaseReview.batch_id == b_id))
            assert app.quality.signature_valid(uow, review) is True, b_id
            pack = uow.session.scalar(select(SerialUnit).where(SerialUnit.batch_id == b_id))
            if pack is not None:
                problem = app.custody.integrity_problem(uow, pack)
                assert problem is None, (b_id, problem)
    return scans


# --- where the time goes: verifications in-process, cold and warm --------------------------
def in_process(data_dir: Path, scans: list[str], n: int) -> dict[str, Any]:
    """`n` verifications called directly (no HTTP), each of a pack of a different batch, on a
    freshly built app (the caches empty, as a server process after a restart): `cold`; then
    the same `n` again: `warm`. SQL statements are counted per verification. The baseline is
    the pack's own look-up by GTIN and serial in a unit of work (what any answer costs)."""
    from sqlalchemy import event, select
    from tests import flow_helpers as fh

    from nearfab.custody import SerialUnit, parse_scan

    app, _ = _web(data_dir)
    actor = fh.actor(app, "pharmacist")
    statements = [0]

    def count(*_args: Any) -> None:
        statements[0] += 1

    event.listen(app.engine, "before_cursor_execute", count)
    picked = random.Random(5).sample(scans, min(n, len(scans)))

    def timed(scan: str) -> tuple[float, int]:
        before, t = statements[0], time.perf_counter()
        with app.uow() as uow:
            answer = app.custody.verify(uow, actor, scan=scan)
        elapsed = time.perf_counter() - t
        assert answer.status.value == "ok", answer
        return elapsed, statements[0] - before

    def cpu_ms(run: Any) -> float:
        """CPU milliseconds of this thread per verification over the whole run: what the
        wall-clock p50 says on an idle machine, steadier on a shared one (the group-commit
        log writer's thread is not counted)."""
        t = time.thread_time()
        run()
        return round((time.thread_time() - t) * 1000 / max(1, len(picked)), 3)

    def lookup(scan: str) -> float:
        ident = parse_scan(scan)
        t = time.perf_counter()
        with app.uow() as uow:
            uow.session.scalar(
                select(SerialUnit).where(
                    SerialUnit.gtin == ident.gtin, SerialUnit.serial == ident.serial
                )
            )
        return time.perf_counter() - t

    with app.uow() as uow:
        token, _user = app.users.issue_token(uow, "pharmacist", fh.TEST_PASSWORD)

    def resolve() -> tuple[float, int]:
        """What every API request does before its route: the actor behind the bearer token."""
        before, t = statements[0], time.perf_counter()
        with app.uow() as uow:
            app.users.actor_for_token(uow, token, kind="api")
        return time.perf_counter() - t, statements[0] - before

    cold: list[tuple[float, int]] = []
    warm: list[tuple[float, int]] = []
    # the verification log's commits: on its writer thread, and the flush's at the end (counted
    # from the engine, so that an older tree's writer is measured the same way)
    log_commits = [0]
    flushing = [False]

    def committed(_conn: Any) -> None:
        if flushing[0] or threading.current_thread().name == "nearfab-verification-log":
            log_commits[0] += 1

    event.listen(app.engine, "commit", committed)
    cold_cpu = cpu_ms(lambda: cold.extend(timed(s) for s in picked))
    warm_cpu = cpu_ms(lambda: warm.extend(timed(s) for s in picked))
    flushing[0] = True
    app.custody.flush_verification_log()
    flushing[0] = False
    event.remove(app.engine, "commit", committed)
    base = [lookup(s) for s in picked]
    tokens = [resolve() for _ in picked]
    app.custody.flush_verification_log()
    app.engine.dispose()

    def ms(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 2)

    out: dict[str, Any] = {"verifications": 2 * len(picked)}
    for name, runs in (("cold", cold), ("warm", warm)):
        times = [t for t, _ in runs]
        out[f"{name}_p50_ms"], out[f"{name}_p99_ms"] = ms(times, 0.5), ms(times, 0.99)
        out[f"{name}_statements"] = round(sum(c for _, c in runs) / len(runs), 2)
    out["cold_cpu_ms"], out["warm_cpu_ms"] = cold_cpu, warm_cpu
    out["lookup_p50_ms"] = ms(base, 0.5)
    out["token_p50_ms"] = ms([t for t, _ in tokens], 0.5)
    out["token_statements"] = round(sum(c for _, c in tokens) / max(1, len(tokens)), 2)
    out["cold_vs_lookup"] = round(out["cold_p50_ms"] / max(out["lookup_p50_ms"], 1e-6), 1)
    # the group-commit log writer's transactions for these verifications (one after another
    # on one thread): its CPU is per commit, so rows per commit is what its wait buys
    out["log_commits"] = log_commits[0]
    out["log_rows_per_commit"] = round(2 * len(picked) / max(1, log_commits[0]), 1)
    return out


# --- the load generator (its own process, asyncio) -----------------------------------------
def _request(method: str, path: str, token: str, body: bytes | None) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {token}",
    ]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


def _summary(
    latencies: list[float], elapsed: float, sent: set[bytes], statuses: list[int]
) -> dict[str, Any]:
    """`rps` counts answered requests; `errors` the answers that were not 200 (by status):
    a run with errors is reported, not hidden."""
    latencies.sort()
    errors: dict[str, int] = {}
    for status in statuses:
        if status != 200:
            errors[str(status)] = errors.get(str(status), 0) + 1
    return {
        "errors": errors,
        "requests": len(latencies),
        # distinct requests (for verify: distinct batches, one pack of each)
        "distinct": len(sent),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 2),
    }


async def _closed(port: int, requests: list[bytes], clients: int, seconds: float) -> Any:
    latencies: list[float] = []
    sent: set[bytes] = set()
    statuses: list[int] = []
    stop = time.perf_counter() + seconds

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                request = rng.choice(requests)
                sent.add(request)
                t = time.perf_counter()
                status = await _exchange(reader, writer, request)
                latencies.append(time.perf_counter() - t)
                statuses.append(status)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return _summary(latencies, time.perf_counter() - start, sent, statuses)


async def _open(port: int, requests: list[bytes], clients: int, seconds: float, rate: float) -> Any:
    """Requests due at a fixed rate; each waits for a free connection, timed from when due."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(clients):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    rng = random.Random(7)
    latencies: list[float] = []
    statuses: list[int] = []
    sent: set[bytes] = set()

    async def one(due: float, request: bytes) -> None:
        conn = await pool.get()
        try:
            statuses.append(await _exchange(*conn, request))
        finally:
            pool.put_nowait(conn)
        latencies.append(time.perf_counter() - due)

    start = time.perf_counter()
    total = max(1, int(rate * seconds))  # a tiny run on a busy machine still sends one
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        request = rng.choice(requests)
        sent.add(request)
        tasks.append(asyncio.create_task(one(due, request)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    result = _summary(latencies, elapsed, sent, statuses)
    result["offered_rps"] = round(rate, 1)
    return result


def _load(port: int, requests: list[bytes], plan: list[tuple[Any, ...]], out: Any) -> None:
    results = []
    for mode, *args in plan:
        runner = _closed if mode == "closed" else _open
        results.append(asyncio.run(runner(port, requests, *args)))
    out.put(results)


def _run_load(port: int, requests: list[bytes], plan: list[tuple[Any, ...]]) -> Any:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load, args=(port, requests, plan, queue))
    proc.start()
    while True:  # a load process that dies must not leave the benchmark waiting for ever
        try:
            result = queue.get(timeout=5)
            break
        except Exception:
            if not proc.is_alive():
                raise RuntimeError(f"load generator exited with {proc.exitcode}") from None
    proc.join()
    return result


def _cpu_seconds(procs: list[Any]) -> float | None:
    """CPU time (user + system, every thread) the server processes used so far, from
    /proc (Linux); None elsewhere. Per request, it is what a request costs the server
    whatever else the machine runs: the load generator is a process of its own."""
    total = 0.0
    try:
        tick = float(os.sysconf("SC_CLK_TCK"))
        for proc in procs:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    except (OSError, ValueError, IndexError):
        return None
    return total


def _measured(
    procs: list[Any], port: int, requests: list[bytes], clients: int, seconds: float
) -> tuple[Any, float | None]:
    """A saturation run's answer and the server CPU milliseconds per answered request."""
    before = _cpu_seconds(procs)
    (result,) = _run_load(port, requests, [("closed", clients, seconds)])
    after = _cpu_seconds(procs)
    if before is None or after is None or not result["requests"]:
        return result, None
    return result, round((after - before) * 1000 / result["requests"], 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument(
        "--batches", type=int, default=5_000, help="released batches the packs spread over"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--load", type=float, default=0.5, help="open-loop rate / saturation")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--in-process", type=int, default=300, help="verifications timed without HTTP (0: none)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run (tests)")
    parser.add_argument(
        "--no-http", action="store_true", help="only the in-process figures (no server, no load)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.units, args.batches, args.clients, args.workers = 60, 6, [2], [1]
        args.seconds, args.in_process = 0.3, 3

    from sqlalchemy import func, select, text
    from tests import flow_helpers as fh

    from nearfab.custody.services.releasecheck import SIGNATURE_CACHE_SIZE
    from nearfab.custody.services.signedfacts import _CACHE_SIZE as _FACTS_CACHE_SIZE
    from nearfab.demo import seed
    from nearfab.identity import AuditEntry

    tmp = Path(tempfile.mkdtemp(prefix="nearfab-verify-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # no database left behind
    data_dir = tmp / "data"
    app, _ = _web(data_dir)
    seed(app, fh.TEST_PASSWORD)
    batch_id = fh.make_batch(app)
    fh.release(app, batch_id)
    t0 = time.perf_counter()
    batches = max(1, min(args.batches, args.units))
    scans = spread_batches(app, batch_id, batches, args.units)
    units_per_batch = args.units / batches
    if app.engine.dialect.name == "sqlite":
        with app.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    load_s = time.perf_counter() - t0
    sites = len({site for site, _ in _site_machines(app, batch_id)})
    measured = in_process(data_dir, scans, args.in_process) if args.in_process else None
    with app.uow() as uow:
        before = uow.session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "verify")
        )

    results: dict[str, Any] = {
        "units": args.units,
        "batches": batches,
        "sites": sites,
        "units_per_batch": round(units_per_batch, 1),
        "signature_cache_size": SIGNATURE_CACHE_SIZE,
        "signed_facts_cache_size": _FACTS_CACHE_SIZE,
        "load_s": round(load_s, 1),
        "in_process": measured,
        "runs": [],
    }
    ctx = multiprocessing.get_context("spawn")
    prechecked = 0  # verifications made before the load, to check the packs verify
    for workers in [] if args.no_http else args.workers:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(4096)
        port = sock.getsockname()[1]
        ready = ctx.Queue()
        procs = [ctx.Process(target=_serve, args=(data_dir, sock, ready)) for _ in range(workers)]
        for proc in procs:
            proc.start()
        try:
            for _ in procs:
                ready.get(timeout=120)
            import httpx

            for _ in range(100):
                try:
                    token = httpx.post(
                        f"http://127.0.0.1:{port}/api/v1/auth/token",
                        json={"username": "pharmacist", "password": fh.TEST_PASSWORD},
                    ).json()["access_token"]
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            verify = [
                _request("POST", "/api/v1/verify", token, json.dumps({"scan": s}).encode())
                for s in scans
            ]
            ping = [_request("GET", "/bench/ping", token, None)]
            # the packs verify as good ones (status ok), so the load measures the path that
            # matters: signature and signed-facts checks that pass (answered 200 either way)
            answers = [
                httpx.post(
                    f"http://127.0.0.1:{port}/api/v1/verify",
                    json={"scan": s},
                    headers={"Authorization": f"Bearer {token}"},
                ).json()
                for s in scans[:: max(1, len(scans) // 20)]
            ]
            bad = [a for a in answers if a.get("status") != "ok"]
            assert not bad, bad[:3]
            prechecked += len(answers)
            for clients in args.clients:
                base_sat, base_cpu = _measured(procs, port, ping, clients, args.seconds)
                sat, cpu = _measured(procs, port, verify, clients, args.seconds)
                rate = max(1.0, sat["rps"] * args.load)
                (base_open,) = _run_load(port, ping, [("open", clients, args.seconds, rate)])
                (at_load,) = _run_load(port, verify, [("open", clients, args.seconds, rate)])
                results["runs"].append(
                    {
                        "workers": workers,
                        "clients": clients,
                        "rps": sat["rps"],
                        "saturated_p50_ms": sat["p50_ms"],
                        "saturated_p99_ms": sat["p99_ms"],
                        "baseline_rps": base_sat["rps"],
                        "baseline_saturated_p99_ms": base_sat["p99_ms"],
                        "rps_vs_baseline": round(sat["rps"] / base_sat["rps"], 3),
                        # server CPU per request at saturation: on a machine shared with other
                        # work the steadier comparison (bare / verify: the rps ratio a machine
                        # given to the server alone would show while its CPU is the limit)
                        "cpu_ms_per_verify": cpu,
                        "cpu_ms_per_bare": base_cpu,
                        "cpu_vs_baseline": round(base_cpu / cpu, 3) if cpu and base_cpu else None,
                        "open_loop_rps": at_load["offered_rps"],
                        "p50_ms": at_load["p50_ms"],
                        "p99_ms": at_load["p99_ms"],
                        "baseline_open_loop_p99_ms": base_open["p99_ms"],
                        "requests": sat["requests"] + at_load["requests"],
                        "errors": sat["errors"],
                        "errors_open_loop": at_load["errors"],
                        "baseline_errors": {**base_sat["errors"], **base_open["errors"]},
                        "batches_scanned": sat["distinct"],
                        "batches_scanned_open_loop": at_load["distinct"],
                    }
                )
        finally:  # a failed run leaves no server behind (nor a caller waiting on its pipes)
            for proc in procs:
                proc.terminate()  # SIGTERM: uvicorn shuts down, the worker flushes its log
            for proc in procs:
                proc.join(timeout=30)
            sock.close()
    # every verification is logged: the group-commit writers lose nothing once flushed
    with app.uow() as uow:
        logged = uow.session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "verify")
        )
    results["verifications"] = sum(
        r["requests"] - sum(r["errors"].values()) - sum(r["errors_open_loop"].values())
        for r in results["runs"]
    )
    results["verifications_prechecked"] = prechecked
    results["verifications_logged"] = int(logged or 0) - int(before or 0) - prechecked
    print(json.dumps(results, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
