"""Tennessee Eastman benchmark (Braatz files in ../shared/data/tep): the detection floor.

Train on d00.dat only (stored transposed: 52 × 500); test on d01_te … d21_te (fault from 0-based
row 160) and d00_te. Detection is averaged over the 18 detectable faults (all but 3, 9, 15);
the false-alarm rate is counted on d00_te. Nothing here is fitted or tuned on a `_te` file.
Per-fault figures: `benchmarks/tep_table.py`, published in docs/monitoring.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nearfab.monitoring.logic.matrix import read_matrix
from nearfab.monitoring.logic.mspc import PcaModel, parallel_analysis

pytestmark = pytest.mark.shared_data

DETECTABLE = (1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21)
ONSET = 160
PLAIN = {"components": 9}  # the literature order for TEP (Chiang, Russell & Braatz 2001)
IMPROVED = {"components": 29, "lags": 2, "ewma_lambda": 0.2}  # see docs/monitoring.md


@pytest.fixture(scope="module")
def tep(shared_data: Path) -> dict[str, np.ndarray]:
    folder = shared_data / "tep"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    data = {"train": read_matrix(folder / "d00.dat", transpose=True)}
    for i in (0, *DETECTABLE):
        data[f"{i:02d}"] = read_matrix(folder / f"d{i:02d}_te.dat")
    return data


def evaluate(model: PcaModel, tep: dict[str, np.ndarray]) -> tuple[float, float]:
    """(mean detection rate over the 18 faults on rows 160.., false-alarm rate on d00_te)."""
    detection = [np.mean(model.monitor(tep[f"{i:02d}"]).alarm[ONSET:]) for i in DETECTABLE]
    normal = model.monitor(tep["00"])
    return float(np.mean(detection)), float(np.mean(normal.alarm[normal.warmup :]))


def test_training_file_is_stored_transposed(tep: dict[str, np.ndarray]) -> None:
    assert tep["train"].shape == (500, 52)
    assert all(tep[f"{i:02d}"].shape == (960, 52) for i in (0, *DETECTABLE))


def test_plain_pca_meets_the_floor(tep: dict[str, np.ndarray]) -> None:
    model = PcaModel.fit(tep["train"], **PLAIN)  # type: ignore[arg-type]
    detection, false_alarms = evaluate(model, tep)
    assert detection >= 0.80, f"plain PCA detects {detection:.1%} < 80 %"
    assert false_alarms <= 0.08, f"plain PCA false alarms {false_alarms:.1%} > 8 %"


def test_improved_method_meets_the_goal(tep: dict[str, np.ndarray]) -> None:
    model = PcaModel.fit(tep["train"], **IMPROVED)  # type: ignore[arg-type]
    detection, false_alarms = evaluate(model, tep)
    assert detection >= 0.85, f"DPCA + EWMA detects {detection:.1%} < 85 %"
    assert false_alarms <= 0.072, f"DPCA + EWMA false alarms {false_alarms:.1%} > 7.2 %"


def test_dynamic_order_comes_from_parallel_analysis_on_training_data(
    tep: dict[str, np.ndarray],
) -> None:
    assert parallel_analysis(tep["train"], lags=2, reps=50) == IMPROVED["components"]
