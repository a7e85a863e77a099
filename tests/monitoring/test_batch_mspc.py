"""Batch-evolution MSPC (multiway PCA, Nomikos & MacGregor 1995) against independent references:
the PCA against an eigendecomposition of the covariance matrix written out here, the limits
against scipy.stats with the formulas written out here, online filling against the filled
vectors built by hand, and false-alarm and detection rates on simulated runs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2, f
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import NotFound, Refused, ValidationFailed
from nearfab.monitoring.logic.batch_mspc import BatchModel, align_run, time_grid
from nearfab.production import Fault

K, J = 20, 4
GRID = np.linspace(0.0, 96.0, K)  # e.g. hours of a four-day run
NAMES = ["temperature", "ph", "substrate", "density"]
_tk = np.linspace(0.0, 1.0, K)
MU = np.stack([37 + 0 * _tk, 7.2 - 0.3 * _tk, 10 + 50 * _tk**2, 5 * np.exp(2 * _tk)], axis=1)
F1 = np.stack([0 * _tk + 0.1, -0.05 * _tk, 5 * _tk, 0.5 * np.exp(2 * _tk)], axis=1)
F2 = np.stack([0.1 * np.sin(3 * _tk), 0.05 + 0 * _tk, -2 * _tk, 0.2 + 0 * _tk], axis=1)
NOISE = np.array([0.05, 0.02, 1.0, 0.3])


def simulate(rng: np.random.Generator, n: int) -> np.ndarray:
    """n healthy runs (n × K × J): two latent batch-to-batch factors plus measurement noise."""
    t = rng.normal(size=(n, 2))
    return (
        MU
        + t[:, 0, None, None] * F1
        + t[:, 1, None, None] * F2
        + rng.normal(size=(n, K, J)) * NOISE
    )


@pytest.fixture
def training() -> np.ndarray:
    return simulate(np.random.default_rng(42), 30)


# --- the PCA part -------------------------------------------------------------------------


def test_loadings_and_score_variances_match_the_covariance_eigendecomposition(
    training: np.ndarray,
) -> None:
    model = BatchModel.fit(training, GRID, NAMES, components=3)
    # batch-wise unfolding (time-major) and autoscaling per column, written out
    X = training.reshape(30, K * J)
    Z = (X - X.mean(axis=0)) / X.std(axis=0, ddof=1)
    assert np.all(training.std(axis=0, ddof=1) >= 0.1 * np.median(training.std(0, ddof=1), 0))
    cov = Z.T @ Z / 29
    values, vectors = np.linalg.eigh(cov)
    top = np.argsort(values)[::-1][:3]
    np.testing.assert_allclose(model.score_variances, values[top], rtol=1e-8)
    for a, idx in enumerate(top):
        # a loading is defined up to its sign
        assert abs(abs(float(model.loadings[:, a] @ vectors[:, idx])) - 1.0) < 1e-8
    assert model.explained == pytest.approx(values[top].sum() / values.sum())


def test_at_the_last_point_both_fills_give_the_complete_batch_projection(
    training: np.ndarray,
) -> None:
    new = simulate(np.random.default_rng(1), 5)
    X = training.reshape(30, K * J)
    mean, sd = X.mean(axis=0), X.std(axis=0, ddof=1)
    values, vectors = np.linalg.eigh(np.cov(((X - mean) / sd).T))
    top = np.argsort(values)[::-1][:2]
    z = (new.reshape(5, K * J) - mean) / sd
    t = z @ vectors[:, top]
    expected_t2 = np.sum(t**2 / values[top], axis=1)
    residual = z - t @ vectors[:, top].T
    expected_spe_last = np.sum(residual[:, -J:] ** 2, axis=1)  # the last time block
    for fill in ("zero", "current"):
        model = BatchModel.fit(training, GRID, NAMES, components=2, fill=fill)
        t2, spe = model.score_many(new)
        np.testing.assert_allclose(t2[:, -1], expected_t2, rtol=1e-8)
        np.testing.assert_allclose(spe[:, -1], expected_spe_last, rtol=1e-8)


@pytest.mark.parametrize("fill", ["zero", "current"])
def test_online_scores_fill_the_future_as_stated(training: np.ndarray, fill: str) -> None:
    model = BatchModel.fit(training, GRID, NAMES, components=2, fill=fill)
    run = simulate(np.random.default_rng(3), 1)[0]
    z = (run - model.mean) / model.scale
    P = model.loadings
    t2, spe = model.score_many(run[None])
    for k in (0, 4, 11):
        filled = np.zeros((K, J))
        filled[: k + 1] = z[: k + 1]
        if fill == "current":
            filled[k + 1 :] = z[k]  # the present deviation persists
        t = filled.reshape(-1) @ P
        assert t2[0, k] == pytest.approx(float(np.sum(t**2 / model.score_variances)))
        e = z[k] - (P @ t).reshape(K, J)[k]
        assert spe[0, k] == pytest.approx(float(e @ e))


def test_a_running_batch_is_scored_only_on_what_has_arrived(training: np.ndarray) -> None:
    model = BatchModel.fit(training, GRID, NAMES, components=2)
    run = simulate(np.random.default_rng(4), 1)[0]
    partial = run.copy()
    partial[8:] = np.nan  # 8 grid points reached
    partial[8:, 0] = 99.0  # a value past the reached points never counts
    scores = model.monitor(partial)
    t2, spe = model.score_many(run[None])
    assert len(scores.t2) == 8
    np.testing.assert_allclose(scores.t2, t2[0, :8], rtol=1e-10)
    np.testing.assert_allclose(scores.spe, spe[0, :8], rtol=1e-10)
    np.testing.assert_allclose(scores.spe_contributions.sum(axis=1), scores.spe, rtol=1e-10)
    np.testing.assert_allclose(scores.times, GRID[:8])


# --- the limits ---------------------------------------------------------------------------


def test_t2_limit_is_the_f_limit_for_a_new_batch(training: np.ndarray) -> None:
    model = BatchModel.fit(training, GRID, NAMES, components=3, alpha=0.99)
    a, n = 3, 30
    assert model.t2_limit == pytest.approx(a * (n * n - 1) / (n * (n - a)) * f.ppf(0.99, a, n - a))
    # I = 30, A = 3: F_0.99(3, 27) = 4.60 (tables), limit 3·899/810·4.60 ≈ 15.3
    assert model.t2_limit == pytest.approx(15.32, abs=0.05)


def test_spe_limits_are_box_weighted_chi_square_of_leave_one_out_residuals(
    training: np.ndarray,
) -> None:
    model = BatchModel.fit(training, GRID, NAMES, components=2, alpha=0.99, window=0)
    # the reference SPE of run 0 at grid point 5: the model of the other 29 runs, zero fill
    rest = np.delete(training, 0, axis=0).reshape(29, K * J)
    mean, sd = rest.mean(axis=0), rest.std(axis=0, ddof=1)
    values, vectors = np.linalg.eigh(np.cov(((rest - mean) / sd).T))
    P = vectors[:, np.argsort(values)[::-1][:2]]
    z = (training[0].reshape(-1) - mean) / sd
    filled = z.copy()
    filled[6 * J :] = 0.0
    residual = (z - P @ (P.T @ filled)).reshape(K, J)[5]
    ref0 = float(residual @ residual)
    # the moments at point 5 include run 0's reference SPE: remove it and compare the rest
    # against the limit's own mean and variance through the Box formulas
    m, v = model.spe_mean[5], model.spe_var[5]
    assert m > 0 and v > 0
    g, h = v / (2 * m), 2 * m * m / v
    assert model.spe_limits[5] == pytest.approx(g * chi2.ppf(0.99, h))
    # and the leave-one-out value enters the mean: recompute the mean of all 30 by hand
    refs = []
    for i in range(30):
        rest = np.delete(training, i, axis=0).reshape(29, K * J)
        mean, sd = rest.mean(axis=0), rest.std(axis=0, ddof=1)
        values, vectors = np.linalg.eigh(np.cov(((rest - mean) / sd).T))
        P = vectors[:, np.argsort(values)[::-1][:2]]
        z = (training[i].reshape(-1) - mean) / sd
        filled = z.copy()
        filled[6 * J :] = 0.0
        e = (z - P @ (P.T @ filled)).reshape(K, J)[5]
        refs.append(float(e @ e))
    assert refs[0] == pytest.approx(ref0)
    assert m == pytest.approx(np.mean(refs))
    assert v == pytest.approx(np.var(refs, ddof=1))


# --- false alarms and detection ------------------------------------------------------------


@pytest.mark.parametrize("fill", ["zero", "current"])
def test_healthy_runs_alarm_about_one_point_in_a_hundred_at_99_percent_limits(
    fill: str,
) -> None:
    """R independent training sets of 30 runs, each judging 100 new healthy runs at all 20
    points. Runs judged by one model share its limits, so their alarms are not independent and
    a binomial tolerance over all points would be too narrow; the R per-model rates are
    independent, and their mean lies within 3.5 standard errors of the expected rate."""
    rng = np.random.default_rng(2024)
    R = 60
    spe_rates, t2_rates, t2_last = [], [], []
    for _ in range(R):
        model = BatchModel.fit(simulate(rng, 30), GRID, NAMES, components=2, fill=fill)
        t2, spe = model.score_many(simulate(rng, 100))
        spe_rates.append(np.mean(spe > model.spe_limits))
        t2_rates.append(np.mean(t2 > model.t2_limit))
        t2_last.append(np.mean(t2[:, -1] > model.t2_limit))

    def within(rates: list[float], expected: float) -> bool:
        r = np.asarray(rates)
        se = r.std(ddof=1) / np.sqrt(R)
        # the standard error can be no smaller than a binomial one over the R·100 runs
        se = max(se, np.sqrt(expected * (1 - expected) / (R * 100)))
        return bool(abs(r.mean() - expected) < 3.5 * se)

    assert within(spe_rates, 0.01), np.mean(spe_rates)
    # at the last point the scores are the complete batch's: the F limit holds
    assert within(t2_last, 0.01), np.mean(t2_last)
    if fill == "zero":
        # the unknown future counted as average shrinks the early scores: fewer T² alarms
        assert np.mean(t2_rates) < 0.01


def test_faults_are_detected_after_they_start_and_not_before() -> None:
    rng = np.random.default_rng(7)
    model = BatchModel.fit(simulate(rng, 30), GRID, NAMES, components=2)
    good = simulate(rng, 200)
    # a drift of the substrate alone from point 10 on (breaks the correlation: SPE)
    drift = good.copy()
    drift[:, 10:, 2] += 4.0 * np.arange(1, K - 9)
    # a run far along the first latent factor (the structure holds: T²)
    far = MU + 6.0 * F1 + rng.normal(size=(200, K, J)) * NOISE
    t2_good, spe_good = model.score_many(good)
    t2_drift, spe_drift = model.score_many(drift)
    t2_far, _ = model.score_many(far)
    alarm_drift = (t2_drift > model.t2_limit) | (spe_drift > model.spe_limits)
    alarm_good = (t2_good > model.t2_limit) | (spe_good > model.spe_limits)
    # before the fault the drifting runs are the healthy runs: identical alarms
    np.testing.assert_array_equal(alarm_drift[:, :10], alarm_good[:, :10])
    # within 3 points of its start (drift of 12, 4 noise sd) nearly every run alarms on SPE
    assert np.mean(np.any(spe_drift[:, 10:13] > model.spe_limits[10:13], axis=1)) > 0.95
    assert np.mean(np.any(t2_far > model.t2_limit, axis=1)) > 0.95
    # a healthy run alarms at some point of its 20 with probability well under 1 − 0.99^40
    assert np.mean(np.any(alarm_good, axis=1)) < 1 - 0.99**40


# --- alignment ------------------------------------------------------------------------------


def test_alignment_interpolates_between_readings_and_stops_at_the_last() -> None:
    grid = time_grid(10.0, 6)  # 0, 2, 4, 6, 8, 10
    run = {
        "a": [(0.5, 1.0), (3.0, 2.0), (7.0, 6.0)],
        "b": [(0.0, 10.0), (10.0, 20.0)],
    }
    out = align_run(run, ["a", "b"], grid)
    # a: held at 1.0 before its first reading; 1 + (2 − 0.5)/2.5 = 1.6; 2 + (4 − 3)/4·4 = 3.0;
    # 2 + 3/4·4 = 5.0; past 7 not reached yet
    np.testing.assert_allclose(out[:4, 0], [1.0, 1.6, 3.0, 5.0])
    assert np.all(np.isnan(out[4:, 0]))
    np.testing.assert_allclose(out[:, 1], [10, 12, 14, 16, 18, 20])


def test_alignment_on_a_maturity_variable() -> None:
    grid = time_grid(4.0, 5)  # maturity 0 … 4
    # maturity rises 0 → 4 at uneven speed; the other variable is sampled at the same times
    run = {
        "maturity": [(0.0, 0.0), (1.0, 2.0), (5.0, 4.0)],
        "x": [(0.0, 100.0), (1.0, 110.0), (5.0, 130.0)],
    }
    out = align_run(run, ["x"], grid, clock="maturity")
    np.testing.assert_allclose(out[:, 0], [100, 105, 110, 120, 130])


# --- refusals -------------------------------------------------------------------------------


def test_bad_training_data_is_refused_with_the_field(training: np.ndarray) -> None:
    cases = [
        ({"X": training[:4]}, "runs"),
        ({"components": 29}, "components"),
        ({"fill": "future"}, "fill"),
        ({"alpha": 1.2}, "alpha"),
    ]
    for change, field in cases:
        args = {"X": training, "components": 2, "fill": "zero", "alpha": 0.99} | change
        X = args.pop("X")
        with pytest.raises(ValidationFailed) as err:
            BatchModel.fit(X, GRID, NAMES, **args)
        assert err.value.field == field
    flat = training.copy()
    flat[:, :, 1] = 7.0
    with pytest.raises(ValidationFailed, match="did not vary") as err:
        BatchModel.fit(flat, GRID, NAMES, components=2)
    assert err.value.field == "runs"
    gap = training.copy()
    gap[3, 15:, 0] = np.nan
    with pytest.raises(ValidationFailed, match="cover the whole grid"):
        BatchModel.fit(gap, GRID, NAMES, components=2)


def test_a_model_survives_its_json_form(training: np.ndarray) -> None:
    import json

    model = BatchModel.fit(training, GRID, NAMES, components=2, fill="current")
    again = BatchModel.from_dict(json.loads(json.dumps(model.to_dict())))
    run = simulate(np.random.default_rng(9), 3)
    for a, b in zip(model.score_many(run), again.score_many(run), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert again.fill.value == "current"


# --- the service: a model of released runs, scoring a running batch, alarms that hold it ------

seeded = fh.seeded
PRODUCT = "MF-HC-PRINTLET"
MACHINE_TYPE = "tablet_printer"


def test_a_batch_model_from_released_runs_holds_a_batch_whose_trajectory_leaves_it(
    seeded: App,
) -> None:
    """Six released runs of the demo printer train a batch model; with the scorer watching
    telemetry as it arrives, a run whose nozzle clogs leaves the model's SPE limits, and the
    alarm holds its batch until it is dispositioned."""
    app = seeded
    runs = []
    for _ in range(6):
        batch_id = fh.make_batch(app)
        fh.release(app, batch_id)
        runs.append(fh.batch(app, batch_id).job_id)
    admin, qp = fh.actor(app, "admin"), fh.actor(app, "qp")
    with app.uow() as uow, pytest.raises(ValidationFailed) as err:
        app.monitoring.train(
            uow,
            admin,
            kind="batch",
            master_file_code=PRODUCT,
            machine_type=MACHINE_TYPE,
            runs=runs[:4],
        )
    assert err.value.field == "runs"  # fewer than 5 runs
    with app.uow() as uow:
        model = app.monitoring.train(
            uow,
            admin,
            kind="batch",
            master_file_code=PRODUCT,
            machine_type=MACHINE_TYPE,
            components=2,
            grid_points=30,
        )
        model_id, params, metrics = model.id, model.params, list(model.metrics)
    assert params["batch"]["batches"] == 6 and len(params["batch"]["grid"]) == 30
    assert metrics == params["batch"]["variables"] and len(metrics) >= 2
    with app.uow() as uow, pytest.raises(NotFound):  # a draft scores nothing
        app.monitoring.batch_trajectory(uow, runs[0])
    with app.uow() as uow:
        app.monitoring.approve(uow, qp, model_id, password=fh.TEST_PASSWORD, meaning="QP approval")

    # the scorer watches telemetry as it arrives (bootstrap wires the same two observers)
    app.ingestor.on_points(app.monitoring.on_batch_points)
    app.ingestor.on_run_end(app.monitoring.on_batch_run_end)
    printer = fh.machine(app, fh.machine_id(app, "GSTT printer A"))
    app.fleet.inject_fault(printer, Fault("nozzle_clog", severity=0.5, from_unit=2))
    batch_id = fh.make_batch(app)
    run = fh.batch(app, batch_id).job_id
    with app.uow() as uow:
        alarms = app.monitoring.alarms(uow, batch_id=batch_id)
        _, scores, _ = app.monitoring.batch_trajectory(uow, run)
    spe = next(a for a in alarms if a.source == "batch_mspc" and a.rule == "spe")
    beyond = np.flatnonzero(scores.spe > scores.spe_limits)
    assert spe.model_id == model_id and spe.run == run and spe.status == "open"
    assert spe.count == beyond.size > 0
    # the alarm shows the point furthest beyond its limit
    assert spe.value / spe.limit == pytest.approx(float(np.max(scores.spe / scores.spe_limits)))
    assert "extrusion_pressure_kpa" in spe.message  # the residual points at the clog
    # scoring again updates the one alarm per statistic, it does not add another
    with app.uow() as uow:
        app.monitoring.check_batch_run(uow, run)
    with app.uow() as uow:
        again = app.monitoring.alarms(uow, batch_id=batch_id)
        blockers = app.monitoring.release_blockers(uow, batch_id)
    assert sorted(a.id for a in again) == sorted(a.id for a in alarms)
    assert any("batch trajectory" in b for b in blockers)
    with pytest.raises(Refused) as refused:
        fh.release(app, batch_id, reason="QP judgement")
    assert refused.value.code == "open_alarms"
    for alarm in again:
        with app.uow() as uow:
            app.monitoring.close(
                uow, qp, alarm.id, disposition="deviation_raised", note="clog; deviation opened"
            )
    fh.release(app, batch_id, reason="deviation closed, units within specification")
    assert fh.batch(app, batch_id).status == "released"
