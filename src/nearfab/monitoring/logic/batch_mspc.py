"""Batch-evolution MSPC: multiway PCA on batch-wise unfolded trajectories.

A run that lasts hours or days is one observation: J variables followed over K points of a
common grid. Following Nomikos & MacGregor (1994, AIChE J 40:1361; 1995, Technometrics 37:41):

* **alignment** — each run's readings are interpolated linearly onto a common grid of K points
  of elapsed time since the run started (or of a monotone maturity variable, `clock=`), so that
  runs sampled at different instants line up; a grid point is *reached* once every variable has
  a reading at or after it;
* **unfolding and scaling** — the I released runs form an I × K × J array, unfolded batch-wise
  to I × (K·J) (time-major: column k·J + j); every column (one variable at one time point) is
  autoscaled with the training runs' mean and standard deviation, so the model monitors the
  deviation from the *average trajectory*;
* **PCA** on the unfolded, scaled matrix (SVD), A components;
* **online monitoring** of a running batch with the future filled by **zero deviations** (the
  default: the rest of the run is assumed to follow the average trajectory) or by **current
  deviations** (`fill="current"`: the present scaled deviation is assumed to persist). At grid
  point k the scores are t(k) = P'·z_filled(k); T²(k) = Σ t_a²/λ_a and SPE(k) is the squared
  residual of the K-th block only: SPE_k = ‖z_k − P_k·t(k)‖² (the instantaneous SPE of
  Nomikos & MacGregor). At the last grid point both fills are the complete-batch projection.

Limits at level `alpha`, at every grid point:

* T²: the F limit for a new batch, A(I²−1)/(I(I−A))·F_alpha(A, I−A) (Nomikos & MacGregor 1995;
  Tracy, Young & Mason 1992), one value for the whole run;
* SPE: Box's (1954) weighted χ² g·χ²_h with g = v/(2m) and h = 2m²/v, where m and v are the mean
  and variance of SPE_k over the training runs at grid point k. The reference SPE_k are
  *leave-one-out*: each training run is scored online (same fill) by the model fitted on the
  others. In-sample residuals of a model fitted on a few dozen runs are smaller than a new run's,
  and limits from them would alarm on healthy runs far more often than 1 − alpha (van Sprang,
  Ramaker, Westerhuis, Gurden & Smilde 2002, Chem Eng Sci 57:3979).

Scaling floor: a column whose training sd is below 10 % of that variable's median sd over the
grid (e.g. every run starts at the same set-point) is scaled by that 10 %, so a tiny deviation
where the runs never differed does not dominate the statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from nearfab.common.errors import ValidationFailed

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

FORMAT = "nearfab.mspc.batch_mpca"
FORMAT_VERSION = 1
MIN_BATCHES = 5
SCALE_FLOOR = 0.1  # share of the variable's median sd over the grid
SPE_WINDOW = 2  # SPE moments pooled over grid points k−2 … k+2

__all__ = [
    "MIN_BATCHES",
    "BatchModel",
    "BatchScores",
    "Fill",
    "align_run",
    "box_limit",
    "t2_limit",
    "time_grid",
]


class Fill(StrEnum):
    ZERO = "zero"  # the rest of the run follows the average trajectory
    CURRENT = "current"  # the current scaled deviation persists to the end


def t2_limit(components: int, batches: int, alpha: float) -> float:
    """A(I²−1)/(I(I−A))·F_alpha(A, I−A): T² limit for a new batch."""
    from scipy.stats import f  # lazy: scipy takes a second to import

    a, n = components, batches
    return float(a * (n * n - 1) / (n * (n - a)) * f.ppf(alpha, a, n - a))


def box_limit(mean: float, var: float, alpha: float) -> float:
    """g·χ²_h(alpha) with g = v/(2m), h = 2m²/v (Box 1954)."""
    from scipy.stats import chi2

    if not (mean > 0 and var > 0):
        return float(mean)
    g = var / (2.0 * mean)
    h = 2.0 * mean * mean / var
    return float(g * chi2.ppf(alpha, h))


def time_grid(duration: float, points: int) -> FloatArray:
    """K evenly spaced points from 0 to `duration` (elapsed time or maturity)."""
    if not duration > 0 or not math.isfinite(duration):
        raise ValidationFailed("the runs must last longer than zero", field="runs")
    if points < 2:
        raise ValidationFailed("a batch grid needs at least 2 points", field="grid_points")
    return np.linspace(0.0, float(duration), int(points))


def _monotone(clock: FloatArray) -> FloatArray:
    return np.maximum.accumulate(clock)


def align_run(
    run: Mapping[str, Sequence[tuple[float, float]]],
    variables: Sequence[str],
    grid: FloatArray,
    *,
    clock: str | None = None,
) -> FloatArray:
    """K × J values of one run on the grid: linear interpolation between readings, the first
    reading held before it, NaN past the last reading (not reached yet).

    `run` maps variable → (time, value) readings in time order, time measured from the start of
    the run. With `clock` naming a variable, the grid is in that variable's units instead (a
    maturity index: its running maximum is the run's progress)."""
    K, J = len(grid), len(variables)
    out = np.full((K, J), np.nan)
    if clock is not None:
        readings = run.get(clock) or []
        if not readings:
            return out
        ct = np.asarray([t for t, _ in readings], dtype=float)
        cv = _monotone(np.asarray([v for _, v in readings], dtype=float))
    for j, name in enumerate(variables):
        readings = run.get(name) or []
        if not readings:
            continue
        t = np.asarray([r[0] for r in readings], dtype=float)
        v = np.asarray([r[1] for r in readings], dtype=float)
        if clock is not None:
            t = np.interp(t, ct, cv, right=np.nan)
            keep = np.isfinite(t)
            t, v = t[keep], v[keep]
            if t.size == 0:
                continue
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        reached = grid <= t[-1]
        out[reached, j] = np.interp(grid[reached], t, v)
    return out


def reached(aligned: FloatArray) -> int:
    """How many leading grid points of an aligned run (K × J) have every variable."""
    ok = np.all(np.isfinite(aligned), axis=1)
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if bad.size else int(ok.size)


@dataclass(frozen=True)
class BatchScores:
    """T² and SPE of a run at each reached grid point, with the limits."""

    times: FloatArray  # grid times of the reached points
    t2: FloatArray
    spe: FloatArray
    t2_limit: float
    spe_limits: FloatArray
    spe_contributions: FloatArray  # K' × J: each variable's squared residual

    @property
    def t2_alarm(self) -> BoolArray:
        return self.t2 > self.t2_limit

    @property
    def spe_alarm(self) -> BoolArray:
        return self.spe > self.spe_limits

    @property
    def alarm(self) -> BoolArray:
        return self.t2_alarm | self.spe_alarm


def _pieces(
    X: FloatArray, components: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Mean, scale, loadings (KJ × A), score variances (A) and the full singular values of
    I × K × J training data."""
    n_runs, K, J = X.shape
    mean = X.mean(axis=0)
    sd = X.std(axis=0, ddof=1)
    med = np.median(sd, axis=0)  # per variable
    if np.any(~(med > 0)):
        flat = [j for j in range(J) if not med[j] > 0]
        raise ValidationFailed(
            f"variable(s) at position {flat} did not vary between the training runs",
            field="runs",
        )
    scale = np.maximum(sd, SCALE_FLOOR * med[None, :])
    Z = ((X - mean) / scale).reshape(n_runs, K * J)
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    P = vt[:components].T
    lam = s[:components] ** 2 / (n_runs - 1)
    return mean, scale, P, lam, s


def _online(
    Z: FloatArray, P: FloatArray, lam: FloatArray, fill: Fill
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """T² (N × K), SPE (N × K) and squared residuals (N × K × J) of scaled runs Z (N × K × J),
    each grid point k scored with the future filled."""
    _, K, J = Z.shape
    A = P.shape[1]
    Pb = P.reshape(K, J, A)
    T = np.cumsum(np.einsum("nkj,kja->nka", Z, Pb), axis=1)
    if fill is Fill.CURRENT:
        after = np.cumsum(Pb[::-1], axis=0)[::-1]  # Σ_{b ≥ k} P_b
        rest = np.concatenate([after[1:], np.zeros((1, J, A))], axis=0)  # Σ_{b > k}
        T = T + np.einsum("nkj,kja->nka", Z, rest)
    E = Z - np.einsum("nka,kja->nkj", T, Pb)
    E2 = E * E
    return np.einsum("nka,a->nk", T * T, 1.0 / lam), E2.sum(axis=2), E2


def _windowed_moments(ref: FloatArray, window: int) -> tuple[FloatArray, FloatArray]:
    """Mean and variance of the reference SPE at each grid point, pooled over the points
    within `window` of it (Nomikos & MacGregor 1995 pool neighbouring times the same way)."""
    K = ref.shape[1]
    mean, var = np.empty(K), np.empty(K)
    for k in range(K):
        block = ref[:, max(0, k - window) : k + window + 1]
        mean[k] = block.mean()
        var[k] = block.var(ddof=1)
    return mean, var


@dataclass(frozen=True)
class BatchModel:
    variables: tuple[str, ...]
    grid: FloatArray  # K
    mean: FloatArray  # K × J
    scale: FloatArray  # K × J
    loadings: FloatArray  # (K·J) × A, time-major
    score_variances: FloatArray  # A
    batches: int
    alpha: float
    fill: Fill
    t2_limit: float
    spe_mean: FloatArray  # K, leave-one-out reference
    spe_var: FloatArray  # K
    spe_limits: FloatArray  # K
    explained: float
    clock: str | None = None

    @property
    def components(self) -> int:
        return int(self.loadings.shape[1])

    @classmethod
    def fit(
        cls,
        X: npt.ArrayLike,
        grid: npt.ArrayLike,
        variables: Sequence[str],
        *,
        components: int | None = None,
        alpha: float = 0.99,
        fill: Fill | str = Fill.ZERO,
        explained: float = 0.75,
        clock: str | None = None,
        window: int = SPE_WINDOW,
    ) -> BatchModel:
        """Fit on released runs aligned to `grid`: X is I × K × J (run, grid point, variable)."""
        data = np.asarray(X, dtype=float)
        g = np.asarray(grid, dtype=float)
        if data.ndim != 3:
            raise ValidationFailed(
                "training data must be runs × grid points × variables", field="runs"
            )
        n_runs, K, J = data.shape
        if g.size != K or len(variables) != J:
            raise ValidationFailed(
                "training data do not match the grid and variables", field="runs"
            )
        if not np.all(np.isfinite(data)):
            raise ValidationFailed("a training run does not cover the whole grid", field="runs")
        flat = [v for j, v in enumerate(variables) if not np.any(np.ptp(data[:, :, j], axis=0) > 0)]
        if flat:
            raise ValidationFailed(
                f"{', '.join(flat)} did not vary between the training runs", field="runs"
            )
        if window < 0:
            raise ValidationFailed("window must be 0 or more grid points", field="window")
        if n_runs < MIN_BATCHES:
            raise ValidationFailed(
                f"{n_runs} runs; a batch-evolution model needs at least {MIN_BATCHES}", field="runs"
            )
        if not 0.5 < alpha < 1:
            raise ValidationFailed("alpha must be between 0.5 and 1 (e.g. 0.99)", field="alpha")
        try:
            fill = Fill(fill)
        except ValueError:
            raise ValidationFailed(
                f"fill must be zero or current, not {fill!r}", field="fill"
            ) from None
        most = min(n_runs - 2, K * J - 1)  # leave-one-out fits I−1 runs; F needs I−A ≥ 1
        mean, scale, P, lam, s = _pieces(data, max(1, min(most, components or 1)))
        share = s**2 / float(np.sum(s**2))
        if components is None:
            components = int(np.searchsorted(np.cumsum(share), explained) + 1)
            components = max(1, min(components, most, max(1, n_runs // 2)))
            mean, scale, P, lam, s = _pieces(data, components)
        elif not 0 < components <= most:
            raise ValidationFailed(
                f"components must be between 1 and {most} for {n_runs} runs", field="components"
            )
        # leave-one-out reference SPE along the run
        ref = np.empty((n_runs, K))
        for i in range(n_runs):
            rest = np.delete(data, i, axis=0)
            m_i, sc_i, P_i, lam_i, _ = _pieces(rest, components)
            z = ((data[i] - m_i) / sc_i)[None]
            _, spe_i, _ = _online(z, P_i, lam_i, fill)
            ref[i] = spe_i[0]
        spe_mean, spe_var = _windowed_moments(ref, window)
        limits = np.array([box_limit(m, v, alpha) for m, v in zip(spe_mean, spe_var, strict=True)])
        return cls(
            variables=tuple(variables),
            grid=g,
            mean=mean,
            scale=scale,
            loadings=P,
            score_variances=lam,
            batches=n_runs,
            alpha=alpha,
            fill=fill,
            t2_limit=t2_limit(components, n_runs, alpha),
            spe_mean=spe_mean,
            spe_var=spe_var,
            spe_limits=limits,
            explained=float(np.sum(share[:components])),
            clock=clock,
        )

    def scaled(self, Y: npt.ArrayLike) -> FloatArray:
        return (np.asarray(Y, dtype=float) - self.mean) / self.scale

    def score_many(self, Y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """T² and SPE (N × K each) of complete runs Y (N × K × J), every grid point scored
        online (only the data up to it, the rest filled)."""
        Z = self.scaled(Y)
        if Z.ndim != 3 or Z.shape[1:] != self.mean.shape:
            raise ValidationFailed(f"runs must be N × {self.mean.shape}", field="runs")
        t2, spe, _ = _online(Z, self.loadings, self.score_variances, self.fill)
        return t2, spe

    def monitor(self, aligned: npt.ArrayLike) -> BatchScores:
        """Score a running batch (K × J, NaN past the points it has reached)."""
        Y = np.asarray(aligned, dtype=float)
        if Y.shape != self.mean.shape:
            raise ValidationFailed(f"a run must be {self.mean.shape} on the grid", field="run")
        k = reached(Y)
        Z = np.zeros_like(Y)
        Z[:k] = (Y[:k] - self.mean[:k]) / self.scale[:k]
        # points not reached yet never feed the statistics of the reached ones: row k only uses
        # rows ≤ k (zero fill) or row k itself (current fill); the zeros are dropped below
        t2, spe, e2 = _online(Z[None], self.loadings, self.score_variances, self.fill)
        return BatchScores(
            times=self.grid[:k].copy(),
            t2=t2[0, :k],
            spe=spe[0, :k],
            t2_limit=self.t2_limit,
            spe_limits=self.spe_limits[:k].copy(),
            spe_contributions=e2[0, :k],
        )

    def align(self, run: Mapping[str, Sequence[tuple[float, float]]]) -> FloatArray:
        return align_run(run, self.variables, self.grid, clock=self.clock)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "variables": list(self.variables),
            "grid": self.grid.tolist(),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "loadings": self.loadings.tolist(),
            "score_variances": self.score_variances.tolist(),
            "batches": self.batches,
            "alpha": self.alpha,
            "fill": self.fill.value,
            "t2_limit": self.t2_limit,
            "spe_mean": self.spe_mean.tolist(),
            "spe_var": self.spe_var.tolist(),
            "spe_limits": self.spe_limits.tolist(),
            "explained": self.explained,
            "clock": self.clock,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchModel:
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise ValidationFailed("not a batch-evolution model of this version", field="params")
        K, J = len(data["grid"]), len(data["variables"])
        loadings = np.asarray(data["loadings"], dtype=float).reshape(K * J, -1)
        return cls(
            variables=tuple(data["variables"]),
            grid=np.asarray(data["grid"], dtype=float),
            mean=np.asarray(data["mean"], dtype=float).reshape(K, J),
            scale=np.asarray(data["scale"], dtype=float).reshape(K, J),
            loadings=loadings,
            score_variances=np.asarray(data["score_variances"], dtype=float),
            batches=int(data["batches"]),
            alpha=float(data["alpha"]),
            fill=Fill(data["fill"]),
            t2_limit=float(data["t2_limit"]),
            spe_mean=np.asarray(data["spe_mean"], dtype=float),
            spe_var=np.asarray(data["spe_var"], dtype=float),
            spe_limits=np.asarray(data["spe_limits"], dtype=float),
            explained=float(data["explained"]),
            clock=data.get("clock"),
        )
