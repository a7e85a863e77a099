"""The engine against queueing theory: each case builds a scenario the theory describes,
runs it for ≥ 20 independent replications and checks that the simulated mean is within 3 % of
the theoretical value and that the theoretical value lies inside the 99 % confidence interval.

Cases: M/M/1 (Kleinrock 1975 §3.2), M/M/c via Erlang C, M/D/1 via Pollaczek-Khinchine,
Erlang B blocking in M/M/c/c, Little's law L = λW (Little 1961), Poisson counts of orders in
transit (M/G/∞), and the backlog at the end of an outage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nearfab.simulation.logic import queueing as q
from nearfab.simulation.logic.engine import ReplicationResult
from nearfab.simulation.logic.spec import Disruption, Dist, Leg, Product, Region, ScenarioSpec, Site
from nearfab.simulation.logic.stats import estimate

TOLERANCE = 0.03
LEVEL = 0.99
REPLICATIONS = 20

Runner = Callable[[ScenarioSpec, int], Sequence[ReplicationResult]]


@dataclass
class Check:
    name: str
    metric: str
    theory: float
    simulated: float
    ci_low: float
    ci_high: float
    replications: int
    reference: str
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def relative_error(self) -> float:
        return abs(self.simulated - self.theory) / abs(self.theory)

    @property
    def passed(self) -> bool:
        return self.relative_error <= TOLERANCE and self.ci_low <= self.theory <= self.ci_high

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "theory": self.theory,
            "simulated": self.simulated,
            "relative_error": self.relative_error,
            "ci99": [self.ci_low, self.ci_high],
            "replications": self.replications,
            "passed": self.passed,
            "reference": self.reference,
            **self.extra,
        }


def _single(
    name: str,
    service: Dist,
    lam: float,
    *,
    slots: int = 1,
    horizon: float,
    warmup: float,
    seed: int,
    max_queue: int | None = None,
    disruptions: tuple[Disruption, ...] = (),
) -> ScenarioSpec:
    product = Product("unit", target_lead_time_days=1e9, cycle=service)
    return ScenarioSpec(
        name=name,
        horizon_days=horizon,
        warmup_days=warmup,
        products=(product,),
        sites=(Site("site", slots=slots, max_queue=max_queue),),
        regions=(Region("region", "site", rate_per_day=lam),),
        disruptions=disruptions,
        seed=seed,
        replications=REPLICATIONS,
    )


def _check(
    name: str, metric: str, theory: float, values: Sequence[float], reference: str, **extra: float
) -> Check:
    e = estimate(values, LEVEL)
    return Check(name, metric, theory, e.mean, e.low, e.high, e.n, reference, dict(extra))


def validation_specs(scale: float = 1.0) -> dict[str, ScenarioSpec]:
    """The scenarios of the suite; `scale` multiplies every horizon (1.0: the test sizes)."""
    h = scale
    return {
        "mm1": _single(
            "M/M/1", Dist("exponential", 1.0), 0.5, horizon=100 + 6000 * h, warmup=100, seed=101
        ),
        "mmc": _single(
            "M/M/3",
            Dist("exponential", 1.0),
            2.1,
            slots=3,
            horizon=50 + 2500 * h,
            warmup=50,
            seed=202,
        ),
        "md1": _single(
            "M/D/1", Dist("fixed", 1.0), 0.6, horizon=50 + 6000 * h, warmup=50, seed=303
        ),
        "erlang_b": _single(
            "M/M/3/3",
            Dist("exponential", 1.0),
            2.0,
            slots=3,
            max_queue=0,
            horizon=10 + 2500 * h,
            warmup=10,
            seed=404,
        ),
        "transit": ScenarioSpec(
            name="M/G/inf transit",
            horizon_days=20 + 2000 * h,
            warmup_days=20,
            products=(Product("unit", target_lead_time_days=1e9),),
            sites=(Site("site", slots=10_000),),
            legs=(Leg("courier", time=Dist("lognormal", 3.0, 1.5)),),
            regions=(Region("region", "site", rate_per_day=2.0, outbound="courier"),),
            seed=505,
            replications=REPLICATIONS,
        ),
        "outage": _single(
            "M/M/1 outage",
            Dist("exponential", 1.0),
            0.5,
            horizon=100 + 70 * round(60 * h),
            warmup=100,
            seed=606,
            disruptions=(Disruption("site_outage", "site", start=150, duration=10, every=70),),
        ),
    }


def run_validation(runner: Runner, scale: float = 1.0) -> list[Check]:
    """Run every case with `runner(spec, replications)` and compare with theory."""
    specs = validation_specs(scale)
    results = {key: runner(spec, REPLICATIONS) for key, spec in specs.items()}
    mm1 = results["mm1"]
    checks = [
        _check(
            "M/M/1 time in system",
            "lead_time_mean",
            q.mm1_sojourn(0.5, 1.0),
            [r.lead_time_mean for r in mm1],
            "Kleinrock 1975 eq. 3.26: W = 1/(mu - lambda)",
        ),
        _check(
            "Little's law L = lambda W (M/M/1)",
            "wip_mean",
            q.little_number(0.5, q.mm1_sojourn(0.5, 1.0)),
            [r.wip_mean for r in mm1],
            "Little 1961",
            max_rel_gap_l_vs_lambda_w=max(
                abs(r.wip_mean - r.arrival_rate * r.lead_time_mean) / r.wip_mean for r in mm1
            ),
        ),
        _check(
            "M/M/3 time in system (Erlang C)",
            "lead_time_mean",
            q.mmc_sojourn(2.1, 1.0, 3),
            [r.lead_time_mean for r in results["mmc"]],
            "Erlang 1917; Kleinrock 1975 eq. 3.40",
            erlang_c=q.erlang_c(3, 2.1),
        ),
        _check(
            "M/D/1 time in system (Pollaczek-Khinchine)",
            "lead_time_mean",
            q.md1_sojourn(0.6, 1.0),
            [r.lead_time_mean for r in results["md1"]],
            "Kleinrock 1975 eq. 5.73",
        ),
        _check(
            "Erlang B blocking M/M/3/3",
            "blocked_share",
            q.erlang_b(3, 2.0),
            [r.blocked / r.orders for r in results["erlang_b"]],
            "Erlang 1917",
        ),
    ]
    transit = results["transit"]
    checks.append(
        _check(
            "Orders in transit (M/G/inf, Poisson)",
            "in_transit_mean",
            q.mginf_mean(2.0, 3.0),
            [r.in_transit_mean for r in transit],
            "Palm 1938; Kleinrock 1975 §2.4",
            dispersion_index=sum(r.in_transit_var / r.in_transit_mean for r in transit)
            / len(transit),
        )
    )
    checks.append(
        _check(
            "Orders in system at the end of a 10-day outage (M/M/1)",
            "backlog_at_end",
            q.backlog_after_outage(0.5, 1.0, 10.0),
            [
                sum(d.backlog_at_end for d in r.disruptions) / len(r.disruptions)
                for r in results["outage"]
            ],
            "steady-state L + lambda D",
            time_to_recover_mean=sum(
                d.time_to_recover_days or 0.0 for r in results["outage"] for d in r.disruptions
            )
            / sum(len(r.disruptions) for r in results["outage"]),
        )
    )
    return checks
