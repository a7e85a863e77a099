"""PCA monitoring (T² / SPE) on synthetic data whose answer is known, and the matrix reader.

Synthetic process: 8 variables driven by 3 latent factors plus independent noise, so a
3-component model leaves isotropic noise in the residual, where SPE/σ² is exactly χ²₅.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from nearfab.common.errors import ValidationFailed
from nearfab.monitoring.logic.matrix import parse_matrix, parse_table, read_matrix, read_table
from nearfab.monitoring.logic.mspc import (
    PcaModel,
    ewma,
    fingerprint,
    parallel_analysis,
    q_limit,
    t2_limit,
)

M = 8
LOADINGS = np.array(
    [
        [1.0, 0.8, 0.6, 0.0, 0.2, -0.5, 0.3, 0.9],
        [0.0, 0.5, -0.7, 1.0, 0.4, 0.3, -0.6, 0.1],
        [0.3, -0.2, 0.1, 0.4, -1.0, 0.7, 0.5, -0.3],
    ]
)


def process(n: int, seed: int, noise: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((n, 3)) * np.array([3.0, 2.0, 1.5])
    X: np.ndarray = 10.0 + scores @ LOADINGS + noise * rng.standard_normal((n, M))
    return X


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    return process(2000, seed=1)


@pytest.fixture(scope="module")
def model(train: np.ndarray) -> PcaModel:
    return PcaModel.fit(train, 3)


def naive_scores(model: PcaModel, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Textbook T² and SPE: z = (x − mean)/sd, t = zP, T² = Σ t²/λ, SPE = ‖z − tPᵀ‖²."""
    Xa = np.hstack([X[model.lags - j : len(X) - j] for j in range(model.lags + 1)])
    Z = (Xa - model.mean) / model.scale
    T = Z @ model.loadings
    t2 = np.sum(T**2 / model.eigenvalues[: model.components], axis=1)
    E = Z - T @ model.loadings.T
    return t2, np.sum(E**2, axis=1)


# --- limits ------------------------------------------------------------------------------------
def test_t2_limit_is_the_phase_two_f_limit() -> None:
    a, n = 4, 120
    expected = a * (n**2 - 1) / (n * (n - a)) * stats.f.ppf(0.99, a, n - a)
    assert t2_limit(a, n, 0.99) == pytest.approx(expected, rel=1e-12)
    assert t2_limit(a, n, 0.95) < t2_limit(a, n, 0.99)


def test_q_limit_is_jackson_mudholkar() -> None:
    lam = np.array([0.9, 0.5, 0.3, 0.2, 0.05])
    th1, th2, th3 = lam.sum(), (lam**2).sum(), (lam**3).sum()
    h0 = 1 - 2 * th1 * th3 / (3 * th2**2)
    c = stats.norm.ppf(0.99)
    expected = th1 * (c * math.sqrt(2 * th2 * h0**2) / th1 + 1 + th2 * h0 * (h0 - 1) / th1**2) ** (
        1 / h0
    )
    assert q_limit(lam, 0.99) == pytest.approx(expected, rel=1e-12)


def test_q_limit_matches_the_exact_chi_square_for_equal_eigenvalues() -> None:
    # k equal residual eigenvalues λ: Q = λ·χ²_k exactly; Jackson–Mudholkar is close to it
    for k in (5, 20, 40):
        exact = 0.3 * stats.chi2.ppf(0.99, k)
        assert q_limit(np.full(k, 0.3), 0.99) == pytest.approx(exact, rel=0.02)


def test_q_limit_refuses_no_residual_variance() -> None:
    with pytest.raises(ValidationFailed) as err:
        q_limit(np.zeros(3), 0.99)
    assert err.value.field == "components"


def test_fitted_limits_come_from_the_correlation_eigenvalues(
    model: PcaModel, train: np.ndarray
) -> None:
    eig = np.sort(np.linalg.eigvalsh(np.corrcoef(train, rowvar=False)))[::-1]
    np.testing.assert_allclose(model.eigenvalues, eig, rtol=1e-9, atol=1e-12)
    assert model.t2_limit == pytest.approx(t2_limit(3, 2000, 0.99))
    assert model.spe_limit == pytest.approx(q_limit(eig[3:], 0.99))
    assert model.n_train == 2000 and model.components == 3 and model.n_variables == M


def test_new_in_control_data_alarms_about_one_percent(model: PcaModel) -> None:
    t2, spe = model.score(process(40_000, seed=2))
    assert np.mean(t2 > model.t2_limit) == pytest.approx(0.01, abs=0.003)
    assert np.mean(spe > model.spe_limit) == pytest.approx(0.01, abs=0.003)


# --- scoring -------------------------------------------------------------------------------------
def test_batched_scores_match_the_textbook_formulas(model: PcaModel) -> None:
    X = process(5000, seed=3)  # more than one 2048-row block
    t2, spe = model.score(X)
    nt2, nspe = naive_scores(model, X)
    np.testing.assert_allclose(t2, nt2, rtol=1e-9)
    np.testing.assert_allclose(spe, nspe, rtol=1e-9)
    for i in (0, 2047, 2048, 4999):
        one = model.score_one(X[i])
        assert one == pytest.approx((t2[i], spe[i]), rel=1e-9)


def test_dynamic_model_scores_lagged_windows(train: np.ndarray) -> None:
    dyn = PcaModel.fit(train, 6, lags=2)
    assert dyn.loadings.shape == (3 * M, 6) and dyn.n_train == 1998
    X = process(3000, seed=4)
    t2, spe = dyn.score(X)
    assert np.isnan(t2[:2]).all() and np.isnan(spe[:2]).all()
    nt2, nspe = naive_scores(dyn, X)
    np.testing.assert_allclose(t2[2:], nt2, rtol=1e-9)
    np.testing.assert_allclose(spe[2:], nspe, rtol=1e-9)
    assert dyn.score_one(X[2500:2503]) == pytest.approx((t2[2502], spe[2502]), rel=1e-9)
    with pytest.raises(ValidationFailed, match=r"shape \(3, 8\)"):
        dyn.score_one(X[0])


def test_score_refuses_wrong_width_and_non_finite(model: PcaModel) -> None:
    X = process(10, seed=5)
    with pytest.raises(ValidationFailed, match="7 variables per sample, the model has 8"):
        model.score(X[:, :7])
    X[6, 2] = np.nan
    with pytest.raises(ValidationFailed, match="sample 6 is not finite"):
        model.score(X)
    with pytest.raises(ValidationFailed):
        model.score_one(X[6])


# --- contributions ------------------------------------------------------------------------------
@pytest.mark.parametrize("lags", [0, 2])
def test_contributions_sum_to_the_statistics(train: np.ndarray, lags: int) -> None:
    m = PcaModel.fit(train, 3 * (lags + 1), lags=lags)
    X = process(20, seed=6)
    t2, spe = m.score(X)
    for i in range(lags, 20):
        c = m.contributions(X[i - lags : i + 1] if lags else X[i])
        assert c.t2.shape == (M,) and c.spe.shape == (M,)
        assert c.t2.sum() == pytest.approx(t2[i], rel=1e-9)
        assert c.spe.sum() == pytest.approx(spe[i], rel=1e-9)
        assert (c.spe >= 0).all()


def test_a_shifted_variable_gets_the_biggest_contribution(model: PcaModel) -> None:
    x = process(1, seed=7)[0]
    for j in range(M):
        bad = x.copy()
        bad[j] += 8 * model.scale[j]
        _, spe = model.score_one(bad)
        assert spe > model.spe_limit
        c = model.contributions(bad)
        assert c.top("spe", 1)[0][0] == f"x{j + 1}"
        assert int(np.argmax(c.t2)) == j


def test_contributions_use_variable_names(train: np.ndarray) -> None:
    names = [f"XMEAS({i})" for i in range(1, M + 1)]
    m = PcaModel.fit(train, 3, variable_names=names)
    bad = train[0].copy()
    bad[4] += 10 * m.scale[4]
    assert m.contributions(bad).top("spe", 2)[0][0] == "XMEAS(5)"


# --- fitting choices and refusals ---------------------------------------------------------------
def test_components_by_cumulative_variance(train: np.ndarray) -> None:
    eig = np.sort(np.linalg.eigvalsh(np.corrcoef(train, rowvar=False)))[::-1]
    share = np.cumsum(eig) / eig.sum()
    m = PcaModel.fit(train, cumulative_variance=0.9)
    assert share[m.components - 1] >= 0.9 > share[m.components - 2]
    assert m.explained_variance == pytest.approx(share[m.components - 1])


def test_parallel_analysis_finds_the_three_factors(train: np.ndarray) -> None:
    assert parallel_analysis(train, reps=20) == 3


def test_zero_variance_column_is_refused_by_name(train: np.ndarray) -> None:
    X = train.copy()
    X[:, 5] = 4.2
    with pytest.raises(ValidationFailed, match=r"column 6 has zero variance") as err:
        PcaModel.fit(X, 3)
    assert err.value.field == "X"
    names = [f"v{j}" for j in range(M)]
    with pytest.raises(ValidationFailed, match=r"column 6 \(v5\) has zero variance"):
        PcaModel.fit(X, 3, variable_names=names)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"components": 0}, "components"),
        ({"components": 8}, "components"),
        ({"components": 3, "alpha": 1.0}, "alpha"),
        ({"components": 3, "lags": -1}, "lags"),
        ({}, "components"),
        ({"components": 3, "cumulative_variance": 0.9}, "components"),
        ({"cumulative_variance": 1.5}, "cumulative_variance"),
        ({"components": 3, "ewma_lambda": 0.0}, "ewma_lambda"),
        ({"components": 3, "ewma_lambda": 0.2, "folds": 1}, "folds"),
        ({"components": 3, "variable_names": ["a"]}, "variable_names"),
    ],
)
def test_bad_fit_arguments_name_the_field(
    train: np.ndarray, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationFailed) as err:
        PcaModel.fit(train[:200], **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_non_finite_training_sample_is_named(train: np.ndarray) -> None:
    X = train[:100].copy()
    X[17, 0] = np.inf
    with pytest.raises(ValidationFailed, match="sample 17"):
        PcaModel.fit(X, 3)


# --- EWMA improvement and online scoring --------------------------------------------------------
def test_ewma_matches_its_recursion() -> None:
    x = np.array([1.0, 4.0, 2.0, 8.0])
    z, expected = 3.0, []
    for v in x:
        z = 0.25 * v + 0.75 * z
        expected.append(z)
    np.testing.assert_allclose(ewma(x, 0.25, 3.0), expected)


def test_ewma_rule_is_calibrated_on_training_data_only(train: np.ndarray) -> None:
    m = PcaModel.fit(train, 3, ewma_lambda=0.2)
    again = PcaModel.fit(train, 3, ewma_lambda=0.2)
    assert m.ewma is not None and m.ewma == again.ewma
    assert m.ewma.level == pytest.approx(0.995) and m.ewma.folds == 5
    # smoothing shrinks the spread: EWMA limits sit between the mean and the raw limits
    assert m.ewma.t2_start < m.ewma.t2_limit < m.t2_limit
    assert m.ewma.spe_start < m.ewma.spe_limit < m.spe_limit
    # new in-control data: the "EWMA-T² or EWMA-SPE" alarm stays rare
    assert np.mean(m.monitor(process(20_000, seed=8)).alarm) < 0.03


def test_ewma_catches_a_small_sustained_shift_plain_pca_mostly_misses(train: np.ndarray) -> None:
    plain = PcaModel.fit(train, 3)
    smooth = PcaModel.fit(train, 3, ewma_lambda=0.2)
    X = process(400, seed=9)
    X[100:, 2] += 0.8  # step of 0.35 sd in one variable (2.7 × its 0.3 independent noise)
    rate_plain = plain.monitor(X).alarm[100:].mean()
    rate_smooth = smooth.monitor(X).alarm[100:].mean()
    assert rate_plain < 0.3 and rate_smooth > 0.6


def test_online_monitor_reproduces_batched_monitoring(train: np.ndarray) -> None:
    m = PcaModel.fit(train, 6, lags=2, ewma_lambda=0.2)
    X = process(300, seed=10)
    X[150:, 1] += 3 * m.scale[1]
    batch = m.monitor(X)
    assert batch.basis == "ewma(t2)|ewma(spe)" and batch.warmup == 2
    online = m.online()
    for i, row in enumerate(X):
        r = online.update(row)
        assert r.alarm == bool(batch.alarm[i])
        if i < 2:
            assert math.isnan(r.t2) and r.t2_ewma is None
        else:
            assert (r.t2, r.spe) == pytest.approx((batch.t2[i], batch.spe[i]), rel=1e-9)
            assert batch.t2_ewma is not None and batch.spe_ewma is not None
            assert r.t2_ewma == pytest.approx(batch.t2_ewma[i], rel=1e-9)
            assert r.spe_ewma == pytest.approx(batch.spe_ewma[i], rel=1e-9)
    assert batch.alarm[200:].all()


def test_plain_monitoring_alarms_on_either_statistic(model: PcaModel) -> None:
    X = process(50, seed=11)
    result = model.monitor(X)
    t2, spe = model.score(X)
    assert result.basis == "t2|spe" and result.t2_ewma is None
    np.testing.assert_array_equal(result.alarm, (t2 > model.t2_limit) | (spe > model.spe_limit))
    online = model.online()
    assert [online.update(x).alarm for x in X] == result.alarm.tolist()


# --- storage ------------------------------------------------------------------------------------
def test_fingerprint_is_sha256_of_the_training_bytes(train: np.ndarray, model: PcaModel) -> None:
    assert model.fingerprint == hashlib.sha256(train.astype("<f8").tobytes()).hexdigest()
    assert fingerprint(train) == model.fingerprint
    assert fingerprint(train[:-1]) != model.fingerprint


@pytest.mark.parametrize("options", [{}, {"lags": 1, "ewma_lambda": 0.3}])
def test_round_trip_through_json(train: np.ndarray, options: dict[str, float]) -> None:
    names = [f"v{j}" for j in range(M)]
    m = PcaModel.fit(train, 4, variable_names=names, **options)  # type: ignore[arg-type]
    doc = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert doc["format_version"] == 1 and doc["training_fingerprint"]["value"] == m.fingerprint
    back = PcaModel.from_dict(doc)
    assert back.to_dict() == m.to_dict()
    X = process(100, seed=12)
    r1, r2 = m.monitor(X), back.monitor(X)
    np.testing.assert_array_equal(r1.t2, r2.t2)
    np.testing.assert_array_equal(r1.alarm, r2.alarm)
    assert back.names == tuple(names) and back.ewma == m.ewma


def test_from_dict_refuses_altered_foreign_and_newer_models(model: PcaModel) -> None:
    doc = model.to_dict()
    tampered = json.loads(json.dumps(doc))
    tampered["limits"]["spe"] *= 2
    with pytest.raises(ValidationFailed, match="does not match its sha256"):
        PcaModel.from_dict(tampered)
    with pytest.raises(ValidationFailed, match=r"not a nearfab\.mspc\.pca model"):
        PcaModel.from_dict({"format": "other"})
    newer = dict(doc, format_version=99)
    with pytest.raises(ValidationFailed, match="format_version 99 is not supported"):
        PcaModel.from_dict(newer)
    broken = {k: v for k, v in doc.items() if k not in ("mean", "sha256")}
    with pytest.raises(ValidationFailed, match="malformed") as err:
        PcaModel.from_dict(broken)
    assert err.value.field == "model"


def test_model_arrays_are_read_only(model: PcaModel) -> None:
    with pytest.raises(ValueError):
        model.mean[0] = 1.0


# --- matrix reader ------------------------------------------------------------------------------
def test_reads_whitespace_comma_comments_and_header(tmp_path: Path) -> None:
    assert parse_matrix("1 2 3\n\n# note\n4\t5   6\n").tolist() == [[1, 2, 3], [4, 5, 6]]
    assert parse_matrix("1, 2,3\n4,5.5e0 , -6\n").tolist() == [[1, 2, 3], [4, 5.5, -6]]
    table = parse_table("a,b\n1,2\n3,4\n")
    assert table.names == ("a", "b") and table.values.shape == (2, 2)
    path = tmp_path / "m.txt"
    path.write_text("1 2 3\n4 5 6\n")
    assert read_matrix(path, transpose=True).tolist() == [[1, 4], [2, 5], [3, 6]]
    assert read_table(path).names is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 2 3\n4 x 6\n", r"m\.txt, line 2, column 2: 'x' is not a number"),
        ("1,2,3\n4,,6\n", r"line 2, column 2: empty value"),
        ("1 2 3\n4 5\n", r"line 2: 2 values, expected 3 as on line 1"),
        ("# c\n1 2\n3 4 5\n", r"line 3: 3 values, expected 2 as on line 2"),
        ("a b\n1 2 3\n", r"line 2: 3 values, expected 2 as on the header"),
        ("1 2\n3 nan\n", r"line 2, column 2: 'nan' is not a finite number"),
        ("# only a comment\n", r"no numeric rows"),
        ("x y\n", r"no numeric rows"),
    ],
)
def test_bad_matrix_files_name_file_line_and_column(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "m.txt"
    path.write_text(text)
    with pytest.raises(ValidationFailed, match=message) as err:
        read_matrix(path, field="--data")
    assert err.value.field == "--data"


def test_header_is_not_allowed_when_transposing() -> None:
    with pytest.raises(ValidationFailed, match="line 1, column 1: 'a' is not a number"):
        parse_matrix("a b\n1 2\n", transpose=True)


def test_missing_matrix_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match="no such file"):
        read_matrix(tmp_path / "absent.dat")
