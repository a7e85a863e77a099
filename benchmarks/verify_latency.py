"""Verification at dispense under load: POST /api/v1/verify over HTTP from a second process,
against a database holding --units serialised packs (default 100,000; the issue's full run is
--units 1000000). Prints p50_ms, p99_ms, rps per concurrency, and baseline_rps of a bare
endpoint on the same server in the same run.

    python benchmarks/verify_latency.py --json [--units 1000000] [--clients 16 64]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
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


def _load(url: str, token: str, scans: list[str], clients: int, seconds: float, out: Any) -> None:
    """The load generator (runs in its own process): `clients` threads, each one connection."""
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        local = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
            while time.perf_counter() < stop:
                body = {"scan": rng.choice(scans)} if scans else None
                t = time.perf_counter()
                r = c.post("/api/v1/verify", json=body) if scans else c.get("/bench/ping")
                local.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    out.put(
        {
            "requests": len(latencies),
            "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        }
    )


def _run_load(url: str, token: str, scans: list[str], clients: int, seconds: float) -> Any:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load, args=(url, token, scans, clients, seconds, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import uvicorn
    from sqlalchemy import insert, text
    from tests import flow_helpers as fh

    from nearfab.api.custody import router
    from nearfab.bootstrap import build_app
    from nearfab.common.clock import ManualClock
    from nearfab.config import Settings
    from nearfab.custody import SerialUnit, make_identifier
    from nearfab.demo import seed
    from nearfab.web.server import create_web_app

    tmp = Path(tempfile.mkdtemp(prefix="nearfab-verify-"))
    app = build_app(Settings(data_dir=tmp / "data"), clock=ManualClock())
    seed(app, fh.TEST_PASSWORD)
    batch_id = fh.make_batch(app)
    fh.release(app, batch_id)
    with app.uow() as uow:
        template = app.custody.units_of_batch(uow, batch_id)[0]
        uow.session.expunge(template)
    rng = random.Random(1)
    alphabet = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
    scans: list[str] = []
    t0 = time.perf_counter()
    now = datetime.now().astimezone()
    with app.engine.begin() as conn:
        chunk = []
        for i in range(args.units):
            serial = "".join(rng.choice(alphabet) for _ in range(12))
            chunk.append(
                {"id": f"unit_b{i:09d}", "row_version": 1, "batch_id": template.batch_id,
                 "order_id": template.order_id, "patient_id": template.patient_id,
                 "pack_index": 1000 + i, "tablets": 30, "gtin": template.gtin, "serial": serial,
                 "batch_number": template.batch_number, "expiry": template.expiry,
                 "status": "released", "created_at": now}
            )  # fmt: skip
            if i % 997 == 0:
                ident = make_identifier(
                    template.gtin, serial, template.batch_number, template.expiry
                )
                scans.append("]d2" + ident.datamatrix_data())
            if len(chunk) == 5000:
                conn.execute(insert(SerialUnit), chunk)
                chunk = []
        if chunk:
            conn.execute(insert(SerialUnit), chunk)
    if app.engine.dialect.name == "sqlite":
        with app.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    load_s = time.perf_counter() - t0

    web = create_web_app(app)
    web.include_router(router)

    @web.get("/bench/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(web, log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    import httpx

    token = httpx.post(
        f"{url}/api/v1/auth/token",
        json={"username": "pharmacist", "password": fh.TEST_PASSWORD},
    ).json()["access_token"]
    results: dict[str, Any] = {"units": args.units, "load_s": round(load_s, 1), "runs": []}
    for clients in args.clients:
        baseline = _run_load(url, token, [], clients, args.seconds)
        verify = _run_load(url, token, scans, clients, args.seconds)
        results["runs"].append(
            {
                "clients": clients,
                **verify,
                "baseline_rps": baseline["rps"],
                "baseline_p99_ms": baseline["p99_ms"],
                "rps_vs_baseline": round(verify["rps"] / baseline["rps"], 3),
            }
        )
    server.should_exit = True
    thread.join(timeout=10)
    # every verification is logged: the group-commit writer loses nothing once flushed
    from sqlalchemy import func, select

    from nearfab.identity import AuditEntry

    app.custody.flush_verification_log()
    with app.uow() as uow:
        logged = uow.session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "verify")
        )
    results["verifications"] = sum(r["requests"] for r in results["runs"])
    results["verifications_logged"] = logged
    print(json.dumps(results, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
