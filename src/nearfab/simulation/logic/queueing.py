"""Closed-form queueing results the engine is validated against.

References: A. K. Erlang (1909, 1917) for the loss (B) and delay (C) formulas; J. D. C. Little,
"A proof for the queuing formula L = λW", Oper. Res. 9 (1961) 383-387; L. Kleinrock, Queueing
Systems Vol. 1 (Wiley 1975) §3.2 (M/M/1), §3.5 (M/M/m), §5.6 Pollaczek-Khinchine (M/G/1).
"""

from __future__ import annotations

import math


def _stable(lam: float, mu: float, c: int = 1) -> float:
    if lam <= 0 or mu <= 0 or c < 1:
        raise ValueError("arrival and service rates must be positive and c >= 1")
    rho = lam / (c * mu)
    if rho >= 1:
        raise ValueError(f"unstable queue: utilisation {rho:.3f} >= 1")
    return rho


def mm1_sojourn(lam: float, mu: float) -> float:
    """M/M/1 mean time in system W = 1 / (μ - λ) (Kleinrock 1975, eq. 3.26)."""
    _stable(lam, mu)
    return 1.0 / (mu - lam)


def mm1_number(lam: float, mu: float) -> float:
    """M/M/1 mean number in system L = ρ / (1 - ρ)."""
    rho = _stable(lam, mu)
    return rho / (1.0 - rho)


def erlang_b(c: int, a: float) -> float:
    """Erlang B: probability an arrival finds all `c` servers busy in M/M/c/c with offered
    load a = λ/μ (Erlang 1917); the stable recursion B(k) = a B(k-1) / (k + a B(k-1))."""
    if c < 0 or a < 0:
        raise ValueError("c and a must be non-negative")
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


def erlang_c(c: int, a: float) -> float:
    """Erlang C: probability of waiting in M/M/c, offered load a = λ/μ < c (Erlang 1917)."""
    if a >= c:
        raise ValueError(f"unstable queue: offered load {a} >= {c} servers")
    b = erlang_b(c, a)
    return c * b / (c - a * (1.0 - b))


def mmc_wait(lam: float, mu: float, c: int) -> float:
    """M/M/c mean wait in queue Wq = C(c, a) / (cμ - λ) (Kleinrock 1975, eq. 3.40)."""
    _stable(lam, mu, c)
    return erlang_c(c, lam / mu) / (c * mu - lam)


def mmc_sojourn(lam: float, mu: float, c: int) -> float:
    """M/M/c mean time in system W = Wq + 1/μ."""
    return mmc_wait(lam, mu, c) + 1.0 / mu


def mmc_wait_within(lam: float, mu: float, c: int, t: float) -> float:
    """P(Wq <= t) in M/M/c: 1 - C(c, a) exp(-(cμ - λ) t)."""
    _stable(lam, mu, c)
    return 1.0 - erlang_c(c, lam / mu) * math.exp(-(c * mu - lam) * max(t, 0.0))


def md1_sojourn(lam: float, service: float) -> float:
    """M/D/1 mean time in system by Pollaczek-Khinchine: W = D + ρD / (2(1 - ρ))
    (Kleinrock 1975, eq. 5.73 with zero service variance)."""
    rho = _stable(lam, 1.0 / service)
    return service + rho * service / (2.0 * (1.0 - rho))


def little_number(lam: float, sojourn: float) -> float:
    """Little's law: L = λW (Little 1961)."""
    return lam * sojourn


def mginf_mean(lam: float, mean_time: float) -> float:
    """M/G/∞ (orders in transit): the number in transit is Poisson with mean λ E[T]
    (Palm 1938; Kleinrock 1975, §2.4 and problem 2.18); its variance equals its mean."""
    return lam * mean_time


def backlog_after_outage(lam: float, mu: float, outage: float) -> float:
    """M/M/1 mean number in system at the end of an outage of length D that stops all service
    and starts from steady state: L + λD (the steady-state L plus the Poisson arrivals of the
    outage; memoryless service makes a restarted batch equivalent to a resumed one)."""
    return mm1_number(lam, mu) + lam * outage


def recovery_time_fluid(lam: float, mu: float, c: int, backlog: float) -> float:
    """Fluid estimate of the time to clear a backlog after service resumes: x / (cμ - λ)."""
    _stable(lam, mu, c)
    return backlog / (c * mu - lam)
