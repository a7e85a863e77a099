"""`nearfab mspc fit|score`: the contract other checks rely on, in-process and as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from nearfab.cli.mspc import app
from nearfab.monitoring.logic.mspc import PcaModel

runner = CliRunner()
M = 6
B = np.random.default_rng(0).standard_normal((2, M))  # two latent factors drive six variables


def process(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 5.0 + rng.standard_normal((n, 2)) @ B + 0.2 * rng.standard_normal((n, M))


def write(path: Path, X: np.ndarray, sep: str = " ", header: list[str] | None = None) -> Path:
    lines = [sep.join(header)] if header else []
    lines += [sep.join(f"{v:.10g}" for v in row) for row in X]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    train = process(300, seed=1)
    test = process(120, seed=2)
    test[60:, 3] += 3.0  # a fault in variable 4 from sample 60
    return {
        "train": write(tmp_path / "train.csv", train, sep=","),
        "train_t": write(tmp_path / "train_t.dat", train.T),
        "test": write(tmp_path / "test.dat", test),
        "model": tmp_path / "model.json",
    }


def fit(files: dict[str, Path], *extra: str) -> None:
    args = ["fit", "--train", str(files["train"]), "--components", "2", "--out"]
    result = runner.invoke(app, [*args, str(files["model"]), *extra])
    assert result.exit_code == 0, result.output


def score_json(files: dict[str, Path], *extra: str) -> dict[str, Any]:
    args = ["score", "--model", str(files["model"]), "--data", str(files["test"]), "--json"]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_fit_then_score_json_contract(files: dict[str, Path]) -> None:
    fit(files)
    model = json.loads(files["model"].read_text())
    assert model["format"] == "nearfab.mspc.pca" and model["components"] == 2
    assert model["limits"]["t2"] > 0 and model["alpha"] == 0.99
    out = score_json(files)
    t2, spe, alarm = out["t2"], out["spe"], out["alarm"]
    assert isinstance(t2, list) and isinstance(spe, list) and isinstance(alarm, list)
    assert len(t2) == len(spe) == len(alarm) == 120
    assert all(isinstance(a, bool) for a in alarm)
    assert out["alarm_basis"] == "t2|spe"
    limits = out["limits"]
    assert isinstance(limits, dict) and set(limits) >= {"alpha", "t2", "spe"}
    expected = [t > limits["t2"] or s > limits["spe"] for t, s in zip(t2, spe, strict=True)]
    assert alarm == expected
    assert all(alarm[60:]) and sum(alarm[:60]) <= 3
    # contributions for every alarm, variable 4 on top of SPE
    contributions = out["contributions"]
    assert isinstance(contributions, list)
    assert [c["sample"] for c in contributions] == [i for i, a in enumerate(alarm) if a]
    late = [c for c in contributions if c["sample"] >= 60]
    assert all(c["spe_top"][0]["variable"] == "x4" for c in late)


def test_scores_equal_the_library(files: dict[str, Path]) -> None:
    fit(files, "--alpha", "0.95")
    model = PcaModel.from_dict(json.loads(files["model"].read_text()))
    assert model.alpha == 0.95
    X = np.loadtxt(files["test"])
    t2, spe = model.score(X)
    out = score_json(files)
    np.testing.assert_allclose(out["t2"], t2, rtol=1e-12)
    np.testing.assert_allclose(out["spe"], spe, rtol=1e-12)


def test_transposed_training_file_gives_the_same_model(files: dict[str, Path]) -> None:
    fit(files)
    first = json.loads(files["model"].read_text())
    args = ["fit", "--train", str(files["train_t"]), "--transpose", "--components", "2"]
    result = runner.invoke(app, [*args, "--out", str(files["model"])])
    assert result.exit_code == 0, result.output
    second = json.loads(files["model"].read_text())
    assert second["training_fingerprint"] == first["training_fingerprint"]
    assert second["limits"] == first["limits"]


def test_improved_model_says_which_statistic_alarms(files: dict[str, Path]) -> None:
    fit(files, "--lags", "1", "--ewma", "0.2")
    out = score_json(files, "--all-contributions")
    assert out["alarm_basis"] == "ewma(t2)|ewma(spe)" and out["warmup"] == 1
    t2, alarm = out["t2"], out["alarm"]
    assert isinstance(t2, list) and isinstance(alarm, list)
    assert t2[0] is None and alarm[0] is False and len(out["t2_ewma"]) == 120
    limits = out["limits"]
    assert isinstance(limits, dict) and {"ewma_t2", "ewma_spe", "ewma_lambda"} <= set(limits)
    ewma_t2, ewma_spe = out["t2_ewma"], out["spe_ewma"]
    expected = [
        t is not None and (t > limits["ewma_t2"] or s > limits["ewma_spe"])
        for t, s in zip(ewma_t2, ewma_spe, strict=True)
    ]
    assert alarm == expected and all(alarm[70:])
    first = out["contributions"][0]
    assert len(first["t2"]) == M and len(first["spe"]) == M


def test_plain_output_is_a_short_summary(files: dict[str, Path]) -> None:
    fit(files)
    args = ["score", "--model", str(files["model"]), "--data", str(files["test"])]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "alarms" in result.stdout and "SPE limit" in result.stdout
    assert len(result.stdout.splitlines()) < 20


def test_header_names_flow_into_contributions(tmp_path: Path, files: dict[str, Path]) -> None:
    names = [f"T{j}" for j in range(1, M + 1)]
    write(files["train"], process(300, seed=1), sep=",", header=names)
    fit(files)
    assert json.loads(files["model"].read_text())["variable_names"] == names
    out = score_json(files)
    assert out["contributions"][-1]["spe_top"][0]["variable"] == "T4"


# --- refusals ------------------------------------------------------------------------------------
def refused(args: list[str], option: str, *words: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    text = " ".join(result.output.split())  # rich may wrap long messages
    assert option in text, text
    for word in words:
        assert word in text, text


def test_fit_refusals_name_the_option_and_reason(tmp_path: Path, files: dict[str, Path]) -> None:
    out = str(tmp_path / "m.json")
    train = str(files["train"])
    refused(["fit", "--train", str(tmp_path / "no.dat"), "--components", "2", "--out", out],
            "--train", "no such file")  # fmt: skip
    refused(["fit", "--train", train, "--out", out], "--components")
    refused(["fit", "--train", train, "--components", "9", "--out", out], "--components")
    refused(["fit", "--train", train, "--components", "2", "--alpha", "1.5", "--out", out],
            "--alpha")  # fmt: skip
    refused(["fit", "--train", train, "--components", "2", "--out", str(tmp_path / "x" / "m")],
            "--out", "does not exist")  # fmt: skip
    ragged = tmp_path / "ragged.dat"
    ragged.write_text("1 2 3\n4 5 6\n7 8\n")
    refused(["fit", "--train", str(ragged), "--components", "1", "--out", out],
            "--train", "ragged.dat", "line 3", "2 values, expected 3")  # fmt: skip
    text = tmp_path / "text.dat"
    text.write_text("1 2 3\n4 five 6\n")
    refused(["fit", "--train", str(text), "--components", "1", "--out", out],
            "--train", "line 2, column 2", "'five' is not a number")  # fmt: skip
    flat = process(50, seed=3)
    flat[:, 2] = 7.0
    write(tmp_path / "flat.dat", flat)
    refused(["fit", "--train", str(tmp_path / "flat.dat"), "--components", "2", "--out", out],
            "--train", "column 3 has zero variance")  # fmt: skip
    assert not Path(out).exists()  # nothing half-written


def test_score_refusals_name_the_option_and_reason(tmp_path: Path, files: dict[str, Path]) -> None:
    fit(files)
    model, test = str(files["model"]), str(files["test"])
    refused(["score", "--model", str(tmp_path / "no.json"), "--data", test], "--model", "no such")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    refused(["score", "--model", str(bad), "--data", test], "--model", "not JSON")
    doc = json.loads(files["model"].read_text())
    doc["limits"]["t2"] = 1.0
    bad.write_text(json.dumps(doc))
    refused(["score", "--model", str(bad), "--data", test], "--model", "sha256")
    narrow = write(tmp_path / "narrow.dat", process(10, seed=4)[:, :5])
    refused(["score", "--model", model, "--data", str(narrow)], "--data", "5 variables")
    result = runner.invoke(app, ["score", "--model", model, "--data", str(narrow), "--json"])
    assert result.exit_code != 0
    assert json.loads(result.stdout)["error"]["field"] == "--data"


def test_as_a_subprocess(files: dict[str, Path]) -> None:
    cmd = [sys.executable, "-m", "nearfab", "mspc"]  # the installed entry point, as users call it
    fitted = subprocess.run(
        [*cmd, "fit", "--train", str(files["train_t"]), "--transpose", "--components", "2",
         "--out", str(files["model"])],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr
    scored = subprocess.run(
        [*cmd, "score", "--model", str(files["model"]), "--data", str(files["test"]), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    out = json.loads(scored.stdout)
    assert len(out["t2"]) == len(out["spe"]) == len(out["alarm"]) == 120
    # the refusal through the same `nearfab` app in process (tests/cli_helpers.py: exit code
    # and stderr as a process gives them), without a third interpreter importing the stack
    from tests import cli_helpers

    missing = cli_helpers.run(
        ["mspc", "score", "--model", str(files["model"]), "--data", "/no/such/file"]
    )
    assert missing.returncode == 2
    assert "--data" in missing.stderr and "no such file" in missing.stderr


def test_the_contract_on_tennessee_eastman(tmp_path: Path, shared_data: Path) -> None:
    """`nearfab mspc fit` on d00.dat (stored transposed) and `score` on d01_te.dat: 960 samples,
    the fault (from row 160) mostly alarmed, the normal stretch mostly not. The `nearfab` app
    in process (tests/cli_helpers.py); `test_as_a_subprocess` runs the real entry point."""
    from tests import cli_helpers

    tep = shared_data / "tep"
    model = tmp_path / "tep.json"
    fitted = cli_helpers.run(
        ["mspc", "fit", "--train", str(tep / "d00.dat"), "--transpose", "--components", "9",
         "--alpha", "0.99", "--out", str(model)],
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr
    scored = cli_helpers.run(
        ["mspc", "score", "--model", str(model), "--data", str(tep / "d01_te.dat"), "--json"],
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    out = json.loads(scored.stdout)
    assert len(out["t2"]) == len(out["spe"]) == len(out["alarm"]) == 960
    assert sum(out["alarm"][160:]) / 800 > 0.95  # fault 1 is a step: PCA finds it
    assert sum(out["alarm"][:160]) / 160 < 0.15
