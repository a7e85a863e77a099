"""Streaming monitor: same signals as the batch charts and rules, NIST known answers one reading at
a time, persistence round trip, bad input."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nearfab.common.errors import ValidationFailed
from nearfab.monitoring.logic.online import OnlineMonitor, Signal, Update
from nearfab.monitoring.logic.rules import RuleSet, check_rules
from nearfab.monitoring.logic.spc import cusum_chart, ewma_chart, imr_chart

NUMBER = r"-?\d+(?:\.\d+)?"
WE_SIGNALS = {1: Signal.WE1, 2: Signal.WE2, 3: Signal.WE3, 4: Signal.WE4}


def _flagged(updates: list[Update], signal: Signal) -> tuple[int, ...]:
    return tuple(u.index for u in updates if signal in u.signals)


def _stream(seed: int, n: int = 400) -> np.ndarray:
    """Noise around 10 (σ 2) with a small and a large shift, wider spread, a flat run."""
    rng = np.random.default_rng(seed)
    x = 10.0 + 2.0 * rng.standard_normal(n)
    x[100:140] += 1.5
    x[200:230] -= 4.0
    x[300:320] = 10.0 + 6.0 * rng.standard_normal(20)
    x[350:360] = 10.4  # a flat run on one side
    return x


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streaming_gives_the_batch_signals(seed: int, exact: bool) -> None:
    x = _stream(seed)
    centre, sigma, lam, width, k, h = 10.0, 2.0, 0.1, 2.7, 0.5, 4.0
    monitor = OnlineMonitor(centre, sigma, lam=lam, L=width, k=k, h=h, exact_ewma=exact)
    updates = monitor.update_many(x.tolist())

    assert [u.index for u in updates] == list(range(x.size)) and monitor.count == x.size
    found = check_rules(x, center=centre, sigma=sigma, ruleset=RuleSet.WESTERN_ELECTRIC)
    for rule, signal in WE_SIGNALS.items():
        expected = tuple(sorted({v.index for v in found if v.rule == rule}))
        assert _flagged(updates, signal) == expected, rule
    imr = imr_chart(x, mean=centre, sigma=sigma)
    assert _flagged(updates, Signal.MOVING_RANGE) == imr.moving_range.out_of_control
    assert _flagged(updates, Signal.WE1) == imr.individuals.out_of_control
    ewma = ewma_chart(x, target=centre, sigma=sigma, lam=lam, L=width, exact_limits=exact)
    np.testing.assert_allclose([u.ewma for u in updates], ewma.statistic, rtol=0, atol=1e-9)
    assert _flagged(updates, Signal.EWMA) == ewma.out_of_control
    cusum = cusum_chart(x, target=centre, sigma=sigma, k=k, h=h)
    np.testing.assert_allclose([u.cusum_upper for u in updates], cusum.upper, atol=1e-9)
    np.testing.assert_allclose([u.cusum_lower for u in updates], cusum.lower, atol=1e-9)
    assert _flagged(updates, Signal.CUSUM_UPPER) == cusum.upper_signals
    assert _flagged(updates, Signal.CUSUM_LOWER) == cusum.lower_signals
    # The stream is built so that every kind of signal occurs at least once.
    assert {s for u in updates for s in u.signals} == set(Signal)
    if exact:
        np.testing.assert_allclose([u.ewma_ucl for u in updates], ewma.ucl, atol=1e-9)
    else:
        np.testing.assert_allclose([u.ewma_ucl for u in updates], ewma.ucl_asymptotic)


def test_an_update_reports_its_reading() -> None:
    monitor = OnlineMonitor(100.0, 5.0)
    first = monitor.update(100.0)
    assert first.in_control and first.moving_range is None and first.z == 0.0
    second = monitor.update(117.0)
    assert second.index == 1 and second.z == pytest.approx(3.4)
    # MR 17 is under D4 d2 σ = 3.267 × 1.128 × 5 = 18.4: only rule 1 fires.
    assert second.moving_range == pytest.approx(17.0)
    assert second.signals == (Signal.WE1,)
    assert not second.in_control


def test_signals_come_in_a_fixed_order() -> None:
    monitor = OnlineMonitor(0.0, 1.0, lam=0.5, L=1.0, k=0.0, h=0.5)
    update = monitor.update(10.0)
    assert update.signals == (Signal.WE1, Signal.EWMA, Signal.CUSUM_UPPER)
    update = monitor.update(-10.0)
    assert Signal.MOVING_RANGE in update.signals and Signal.CUSUM_LOWER in update.signals


def test_reset_forgets_every_reading() -> None:
    monitor = OnlineMonitor(0.0, 1.0)
    monitor.update_many([2.5, 2.5, 1.5, 1.5, 1.5])
    monitor.reset()
    assert monitor.count == 0
    fresh = OnlineMonitor(0.0, 1.0)
    assert monitor.to_dict() == fresh.to_dict()
    assert monitor.update(2.5) == fresh.update(2.5)


@pytest.mark.parametrize("split", [0, 1, 3, 7, 150])
def test_state_survives_a_json_round_trip(split: int) -> None:
    x = _stream(9).tolist()
    whole = OnlineMonitor(10.0, 2.0, lam=0.3, k=0.25, h=6.0).update_many(x)
    first = OnlineMonitor(10.0, 2.0, lam=0.3, k=0.25, h=6.0)
    head = first.update_many(x[:split])
    saved = json.loads(json.dumps(first.to_dict()))
    restored = OnlineMonitor.from_dict(saved)
    assert restored.to_dict() == first.to_dict()
    assert head + restored.update_many(x[split:]) == whole


def test_monitor_has_slots_only() -> None:
    monitor = OnlineMonitor(0.0, 1.0)
    assert not hasattr(monitor, "__dict__")
    with pytest.raises(AttributeError):
        monitor.extra = 1  # type: ignore[attr-defined]


# --- NIST known answers, one reading at a time -------------------------------------------------


def _section(text: str, number: int) -> str:
    match = re.search(rf"^## {number}\. .*?(?=^## \d+\. |\Z)", text, re.M | re.S)
    assert match
    return match.group(0)


def _after(section: str, label: str, lines: int = 1) -> list[float]:
    rows = section.splitlines()
    start = next(i for i, row in enumerate(rows) if row.startswith(label))
    return [
        float(v) for row in rows[start + 1 : start + 1 + lines] for v in re.findall(NUMBER, row)
    ]


@pytest.fixture(scope="module")
def nist(shared_data: Path) -> str:
    return (shared_data / "spc" / "nist_spc_examples.md").read_text(encoding="utf-8")


@pytest.mark.shared_data
def test_nist_cusum_signals_first_at_t_14_online(nist: str) -> None:
    sec = _section(nist, 2)
    data = _after(sec, "Data (20 subgroup means", lines=2)
    sigma_xbar = float(re.findall(rf"sigma_xbar = .*? = ({NUMBER})", sec)[0])
    h = float(re.findall(rf"h = ({NUMBER})", sec)[0])
    first_t = int(re.findall(r"\*\*t = (\d+)\*\*", sec)[0])
    monitor = OnlineMonitor(325.0, sigma_xbar, k=0.5, h=h / sigma_xbar)
    updates = monitor.update_many(data)
    flagged = _flagged(updates, Signal.CUSUM_UPPER)
    assert flagged[0] + 1 == first_t == 14
    assert flagged == tuple(range(13, 20))
    assert _flagged(updates, Signal.CUSUM_LOWER) == ()


@pytest.mark.shared_data
def test_nist_ewma_series_online(nist: str) -> None:
    sec = _section(nist, 1)
    data = _after(sec, "Data (20 points")
    published = _after(sec, "Published EWMA series")
    target, s = published[0], float(re.findall(rf"s = ({NUMBER})", sec)[0])
    monitor = OnlineMonitor(target, s, lam=0.3, L=3.0)
    updates = monitor.update_many(data)
    np.testing.assert_allclose([u.ewma for u in updates], published[1:], atol=0.005 + 1e-9)
    assert _flagged(updates, Signal.EWMA) == ()
    assert updates[-1].ewma_ucl == pytest.approx(
        float(re.findall(rf"i=20: {NUMBER} / ({NUMBER})", sec)[0]), abs=1e-4
    )


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("reading", [math.nan, math.inf, -math.inf])
def test_a_non_finite_reading_is_refused_and_leaves_the_state(reading: float) -> None:
    monitor = OnlineMonitor(0.0, 1.0)
    monitor.update(0.5)
    before = monitor.to_dict()
    with pytest.raises(ValidationFailed) as info:
        monitor.update(reading)
    assert info.value.field == "value"
    assert monitor.to_dict() == before


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"center": math.nan}, "center"),
        ({"lam": 0.0}, "lam"),
        ({"lam": 1.1}, "lam"),
        ({"L": 0.0}, "L"),
        ({"k": -0.5}, "k"),
        ({"h": 0.0}, "h"),
    ],
)
def test_bad_parameters_name_the_field(kwargs: dict[str, float], field: str) -> None:
    args: dict[str, Any] = {"center": 0.0, "sigma": 1.0, **kwargs}
    with pytest.raises(ValidationFailed) as info:
        OnlineMonitor(**args)
    assert info.value.field == field


def _saved() -> dict[str, Any]:
    monitor = OnlineMonitor(0.0, 1.0)
    monitor.update_many([0.5, 1.5, -2.5])
    return monitor.to_dict()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"version": 2}, "version"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": "1.0"}, "sigma"),
        ({"ewma": True}, "ewma"),
        ({"ewma": math.nan}, "ewma"),
        ({"count": -1}, "count"),
        ({"count": 1.5}, "count"),
        ({"last": None}, "last"),
        ({"decay": 1.5}, "decay"),
        ({"cusum_upper": -0.1}, "cusum_upper"),
        ({"run_above": "3"}, "run_above"),
        ({"zones": [0, 0, 0, 0]}, "zones"),
        ({"zones": [0, 0, 0, 0, 4]}, "zones"),
        ({"zones": "00000"}, "zones"),
        ({"exact_ewma": "yes"}, "exact_ewma"),
    ],
)
def test_bad_saved_state_is_refused(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        OnlineMonitor.from_dict({**_saved(), **change})
    assert info.value.field == field


def test_a_missing_state_field_is_named() -> None:
    saved = _saved()
    del saved["cusum_lower"]
    with pytest.raises(ValidationFailed) as info:
        OnlineMonitor.from_dict(saved)
    assert info.value.field == "cusum_lower"
