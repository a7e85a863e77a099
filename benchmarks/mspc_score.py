"""How fast a PCA monitoring model scores samples (Hotelling T² and SPE).

Prints JSON: batched `samples_per_s` through `PcaModel.score` (52 variables, 9 components, raw
unscaled samples in, T² and SPE out), a numpy-only raw baseline measured in the same run
(already-autoscaled samples, the two bare matmuls Z·W and Z·(I − PPᵀ) and the row sums of
squares, in one piece), their ratio, and the single-sample latency of `score_one` (p50/p99).
Also the same for the dynamic model with EWMA (lags 2, 29 components: 156 lagged columns),
batched through `monitor` and one sample at a time through `OnlineMonitor.update`.

    .venv/bin/python benchmarks/mspc_score.py [--rows 200000] [--repeats 5] [--json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from nearfab.monitoring.logic.mspc import PcaModel

VARIABLES = 52


def synthetic(n: int, seed: int) -> np.ndarray:
    """52 correlated variables (12 latent factors + noise) at different scales and offsets."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).standard_normal((12, VARIABLES))
    scales = np.geomspace(0.01, 1000.0, VARIABLES)
    X: np.ndarray = rng.standard_normal((n, 12)) @ mixing + rng.standard_normal((n, VARIABLES))
    return 50.0 + X * scales


def best_rate(rows: int, repeats: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return rows / best


def latency_us(calls: int, run: Callable[[int], object]) -> tuple[float, float]:
    for i in range(200):  # warm up
        run(i)
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter_ns()
        run(i)
        times[i] = time.perf_counter_ns() - start
    return float(np.percentile(times, 50) / 1e3), float(np.percentile(times, 99) / 1e3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--train", type=int, default=2000, help="training samples")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny run (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.repeats, args.calls, args.train = 1000, 1, 300, 400

    train = synthetic(args.train, seed=1)
    X = synthetic(args.rows, seed=2)
    model = PcaModel.fit(train, 9)
    rate = best_rate(args.rows, args.repeats, lambda: model.score(X))

    # raw baseline: what numpy alone does for the same two statistics
    a = model.components
    W = model.loadings / np.sqrt(model.eigenvalues[:a])
    R = np.eye(VARIABLES) - model.loadings @ model.loadings.T
    Z = (X - model.mean) / model.scale

    def raw() -> tuple[np.ndarray, np.ndarray]:
        T = Z @ W
        E = Z @ R
        return np.einsum("ij,ij->i", T, T), np.einsum("ij,ij->i", E, E)

    raw_rate = best_rate(args.rows, args.repeats, raw)
    t2, spe = model.score(X)
    rt2, rspe = raw()
    assert np.allclose(t2, rt2, rtol=1e-9) and np.allclose(spe, rspe, rtol=1e-9)

    rows = X[: args.calls]
    p50, p99 = latency_us(args.calls, lambda i: model.score_one(rows[i % len(rows)]))

    dyn = PcaModel.fit(train, 29, lags=2, ewma_lambda=0.2)
    dyn_rate = best_rate(args.rows, max(1, args.repeats // 2), lambda: dyn.monitor(X))
    online = dyn.online()
    dp50, dp99 = latency_us(args.calls, lambda i: online.update(rows[i % len(rows)]))

    result = {
        "variables": VARIABLES,
        "components": a,
        "rows": args.rows,
        "samples_per_s": round(rate),
        "raw_samples_per_s": round(raw_rate),
        "ratio": round(rate / raw_rate, 3),
        "p50_us": round(p50, 1),
        "p99_us": round(p99, 1),
        "dynamic_ewma_samples_per_s": round(dyn_rate),
        "dynamic_online_p50_us": round(dp50, 1),
        "dynamic_online_p99_us": round(dp99, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")


if __name__ == "__main__":
    main()
