"""Tennessee Eastman per-fault table for docs/monitoring.md (markdown, or JSON with --json).

Both models are fitted on d00.dat only (stored transposed); the `_te` files are only scored.
Detection: share of alarms on rows 160..959 of dXX_te (the fault starts at 0-based row 160).
Delay: first alarm at or after row 160, minus 160, in samples (× 3 min). False alarms: all rows
of d00_te, and rows 0..159 of each fault file (before the fault). The dynamic model cannot score
its first `lags` rows (they are left out of its denominators).

    .venv/bin/python benchmarks/tep_table.py [--data ../shared/data/tep] [--sensitivity] [--json]
        [--faults 1 2 ...] [--smoke]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nearfab.monitoring.logic.matrix import read_matrix
from nearfab.monitoring.logic.mspc import Monitoring, PcaModel, parallel_analysis

ONSET = 160
MINUTES = 3
HARD = (3, 9, 15)  # not detectable by any data-driven method in the literature
DETECTABLE = tuple(i for i in range(1, 22) if i not in HARD)
KINDS = {
    1: "A/C feed ratio (step)",
    2: "B composition (step)",
    3: "D feed temperature (step)",
    4: "reactor cooling water inlet T (step)",
    5: "condenser cooling water inlet T (step)",
    6: "A feed loss (step)",
    7: "C header pressure loss (step)",
    8: "A, B, C feed composition (random)",
    9: "D feed temperature (random)",
    10: "C feed temperature (random)",
    11: "reactor cooling water inlet T (random)",
    12: "condenser cooling water inlet T (random)",
    13: "reaction kinetics (slow drift)",
    14: "reactor cooling water valve (sticking)",
    15: "condenser cooling water valve (sticking)",
    16: "unknown",
    17: "unknown",
    18: "unknown",
    19: "unknown",
    20: "unknown",
    21: "stream 4 valve fixed (constant position)",
}
PLAIN = {"components": 9}
IMPROVED = {"components": 29, "lags": 2, "ewma_lambda": 0.2}


@dataclass
class Row:
    t2: float
    spe: float
    either: float
    delay: int | None
    before: float  # false-alarm rate on rows 0..159


def statistics(model: PcaModel, result: Monitoring) -> tuple[np.ndarray, np.ndarray]:
    """The two statistics the alarm is based on, each against its own limit (as booleans)."""
    if model.ewma is None:
        return result.t2 > model.t2_limit, result.spe > model.spe_limit
    assert result.t2_ewma is not None and result.spe_ewma is not None
    return result.t2_ewma > model.ewma.t2_limit, result.spe_ewma > model.ewma.spe_limit


def row(model: PcaModel, X: np.ndarray) -> Row:
    result = model.monitor(X)
    t2, spe = statistics(model, result)
    after = result.alarm[ONSET:]
    hits = np.flatnonzero(after)
    return Row(
        t2=float(t2[ONSET:].mean()),
        spe=float(spe[ONSET:].mean()),
        either=float(after.mean()),
        delay=int(hits[0]) if hits.size else None,
        before=float(result.alarm[result.warmup : ONSET].mean()),
    )


def far(model: PcaModel, X: np.ndarray) -> float:
    result = model.monitor(X)
    return float(result.alarm[result.warmup :].mean())


def alarm_counts(model: PcaModel, X: np.ndarray) -> tuple[int, int]:
    """(alarmed samples, scored samples) over every row the model scores."""
    result = model.monitor(X)
    scored = result.alarm[result.warmup :]
    return int(scored.sum()), int(scored.size)


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def delay(d: int | None) -> str:
    return "–" if d is None else f"{d} / {d * MINUTES}"


def _row_dict(r: Row) -> dict[str, object]:
    return {
        "t2_detection": r.t2,
        "spe_detection": r.spe,
        "either_detection": r.either,
        "delay_samples": r.delay,
        "delay_min": None if r.delay is None else r.delay * MINUTES,
        "false_alarms_rows_0_159": r.before,
    }


def figures(data: dict[str, np.ndarray], faults: tuple[int, ...]) -> dict[str, object]:
    """Both models' per-fault figures (rates as fractions), their means over the detectable
    faults among `faults` and their false-alarm rate on d00_te: what the table prints."""
    plain = PcaModel.fit(data["train"], **PLAIN)  # type: ignore[arg-type]
    better = PcaModel.fit(data["train"], **IMPROVED)  # type: ignore[arg-type]
    detectable = [i for i in faults if i in DETECTABLE]
    out: dict[str, object] = {"faults": list(faults), "detectable": detectable}
    for name, model, params in (("pca", plain, PLAIN), ("dpca_ewma", better, IMPROVED)):
        rows = {i: row(model, data[f"{i:02d}"]) for i in faults}
        found = [rows[i].delay for i in detectable if rows[i].delay is not None]
        out[name] = {
            "params": params,
            "per_fault": {
                str(i): {"disturbance": KINDS[i], "excluded": i in HARD, **_row_dict(rows[i])}
                for i in faults
            },
            "mean_of_detectable": {
                "faults": len(detectable),
                **{
                    key: (
                        float(np.mean([getattr(rows[i], attr) for i in detectable]))
                        if detectable
                        else None
                    )
                    for key, attr in (
                        ("t2_detection", "t2"),
                        ("spe_detection", "spe"),
                        ("either_detection", "either"),
                        ("false_alarms_rows_0_159", "before"),
                    )
                },
                "delay_samples": float(np.mean(found)) if found else None,
            },
            "d00_te_false_alarms": far(model, data["00"]),
            "d00_te_alarms_and_samples": alarm_counts(model, data["00"]),
            "median_delay_samples": float(np.median(found)) if found else None,
            # rows 0..159 of every fault file given, before its fault (same rows in each file)
            "false_alarms_rows_0_159_pooled": float(np.mean([rows[i].before for i in faults])),
        }
    return out


def training_files(data_dir: Path) -> dict[str, object]:
    """A check that uses no `_te` file: mean detection over the 18 detectable faults on the
    fault training files d01..d21.dat (fault active from their first sample: every scored
    row counts), for both models fitted on d00.dat."""
    train = read_matrix(data_dir / "d00.dat", transpose=True)
    plain = PcaModel.fit(train, **PLAIN)  # type: ignore[arg-type]
    better = PcaModel.fit(train, **IMPROVED)  # type: ignore[arg-type]
    out: dict[str, object] = {}
    files = {i: read_matrix(data_dir / f"d{i:02d}.dat") for i in DETECTABLE}
    for name, model in (("pca", plain), ("dpca_ewma", better)):
        out[name] = float(np.mean([far(model, X) for X in files.values()]))
    return out


def table(fig: dict[str, object]) -> str:
    lines = [
        "| fault | disturbance | PCA T² | PCA SPE | PCA T² or SPE | PCA delay (samples / min) "
        "| PCA FA rows 0–159 | DPCA-EWMA T² | DPCA-EWMA SPE | DPCA-EWMA either "
        "| DPCA-EWMA delay (samples / min) | DPCA-EWMA FA rows 0–159 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    plain: Any = fig["pca"]
    better: Any = fig["dpca_ewma"]
    faults: Any = fig["faults"]
    order = [i for i in faults if i not in HARD] + [i for i in faults if i in HARD]

    def cells(r: dict[str, Any]) -> str:
        return (
            f"{pct(r['t2_detection'])} | {pct(r['spe_detection'])} "
            f"| {pct(r['either_detection'])} | {delay(r['delay_samples'])} "
            f"| {pct(r['false_alarms_rows_0_159'])}"
        )

    for i in order:
        p, b = plain["per_fault"][str(i)], better["per_fault"][str(i)]
        mark = f"{i}" if i in DETECTABLE else f"{i} (excluded)"
        lines.append(f"| {mark} | {KINDS[i]} | {cells(p)} | {cells(b)} |")

    def mean_cells(m: dict[str, Any]) -> str:
        d = m["delay_samples"]
        shown = "–" if d is None else f"{d:.1f} / {d * MINUTES:.0f}"
        return (
            f"{pct(m['t2_detection'])} | {pct(m['spe_detection'])} "
            f"| **{pct(m['either_detection'])}** | {shown} "
            f"| {pct(m['false_alarms_rows_0_159'])}"
        )

    n = plain["mean_of_detectable"]["faults"]
    if n:
        lines.append(
            f"| **mean of the {n}** | | {mean_cells(plain['mean_of_detectable'])} "
            f"| {mean_cells(better['mean_of_detectable'])} |"
        )
    lines.append(
        f"| **d00_te false alarms** | all rows | | | **{pct(plain['d00_te_false_alarms'])}** "
        f"| | | | | **{pct(better['d00_te_false_alarms'])}** | | |"
    )
    return "\n".join(lines)


def sensitivity(data: dict[str, np.ndarray]) -> list[dict[str, object]]:
    """How the result moves with the choices fixed in advance (NOT used to choose them)."""
    options: list[tuple[str, dict[str, object]]] = [
        (f"PCA a={a}", {"components": a}) for a in (9, 11, 12)
    ]
    options += [
        (f"DPCA h=2 a=29 EWMA λ={lam}", {"components": 29, "lags": 2, "ewma_lambda": lam})
        for lam in (0.1, 0.15, 0.2, 0.25, 0.3)
    ]
    options += [("DPCA h=2 a=29, no EWMA", {"components": 29, "lags": 2})]
    out: list[dict[str, object]] = []
    for name, kwargs in options:
        model = PcaModel.fit(data["train"], **kwargs)  # type: ignore[arg-type]
        det = np.mean([np.mean(model.monitor(data[f"{i:02d}"]).alarm[ONSET:]) for i in DETECTABLE])
        out.append(
            {
                "model": name,
                "mean_detection_18": float(det),
                "d00_te_false_alarms": far(model, data["00"]),
            }
        )
    return out


def sensitivity_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | mean detection (18) | d00_te false alarms |", "|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {pct(r['mean_detection_18'])} | {pct(r['d00_te_false_alarms'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "data" / "tep")
    parser.add_argument("--sensitivity", action="store_true")
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    parser.add_argument(
        "--faults", type=int, nargs="+", default=list(range(1, 22)), help="fault numbers"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny run (tests): faults 1, 3; no parallel analysis"
    )
    args = parser.parse_args()
    faults = (1, 3) if args.smoke else tuple(args.faults)
    data = {"train": read_matrix(args.data / "d00.dat", transpose=True)}
    for i in (0, *faults):
        data[f"{i:02d}"] = read_matrix(args.data / f"d{i:02d}_te.dat")
    fig = figures(data, faults)
    if not args.smoke:
        fig["training_files_mean_detection"] = training_files(args.data)
        fig["parallel_analysis"] = {
            "static": parallel_analysis(data["train"]),
            "lags_2": parallel_analysis(data["train"], lags=2),
        }
    if args.sensitivity:
        for i in DETECTABLE:
            data.setdefault(f"{i:02d}", read_matrix(args.data / f"d{i:02d}_te.dat"))
        fig["sensitivity"] = sensitivity(data)
    if args.json:
        print(json.dumps(fig, indent=2, ensure_ascii=False))
        return
    print(table(fig))
    print()
    for name, label in (("pca", "PCA"), ("dpca_ewma", "DPCA-EWMA")):
        m: Any = fig[name]
        alarms, samples = m["d00_te_alarms_and_samples"]
        median = m["median_delay_samples"]
        shown = "–" if median is None else f"{median:g} samples ({median * MINUTES:g} min)"
        print(
            f"{label}: d00_te {alarms} alarms in {samples} samples; false alarms on rows "
            f"0–159 of the fault files pooled {pct(m['false_alarms_rows_0_159_pooled'])} %; "
            f"median delay {shown}."
        )
    tf: Any = fig.get("training_files_mean_detection")
    if tf:
        print(
            f"Fault training files d01–d21.dat, mean detection (18): PCA {pct(tf['pca'])} %, "
            f"DPCA-EWMA {pct(tf['dpca_ewma'])} %."
        )
    pa: Any = fig.get("parallel_analysis")
    if pa:
        print()
        print(
            f"Parallel analysis on d00.dat: {pa['static']} components static, "
            f"{pa['lags_2']} with 2 lags."
        )
    if args.sensitivity:
        print()
        print(sensitivity_table(fig["sensitivity"]))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
