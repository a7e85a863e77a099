"""Samplers for `Dist`: buffered draws from a dedicated numpy stream (fast and reproducible)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from nearfab.simulation.logic.spec import Dist

BLOCK = 512


class Sampler:
    """Draws from one distribution on its own random stream, `BLOCK` values at a time.

    Each sampler owns its generator, so the values one stream yields do not depend on how
    often any other stream is used (common random numbers across scenarios)."""

    __slots__ = ("_buffer", "_draw", "_i", "constant")

    def __init__(self, dist: Dist, rng: np.random.Generator) -> None:
        self.constant: float | None = None
        self._draw: Callable[[int], np.ndarray] | None = None
        self._buffer: list[float] = []
        self._i = 0
        kind = dist.kind
        if kind == "fixed":
            self.constant = float(dist.mean)
        elif kind == "exponential":
            mean = dist.mean
            self._draw = lambda n: rng.exponential(mean, n)
        elif kind == "normal":
            mu, sd = dist.mean, dist.sd
            self._draw = lambda n: np.maximum(rng.normal(mu, sd, n), 0.0)
        elif kind == "lognormal":
            sigma2 = math.log1p((dist.sd / dist.mean) ** 2) if dist.mean > 0 else 0.0
            mu_l = math.log(dist.mean) - sigma2 / 2.0 if dist.mean > 0 else 0.0
            s = math.sqrt(sigma2)
            self._draw = lambda n: rng.lognormal(mu_l, s, n)
        elif kind == "gamma":
            shape = (dist.mean / dist.sd) ** 2 if dist.sd > 0 else 1e9
            scale = dist.mean / shape
            self._draw = lambda n: rng.gamma(shape, scale, n)
        elif kind == "uniform":
            lo, hi = dist.low, dist.high
            self._draw = lambda n: rng.uniform(lo, hi, n)
        elif kind == "triangular":
            lo, mo, hi = dist.low, dist.mode, dist.high
            self._draw = lambda n: rng.triangular(lo, mo, hi, n)
        elif kind == "empirical":
            values = np.asarray(dist.values, dtype=float)
            self._draw = lambda n: rng.choice(values, n)
        else:
            raise ValueError(f"unknown distribution kind {kind!r}")

    def __call__(self) -> float:
        if self.constant is not None:
            return self.constant
        if self._i >= len(self._buffer):
            assert self._draw is not None
            self._buffer = self._draw(BLOCK).tolist()
            self._i = 0
        value = self._buffer[self._i]
        self._i += 1
        return value


class Uniforms:
    """Buffered U(0, 1) draws (Bernoulli trials, thinning, product mix)."""

    __slots__ = ("_buffer", "_i", "_rng")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._buffer: list[float] = []
        self._i = 0

    def __call__(self) -> float:
        if self._i >= len(self._buffer):
            self._buffer = self._rng.random(BLOCK).tolist()
            self._i = 0
        value = self._buffer[self._i]
        self._i += 1
        return value


def stream(seed: int, replication: int, *key: int) -> np.random.Generator:
    """The random stream for (scenario seed, replication, stream key): the same numbers on any
    machine and under any executor."""
    return np.random.default_rng(np.random.SeedSequence([seed, replication, *key]))
