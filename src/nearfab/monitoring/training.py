"""Fitting the parameters of SPC and MSPC models from qualified runs.

Machine telemetry is sampled every few seconds and is autocorrelated (a printer's temperature
does not jump from one sample to the next), and a run of one batch has tens to hundreds of
readings per metric. Textbook 3-sigma limits with the moving-range sigma would then flag most
healthy runs. So, by default:

- sigma is the overall standard deviation of the training readings (not MR-bar/d2, which
  underestimates it under positive autocorrelation; Montgomery, *Introduction to SPC*, §10.4);
- limits are widened so that a healthy run raises a false alarm with probability about
  1 - alpha across all its readings and all monitored statistics (Šidák correction over the
  median number of readings per run);
- the EWMA limit is set from the EWMA's own spread on the training runs, which accounts for the
  autocorrelation, instead of the independent-data formula;
- the run rules (WE 2-4), the moving-range chart and CUSUM are off unless asked for, since on
  autocorrelated data they fire on healthy runs; they can be enabled per model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

import numpy as np
import numpy.typing as npt

from nearfab.common.errors import ValidationFailed
from nearfab.monitoring.logic.mspc import PcaModel, components_for
from nearfab.monitoring.logic.online import Signal

EWMA_LAMBDA = 0.2
DEFAULT_SIGNALS = (Signal.WE1.value, Signal.EWMA.value)


@dataclass(frozen=True)
class TrainingData:
    metrics: list[str]
    per_run: dict[str, dict[str, list[float]]]  # run -> metric -> readings in time order
    matrix: npt.NDArray[np.float64]  # complete samples (all metrics at one time), rows
    samples_per_run: list[int]


def _sidak_z(alpha: float, tests: int) -> float:
    """Two-sided z for one test when `tests` of them together keep coverage `alpha`."""
    from scipy.stats import norm  # lazy: scipy takes a second to import

    per_test = 1.0 - alpha ** (1.0 / max(1, tests))
    return float(norm.ppf(1.0 - per_test / 2.0))


def _ewma_spread(runs: Sequence[list[float]], center: float, lam: float) -> float:
    deviations: list[float] = []
    for values in runs:
        e = center
        for x in values:
            e = lam * x + (1.0 - lam) * e
            deviations.append(e - center)
    return float(np.sqrt(np.mean(np.square(deviations)))) if deviations else 0.0


def _lag1(runs: Sequence[list[float]], center: float) -> float:
    num = den = 0.0
    for values in runs:
        d = np.asarray(values) - center
        num += float(np.sum(d[1:] * d[:-1]))
        den += float(np.sum(d * d))
    return num / den if den > 0 else 0.0


def fit_spc(
    data: TrainingData, *, alpha: float, signals: Sequence[str] | None = None
) -> dict[str, Any]:
    """Per-metric centre, sigma and limits for `OnlineMonitor` (see the module docstring)."""
    chosen = tuple(signals) if signals is not None else DEFAULT_SIGNALS
    known = {s.value for s in Signal}
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise ValidationFailed(
            f"unknown signal(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            field="signals",
        )
    charts: dict[str, Any] = {}
    n_tests = max(1, len(data.metrics) * len(chosen))
    for metric in data.metrics:
        runs = [data.per_run[r][metric] for r in data.per_run if data.per_run[r][metric]]
        values = np.concatenate([np.asarray(v, dtype=float) for v in runs]) if runs else None
        if values is None or values.size < 20:
            raise ValidationFailed(
                f"metric {metric}: {0 if values is None else values.size} training readings; "
                "at least 20 are needed",
                field="runs",
            )
        center = float(values.mean())
        sigma = float(values.std(ddof=1))
        if not sigma > 0:
            raise ValidationFailed(
                f"metric {metric} did not vary in the training runs; it cannot be charted",
                field="runs",
            )
        per_run = int(median(len(v) for v in runs))
        z = max(3.0, _sidak_z(alpha, per_run * n_tests))
        spread = _ewma_spread(runs, center, EWMA_LAMBDA)
        iid_spread = sigma * math.sqrt(EWMA_LAMBDA / (2.0 - EWMA_LAMBDA))
        ewma_L = max(3.0, z * spread / iid_spread) if spread > 0 else z
        charts[metric] = {
            "center": center,
            "sigma": sigma,
            "L_individuals": z,
            "lam": EWMA_LAMBDA,
            "L_ewma": ewma_L,
            "k": 0.5,
            "h": 5.0,
            "lag1_autocorrelation": _lag1(runs, center),
            "readings": int(values.size),
            "readings_per_run": per_run,
        }
    return {"signals": list(chosen), "charts": charts, "alpha": alpha}


def fit_mspc(data: TrainingData, *, alpha: float, components: int | None = None) -> dict[str, Any]:
    """A PCA model on complete samples; limits at the per-sample level that keeps a healthy
    run's chance of any false T² or SPE alarm near 1 - alpha."""
    X = data.matrix
    p = len(data.metrics)
    if p < 2:
        raise ValidationFailed("MSPC needs at least two metrics", field="metrics")
    if X.shape[0] < max(20, 5 * p):
        raise ValidationFailed(
            f"{X.shape[0]} complete samples; an MSPC model on {p} metrics needs at least "
            f"{max(20, 5 * p)}",
            field="runs",
        )
    per_run = int(median(data.samples_per_run)) if data.samples_per_run else 1
    sample_alpha = alpha ** (1.0 / max(1, 2 * per_run))
    if components is None:
        # a PCA model needs a residual space: at most one component fewer than metrics
        components = min(p - 1, components_for(X, 0.75))
    elif not 0 < components < p:
        raise ValidationFailed(
            f"components must be between 1 and {p - 1} for {p} metrics", field="components"
        )
    model = PcaModel.fit(X, components, alpha=sample_alpha, variable_names=data.metrics)
    return {
        "pca": model.to_dict(),
        "alpha": alpha,
        "sample_alpha": sample_alpha,
        "samples_per_run": per_run,
    }
