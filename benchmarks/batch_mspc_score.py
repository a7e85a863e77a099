"""How fast a batch-evolution (multiway PCA) model scores runs along their trajectory.

Prints JSON: `fit_s` (fitting on `--batches` runs of `--points` grid points × 6 variables,
leave-one-out SPE limits included, scipy already imported); `runs_per_s` of
`BatchModel.score_many` (complete runs in, T² and SPE at every grid point out, each point
scored online with the future filled by zero deviations); a numpy baseline in the same run
that builds each filled vector and projects it
(`naive_runs_per_s`: K matrix products per run, what the cumulative-sum form avoids) and their
ratio; and `monitor_p50_us` / `monitor_p99_us`, the latency of scoring one running batch that
has reached half of its grid (what the service does when a grid point passes).

    .venv/bin/python benchmarks/batch_mspc_score.py [--runs 2000] [--points 100] [--json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from nearfab.monitoring.logic.batch_mspc import BatchModel

VARIABLES = 6


def simulate(rng: np.random.Generator, n: int, points: int) -> np.ndarray:
    """n runs: 3 latent batch-to-batch factors along smooth trajectories, plus noise."""
    tk = np.linspace(0.0, 1.0, points)
    shapes = np.random.default_rng(0).standard_normal((3, VARIABLES))
    mu = np.outer(tk, np.arange(1, VARIABLES + 1)) * 10.0
    factors = np.stack([np.outer(tk ** (a + 1), shapes[a]) for a in range(3)])
    t = rng.standard_normal((n, 3))
    return (
        mu
        + np.einsum("na,akj->nkj", t, factors)
        + 0.3 * rng.standard_normal((n, points, VARIABLES))
    )


def naive(model: BatchModel, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each grid point: fill the future with zeros, project, residual of that block."""
    n, K, J = Y.shape
    Z = model.scaled(Y)
    P, lam = model.loadings, model.score_variances
    t2, spe = np.empty((n, K)), np.empty((n, K))
    for k in range(K):
        filled = np.zeros((n, K, J))
        filled[:, : k + 1] = Z[:, : k + 1]
        T = filled.reshape(n, -1) @ P
        E = Z[:, k] - (T @ P.T).reshape(n, K, J)[:, k]
        t2[:, k] = np.sum(T * T / lam, axis=1)
        spe[:, k] = np.sum(E * E, axis=1)
    return t2, spe


def best(repeats: int, run: Callable[[], object]) -> float:
    out = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        out = min(out, time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (the test suite's)")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.points, args.batches, args.repeats = 50, 20, 10, 1
    rng = np.random.default_rng(1)
    names = [f"v{j}" for j in range(VARIABLES)]
    grid = np.linspace(0.0, 96.0, args.points)
    import scipy.stats  # noqa: F401  (the limits import it lazily: not part of the fit)

    start = time.perf_counter()
    model = BatchModel.fit(simulate(rng, args.batches, args.points), grid, names, components=3)
    fit_s = time.perf_counter() - start
    Y = simulate(rng, args.runs, args.points)
    fast = model.score_many(Y)
    slow = naive(model, Y)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)  # the same figures
    t_fast = best(args.repeats, lambda: model.score_many(Y))
    t_slow = best(args.repeats, lambda: naive(model, Y))
    running = Y[0].copy()
    running[args.points // 2 :] = np.nan
    for _ in range(20):
        model.monitor(running)
    calls = 200 if args.smoke else 2000
    times = np.empty(calls)
    for i in range(calls):
        s = time.perf_counter_ns()
        model.monitor(running)
        times[i] = (time.perf_counter_ns() - s) / 1000.0
    figures = {
        "runs": args.runs,
        "grid_points": args.points,
        "variables": VARIABLES,
        "fit_s": round(fit_s, 4),
        "runs_per_s": round(args.runs / t_fast, 1),
        "naive_runs_per_s": round(args.runs / t_slow, 1),
        "ratio": round(t_slow / t_fast, 2),
        "monitor_p50_us": round(float(np.percentile(times, 50)), 1),
        "monitor_p99_us": round(float(np.percentile(times, 99)), 1),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>18}: {value}")


if __name__ == "__main__":
    main()
