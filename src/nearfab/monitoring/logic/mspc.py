"""Multivariate SPC: PCA with Hotelling T² and SPE (Q), limits, contributions, online scoring.

The model autoscales with the training mean and sd, keeps `components` principal components
and monitors two statistics per sample: T² in the model plane and SPE = ‖residual‖² off it
(MacGregor & Kourti 1995; Chiang, Russell & Braatz 2001, ch. 4). Limits at level `alpha`:

* T²: phase-II F limit a(n²−1)/(n(n−a)) · F_alpha(a, n−a) (Tracy, Young & Mason 1992);
* SPE: Jackson & Mudholkar (1979) from θ_i = Σ_{j>a} λ_j^i of the residual eigenvalues (Box's
  g·χ²_h approximation if h0 ≤ 0, where Jackson–Mudholkar is undefined).

Improvement (optional, `lags` and `ewma_lambda`): dynamic PCA on lagged variables
[x_t, x_{t−1}, …, x_{t−lags}] (Ku, Storer & Georgakis 1995) and an EWMA on T² and SPE. EWMA
limits come from the training data only: K-fold blocked cross-validation (each contiguous block
scored by a model fitted on the rest), a Box (1954) scaled-χ² fit to the pooled out-of-fold EWMA
statistics, each at level 1 − (1 − alpha)/2 so that "EWMA-T² or EWMA-SPE" keeps 1 − alpha.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from nearfab.common.errors import ValidationFailed

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

FORMAT = "nearfab.mspc.pca"
FORMAT_VERSION = 1
_CHUNK = 2048  # rows per block in batched scoring: keeps the work buffer in cache

__all__ = [
    "FORMAT_VERSION",
    "Contributions",
    "EwmaRule",
    "Monitoring",
    "OnlineMonitor",
    "PcaModel",
    "SampleResult",
    "ewma",
    "fingerprint",
    "parallel_analysis",
    "q_limit",
    "t2_limit",
]


# --- limits ------------------------------------------------------------------------------------
def t2_limit(components: int, n: int, alpha: float) -> float:
    """Phase-II Hotelling T² limit for a new sample: a(n²−1)/(n(n−a)) · F_alpha(a, n−a)."""
    from scipy import stats  # lazy: scipy takes a second to import

    a = components
    return float(a * (n * n - 1) / (n * (n - a)) * stats.f.ppf(alpha, a, n - a))


def q_limit(residual_eigenvalues: FloatArray, alpha: float) -> float:
    """SPE limit of Jackson & Mudholkar (1979); Box's g·χ²_h when h0 ≤ 0."""
    from scipy import stats  # lazy: scipy takes a second to import

    lam = np.asarray(residual_eigenvalues, dtype=np.float64)
    th1, th2, th3 = (float(np.sum(lam**k)) for k in (1, 2, 3))
    if th1 <= 0.0 or th2 <= 0.0:
        raise ValidationFailed(
            "no residual variance is left after the chosen components; use fewer components",
            field="components",
        )
    h0 = 1.0 - 2.0 * th1 * th3 / (3.0 * th2 * th2)
    if h0 <= 0.0:
        return float(th2 / th1 * stats.chi2.ppf(alpha, th1 * th1 / th2))
    c = float(stats.norm.ppf(alpha))
    inner = c * math.sqrt(2.0 * th2 * h0 * h0) / th1 + 1.0 + th2 * h0 * (h0 - 1.0) / (th1 * th1)
    return float(th1 * inner ** (1.0 / h0))


def _box_limit(values: FloatArray, level: float) -> float:
    """Quantile `level` of g·χ²_h matched to the mean and variance of `values` (Box 1954)."""
    from scipy import stats  # lazy: scipy takes a second to import

    mean = float(np.mean(values))
    var = float(np.var(values, ddof=1))
    if mean <= 0.0 or var <= 0.0:
        raise ValidationFailed("EWMA calibration found no variation", field="ewma_lambda")
    g, h = var / (2.0 * mean), 2.0 * mean * mean / var
    return float(g * stats.chi2.ppf(level, h))


# --- helpers ------------------------------------------------------------------------------------
def fingerprint(X: npt.ArrayLike) -> str:
    """sha256 of the training matrix as C-ordered little-endian float64 bytes."""
    data = np.ascontiguousarray(np.asarray(X, dtype="<f8"))
    return hashlib.sha256(data.tobytes()).hexdigest()


def _lagged(X: FloatArray, lags: int) -> FloatArray:
    """Rows [x_t, x_{t−1}, …, x_{t−lags}] for t = lags … n−1."""
    if lags == 0:
        return X
    n = X.shape[0]
    return np.hstack([X[lags - j : n - j] for j in range(lags + 1)])


def _matrix(X: npt.ArrayLike, name: str, columns: int | None = None) -> FloatArray:
    try:
        arr = np.ascontiguousarray(np.asarray(X, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValidationFailed(f"{name} must be a numeric matrix", field=name) from None
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValidationFailed(
            f"{name} must be a matrix with one sample per row, got shape {arr.shape}", field=name
        )
    if columns is not None and arr.shape[1] != columns:
        raise ValidationFailed(
            f"{name} has {arr.shape[1]} variables per sample, the model has {columns}", field=name
        )
    return arr


def _not_finite(name: str, row: int) -> ValidationFailed:
    return ValidationFailed(f"{name}: sample {row} is not finite (NaN or infinity)", field=name)


def ewma(values: FloatArray, lam: float, start: float) -> FloatArray:
    """z_t = λ·x_t + (1−λ)·z_{t−1}, z_{−1} = start."""
    from scipy.signal import lfilter  # lazy: scipy takes a second to import

    out, _ = lfilter([lam], [1.0, -(1.0 - lam)], values, zi=[(1.0 - lam) * start])
    return np.asarray(out, dtype=np.float64)


def parallel_analysis(X: npt.ArrayLike, lags: int = 0, reps: int = 100, seed: int = 0) -> int:
    """Components whose eigenvalue beats the mean eigenvalue of autoscaled Gaussian noise of
    the same size (Horn 1965), on the (lagged) autoscaled matrix."""
    Xa = _lagged(_matrix(X, "X"), lags)
    n, p = Xa.shape

    def eig(M: FloatArray) -> FloatArray:
        Z = (M - M.mean(axis=0)) / M.std(axis=0, ddof=1)
        s = np.linalg.svd(Z, compute_uv=False)
        return np.asarray(s * s / (n - 1), dtype=np.float64)

    rng = np.random.default_rng(seed)
    noise = np.mean([eig(rng.standard_normal((n, p))) for _ in range(reps)], axis=0)
    return int(np.sum(eig(Xa) > noise))


# --- results -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EwmaRule:
    """EWMA on T² and SPE with limits from cross-validated training statistics (see module)."""

    lam: float
    t2_limit: float
    spe_limit: float
    t2_start: float  # EWMA start: in-sample mean of T² on the training data
    spe_start: float
    level: float  # per-statistic quantile, 1 − (1 − alpha)/2
    folds: int


@dataclass(frozen=True)
class Monitoring:
    """Per-sample statistics and alarms; the first `warmup` samples (lags) carry NaN, no alarm."""

    t2: FloatArray
    spe: FloatArray
    t2_ewma: FloatArray | None
    spe_ewma: FloatArray | None
    alarm: BoolArray
    basis: str  # "t2|spe" or "ewma(t2)|ewma(spe)"
    warmup: int


@dataclass(frozen=True)
class SampleResult:
    t2: float
    spe: float
    t2_ewma: float | None
    spe_ewma: float | None
    alarm: bool


@dataclass(frozen=True)
class Contributions:
    """Per-variable shares of T² and SPE for one sample; each sums to its statistic."""

    names: tuple[str, ...]
    t2: FloatArray
    spe: FloatArray

    def top(self, which: str, k: int = 3) -> list[tuple[str, float]]:
        """The `k` variables with the largest contribution to "t2" or "spe"."""
        if which not in ("t2", "spe"):
            raise ValidationFailed('which is "t2" or "spe"', field="which")
        values = self.t2 if which == "t2" else self.spe
        order = np.argsort(-values, kind="stable")[:k]
        return [(self.names[i], float(values[i])) for i in order]


# --- the model ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PcaModel:
    """A fitted (dynamic) PCA monitoring model. Build with `PcaModel.fit` or `from_dict`."""

    mean: FloatArray  # (p,), p = variables × (lags + 1)
    scale: FloatArray  # (p,)
    loadings: FloatArray  # (p, a)
    eigenvalues: FloatArray  # (p,), descending; zeros past the rank
    n_train: int  # rows of the (lagged) training matrix
    alpha: float
    t2_limit: float
    spe_limit: float
    fingerprint: str
    lags: int = 0
    variable_names: tuple[str, ...] | None = None
    ewma: EwmaRule | None = None
    _proj: FloatArray = field(init=False, repr=False)
    _offset: FloatArray = field(init=False, repr=False)
    _blocks: tuple[FloatArray, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        p, a = self.loadings.shape
        if not 0 < a < p or self.mean.shape != (p,) or self.scale.shape != (p,):
            raise ValidationFailed("model arrays have inconsistent shapes", field="model")
        if self.eigenvalues.shape != (p,) or self.lags < 0 or p % (self.lags + 1):
            raise ValidationFailed("model eigenvalues or lags are inconsistent", field="model")
        if self.variable_names is not None and len(self.variable_names) != p // (self.lags + 1):
            raise ValidationFailed("variable_names do not match the variables", field="model")
        if not (np.all(self.scale > 0) and np.all(self.eigenvalues[:a] > 0)):
            raise ValidationFailed("model scale and eigenvalues must be positive", field="model")
        limits_ok = self.t2_limit > 0 and self.spe_limit > 0
        if not (0 < self.alpha < 1 and limits_ok and a < self.n_train):
            raise ValidationFailed("model alpha, limits or n_train are out of range", field="model")
        # T² = ‖z·P·Λ^-½‖², SPE = ‖z·(I − P·Pᵀ)‖², with z = (x − mean)/scale folded in:
        # y = x·proj − offset, T² = Σ y[:a]², SPE = Σ y[a:]².
        both = np.hstack([self.loadings / np.sqrt(self.eigenvalues[:a]), np.eye(p)])
        both[:, a:] -= self.loadings @ self.loadings.T
        proj = np.ascontiguousarray(both / self.scale[:, None])
        offset = (self.mean / self.scale) @ both
        m = p // (self.lags + 1)
        blocks = tuple(
            np.ascontiguousarray(proj[j * m : (j + 1) * m]) for j in range(self.lags + 1)
        )
        for arr in (self.mean, self.scale, self.loadings, self.eigenvalues, proj, offset, *blocks):
            arr.setflags(write=False)
        object.__setattr__(self, "_proj", proj)
        object.__setattr__(self, "_offset", offset)
        object.__setattr__(self, "_blocks", blocks)

    # -- shape ------------------------------------------------------------------------------
    @property
    def components(self) -> int:
        return int(self.loadings.shape[1])

    @property
    def n_variables(self) -> int:
        return int(self.loadings.shape[0]) // (self.lags + 1)

    @property
    def names(self) -> tuple[str, ...]:
        return self.variable_names or tuple(f"x{j + 1}" for j in range(self.n_variables))

    @property
    def explained_variance(self) -> float:
        """Share of the (lagged) autoscaled variance in the model plane."""
        return float(self.eigenvalues[: self.components].sum() / self.eigenvalues.sum())

    # -- fitting ----------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        X: npt.ArrayLike,
        components: int | None = None,
        *,
        alpha: float = 0.99,
        cumulative_variance: float | None = None,
        lags: int = 0,
        ewma_lambda: float | None = None,
        folds: int = 5,
        variable_names: Sequence[str] | None = None,
    ) -> PcaModel:
        """Fit on in-control training data X (samples × variables).

        Give `components`, or `cumulative_variance` (the fewest components explaining at least
        that share of the autoscaled variance). `lags` > 0 makes a dynamic PCA; `ewma_lambda`
        adds the EWMA rule calibrated by `folds`-fold blocked cross-validation on X.
        """
        arr = _matrix(X, "X")
        n, m = arr.shape
        if not 0.0 < alpha < 1.0:
            raise ValidationFailed("alpha must be between 0 and 1, e.g. 0.99", field="alpha")
        if isinstance(lags, bool) or not isinstance(lags, int) or lags < 0:
            raise ValidationFailed("lags must be a whole number ≥ 0", field="lags")
        names = None if variable_names is None else tuple(str(v) for v in variable_names)
        if names is not None and len(names) != m:
            raise ValidationFailed(
                f"{len(names)} variable names for {m} variables", field="variable_names"
            )
        if not np.isfinite(arr).all():
            raise _not_finite("X", int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0]))
        if n - lags < 3:
            raise ValidationFailed(f"X needs at least {lags + 3} samples", field="X")
        sd = arr.std(axis=0, ddof=1)
        flat = sd <= 1e-12 * np.maximum(1.0, np.abs(arr.mean(axis=0)))
        if flat.any():
            j = int(np.flatnonzero(flat)[0])
            label = f"column {j + 1}" + (f" ({names[j]})" if names else "")
            raise ValidationFailed(
                f"{label} has zero variance in the training data; drop it before fitting",
                field="X",
            )
        a = _choose(arr, lags, components, cumulative_variance)
        model = cls._fit_pieces([arr], a, alpha, lags, fingerprint(arr), names)
        if ewma_lambda is None:
            return model
        rule = _calibrate(arr, model, ewma_lambda, folds)
        return cls._fit_pieces([arr], a, alpha, lags, model.fingerprint, names, rule)

    @classmethod
    def _fit_pieces(
        cls,
        pieces: list[FloatArray],
        a: int,
        alpha: float,
        lags: int,
        fp: str,
        names: tuple[str, ...] | None,
        rule: EwmaRule | None = None,
    ) -> PcaModel:
        """Fit on contiguous pieces of data, lagging inside each piece only."""
        Xa = np.vstack([_lagged(piece, lags) for piece in pieces if len(piece) > lags])
        n, p = Xa.shape
        if not 0 < a < min(n - 1, p):
            raise ValidationFailed(
                f"components must be between 1 and {min(n - 1, p) - 1} for this data",
                field="components",
            )
        mean = Xa.mean(axis=0)
        scale = Xa.std(axis=0, ddof=1)
        if np.any(scale <= 0):
            raise ValidationFailed("a variable is constant in part of the data", field="X")
        _, s, vt = np.linalg.svd((Xa - mean) / scale, full_matrices=False)
        eig = np.zeros(p)
        eig[: s.size] = s * s / (n - 1)
        loadings = vt[:a].T.copy()
        # deterministic signs: the largest-magnitude weight of each component is positive
        signs = np.sign(loadings[np.abs(loadings).argmax(axis=0), np.arange(a)])
        loadings *= np.where(signs == 0, 1.0, signs)
        return cls(
            mean=mean,
            scale=scale,
            loadings=loadings,
            eigenvalues=eig,
            n_train=n,
            alpha=alpha,
            t2_limit=t2_limit(a, n, alpha),
            spe_limit=q_limit(eig[a:], alpha),
            fingerprint=fp,
            lags=lags,
            variable_names=names,
            ewma=rule,
        )

    # -- scoring ----------------------------------------------------------------------------
    def score(self, X: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """T² and SPE per sample (rows of X); NaN for the first `lags` samples."""
        arr = _matrix(X, "X", self.n_variables)
        n, lags, a = arr.shape[0], self.lags, self.components
        t2 = np.empty(n)
        spe = np.empty(n)
        t2[: min(n, lags)] = np.nan
        spe[: min(n, lags)] = np.nan
        buf = np.empty((min(_CHUNK, max(n - lags, 1)), self._proj.shape[1]))
        tmp = np.empty_like(buf) if lags else buf
        for start in range(lags, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            y = buf[: stop - start]
            np.matmul(arr[start:stop], self._blocks[0], out=y)
            for j in range(1, lags + 1):
                part = tmp[: stop - start]
                np.matmul(arr[start - j : stop - j], self._blocks[j], out=part)
                y += part
            y -= self._offset
            y *= y
            np.sum(y[:, :a], axis=1, out=t2[start:stop])
            np.sum(y[:, a:], axis=1, out=spe[start:stop])
        bad = ~np.isfinite(t2[lags:] + spe[lags:])
        if bad.any():
            raise _not_finite("X", int(np.flatnonzero(bad)[0]) + lags)
        return t2, spe

    def _window(self, x: npt.ArrayLike) -> FloatArray:
        """One sample (lags = 0) or a (lags+1, variables) window, newest row last → z order."""
        arr = np.asarray(x, dtype=np.float64)
        want = (self.n_variables,) if self.lags == 0 else (self.lags + 1, self.n_variables)
        if arr.shape != want:
            raise ValidationFailed(f"x must have shape {want}, got {arr.shape}", field="x")
        return arr if self.lags == 0 else arr[::-1].reshape(-1)

    def score_one(self, x: npt.ArrayLike) -> tuple[float, float]:
        """T² and SPE of one sample (a window of lags+1 samples, oldest first, if lags > 0)."""
        y = self._window(x) @ self._proj - self._offset
        y *= y
        a = self.components
        t2, spe = float(y[:a].sum()), float(y[a:].sum())
        if not math.isfinite(t2 + spe):
            raise ValidationFailed("x is not finite (NaN or infinity)", field="x")
        return t2, spe

    def monitor(self, X: npt.ArrayLike) -> Monitoring:
        """Statistics and alarms for a run of samples (EWMA started at the training mean)."""
        t2, spe = self.score(X)
        lags = self.lags
        rule = self.ewma
        if rule is None:
            alarm = (t2 > self.t2_limit) | (spe > self.spe_limit)
            return Monitoring(t2, spe, None, None, alarm, "t2|spe", lags)
        t2e = np.full_like(t2, np.nan)
        spee = np.full_like(spe, np.nan)
        if t2.size > lags:
            t2e[lags:] = ewma(t2[lags:], rule.lam, rule.t2_start)
            spee[lags:] = ewma(spe[lags:], rule.lam, rule.spe_start)
        alarm = (t2e > rule.t2_limit) | (spee > rule.spe_limit)
        return Monitoring(t2, spe, t2e, spee, alarm, "ewma(t2)|ewma(spe)", lags)

    def online(self) -> OnlineMonitor:
        """A per-sample monitor holding the lag window and EWMA state."""
        return OnlineMonitor(self)

    # -- diagnosis --------------------------------------------------------------------------
    def contributions(self, x: npt.ArrayLike) -> Contributions:
        """Per-variable contributions of one sample (window if lags > 0).

        T²: c_j = z_j·(P Λ⁻¹ Pᵀ z)_j (Westerhuis, Gurden & Smilde 2000; the "partial
        decomposition" of Alcala & Qin 2009); can be negative. SPE: c_j = e_j², e the residual
        (Miller, Swanson & Heckler 1998). For lagged models the lags of each variable are
        summed. Both sum to the sample's statistic.
        """
        z = (self._window(x) - self.mean) / self.scale
        P = self.loadings
        t = z @ P
        c_t2 = z * (P @ (t / self.eigenvalues[: self.components]))
        e = z - P @ t
        c_spe = e * e
        m = self.n_variables
        c_t2 = c_t2.reshape(self.lags + 1, m).sum(axis=0)
        c_spe = c_spe.reshape(self.lags + 1, m).sum(axis=0)
        return Contributions(self.names, np.asarray(c_t2), np.asarray(c_spe))

    # -- storage ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form with the format version, training fingerprint and a content hash."""
        body: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "method": "dynamic_pca" if self.lags else "pca",
            "components": self.components,
            "lags": self.lags,
            "alpha": self.alpha,
            "n_train": self.n_train,
            "variables": self.n_variables,
            "variable_names": list(self.variable_names) if self.variable_names else None,
            "training_fingerprint": {"algorithm": "sha256-float64-le", "value": self.fingerprint},
            "limits": {
                "t2": self.t2_limit,
                "t2_method": "F (phase II)",
                "spe": self.spe_limit,
                "spe_method": "Jackson-Mudholkar",
            },
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "loadings": self.loadings.tolist(),
            "eigenvalues": self.eigenvalues.tolist(),
            "ewma": None if self.ewma is None else vars(self.ewma).copy(),
        }
        body["sha256"] = _content_hash(body)
        return body

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PcaModel:
        """Inverse of `to_dict`; refuses other formats, newer versions and altered content."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValidationFailed(f"not a {FORMAT} model", field="model")
        version = data.get("format_version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise ValidationFailed(
                f"model format_version {version!r} is not supported (1..{FORMAT_VERSION})",
                field="model",
            )
        body = {k: v for k, v in data.items() if k != "sha256"}
        if "sha256" in data and data["sha256"] != _content_hash(body):
            raise ValidationFailed("model content does not match its sha256", field="model")
        try:
            names = data["variable_names"]
            rule = data["ewma"]
            return cls(
                mean=np.asarray(data["mean"], dtype=np.float64),
                scale=np.asarray(data["scale"], dtype=np.float64),
                loadings=np.asarray(data["loadings"], dtype=np.float64).reshape(
                    len(data["mean"]), int(data["components"])
                ),
                eigenvalues=np.asarray(data["eigenvalues"], dtype=np.float64),
                n_train=int(data["n_train"]),
                alpha=float(data["alpha"]),
                t2_limit=float(data["limits"]["t2"]),
                spe_limit=float(data["limits"]["spe"]),
                fingerprint=str(data["training_fingerprint"]["value"]),
                lags=int(data["lags"]),
                variable_names=None if names is None else tuple(str(v) for v in names),
                ewma=None
                if rule is None
                else EwmaRule(
                    lam=float(rule["lam"]),
                    t2_limit=float(rule["t2_limit"]),
                    spe_limit=float(rule["spe_limit"]),
                    t2_start=float(rule["t2_start"]),
                    spe_start=float(rule["spe_start"]),
                    level=float(rule["level"]),
                    folds=int(rule["folds"]),
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ValidationFailed):
                raise
            raise ValidationFailed(
                f"model is incomplete or malformed: {exc}", field="model"
            ) from None


def _content_hash(body: Mapping[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def components_for(X: npt.ArrayLike, cumulative_variance: float, lags: int = 0) -> int:
    """The fewest components explaining `cumulative_variance` of the autoscaled variance."""
    return _choose(_matrix(X, "X"), lags, None, cumulative_variance)


def _choose(X: FloatArray, lags: int, components: int | None, share: float | None) -> int:
    if (components is None) == (share is None):
        raise ValidationFailed("give either components or cumulative_variance", field="components")
    if components is not None:
        if isinstance(components, bool) or not isinstance(components, int) or components < 1:
            raise ValidationFailed("components must be a whole number ≥ 1", field="components")
        return components
    assert share is not None
    if not 0.0 < share < 1.0:
        raise ValidationFailed(
            "cumulative_variance must be between 0 and 1", field="cumulative_variance"
        )
    Xa = _lagged(X, lags)
    s = np.linalg.svd((Xa - Xa.mean(axis=0)) / Xa.std(axis=0, ddof=1), compute_uv=False)
    cum = np.cumsum(s * s) / np.sum(s * s)
    return int(np.searchsorted(cum, share) + 1)


def _calibrate(X: FloatArray, model: PcaModel, lam: float, folds: int) -> EwmaRule:
    """EWMA limits from `folds`-fold blocked cross-validation on the training data."""
    if not 0.0 < lam <= 1.0:
        raise ValidationFailed("ewma_lambda must be in (0, 1], e.g. 0.2", field="ewma_lambda")
    n, lags = X.shape[0], model.lags
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValidationFailed("folds must be a whole number ≥ 2", field="folds")
    if n // folds <= lags + 1:
        raise ValidationFailed(f"too few samples for {folds} folds", field="folds")
    bounds = np.linspace(0, n, folds + 1).astype(int)
    t2_series: list[FloatArray] = []
    spe_series: list[FloatArray] = []
    for lo, hi in itertools.pairwise(bounds):
        sub = PcaModel._fit_pieces([X[:lo], X[hi:]], model.components, model.alpha, lags, "", None)
        inside = [sub.score(p) for p in (X[:lo], X[hi:]) if len(p) > lags]
        t2_in = np.concatenate([t[lags:] for t, _ in inside])
        spe_in = np.concatenate([s[lags:] for _, s in inside])
        t2, spe = sub.score(X[lo:hi])
        t2_series.append(ewma(t2[lags:], lam, float(t2_in.mean())))
        spe_series.append(ewma(spe[lags:], lam, float(spe_in.mean())))
    level = 1.0 - (1.0 - model.alpha) / 2.0
    t2_all, spe_all = model.score(X)
    return EwmaRule(
        lam=float(lam),
        t2_limit=_box_limit(np.concatenate(t2_series), level),
        spe_limit=_box_limit(np.concatenate(spe_series), level),
        t2_start=float(np.mean(t2_all[lags:])),
        spe_start=float(np.mean(spe_all[lags:])),
        level=level,
        folds=folds,
    )


class OnlineMonitor:
    """Scores one sample at a time, keeping the lag window and the EWMA state; gives the same
    numbers as `PcaModel.monitor` on the same sequence."""

    def __init__(self, model: PcaModel) -> None:
        self.model = model
        self._window: list[FloatArray] = []
        rule = model.ewma
        self._t2e = rule.t2_start if rule else 0.0
        self._spee = rule.spe_start if rule else 0.0

    def update(self, x: npt.ArrayLike) -> SampleResult:
        model = self.model
        row = np.asarray(x, dtype=np.float64)
        if row.shape != (model.n_variables,):
            raise ValidationFailed(
                f"x must have {model.n_variables} values, got shape {row.shape}", field="x"
            )
        if model.lags:
            self._window.append(row)
            if len(self._window) <= model.lags:
                return SampleResult(math.nan, math.nan, None, None, False)
            self._window = self._window[-(model.lags + 1) :]
            t2, spe = model.score_one(np.stack(self._window))
        else:
            t2, spe = model.score_one(row)
        rule = model.ewma
        if rule is None:
            return SampleResult(t2, spe, None, None, t2 > model.t2_limit or spe > model.spe_limit)
        self._t2e = rule.lam * t2 + (1.0 - rule.lam) * self._t2e
        self._spee = rule.lam * spe + (1.0 - rule.lam) * self._spee
        alarm = self._t2e > rule.t2_limit or self._spee > rule.spe_limit
        return SampleResult(t2, spe, self._t2e, self._spee, alarm)
