"""`nearfab mspc`: fit a PCA monitoring model (T² / SPE) and score data with it.

Contract (other checks rely on it):
    nearfab mspc fit --train FILE [--transpose] --components N [--alpha 0.99] --out MODEL.json
    nearfab mspc score --model MODEL.json --data FILE [--transpose] --json
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from nearfab.cli.context import console, emit_json, err_console, fail
from nearfab.common.errors import ValidationFailed

if TYPE_CHECKING:
    import numpy as np

    from nearfab.monitoring.logic.mspc import PcaModel

app = typer.Typer(
    no_args_is_help=True,
    help="Multivariate SPC: PCA models with Hotelling T² and SPE (Q) limits.",
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
TransposeOpt = Annotated[
    bool, typer.Option("--transpose", help="The file has one variable per row (e.g. TEP d00.dat).")
]


def _floats(values: np.ndarray[Any, Any] | None) -> list[float | None] | None:
    """A JSON-safe list: NaN (samples before the lag window is full) becomes null."""
    if values is None:
        return None
    return [v if math.isfinite(v) else None for v in values.tolist()]


def _write_atomic(path: Path, text: str) -> None:
    """Write the whole file or nothing (temporary file + rename)."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ValidationFailed(f"{path}: folder {directory} does not exist", field="--out")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ValidationFailed(f"{path}: cannot write ({exc.strerror})", field="--out") from None


def _load_model(path: Path) -> PcaModel:
    from nearfab.monitoring.logic.mspc import PcaModel

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationFailed(f"{path}: no such file", field="--model") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"{path}: cannot read ({exc})", field="--model") from None
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            f"{path}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", field="--model"
        ) from None
    try:
        return PcaModel.from_dict(data)
    except ValidationFailed as exc:
        raise ValidationFailed(f"{path}: {exc.message}", field="--model") from None


# PcaModel.fit's field names -> the option a user typed
_FIT_OPTIONS = {
    "X": "--train",
    "variable_names": "--train",
    "components": "--components",
    "cumulative_variance": "--cumulative-variance",
    "alpha": "--alpha",
    "lags": "--lags",
    "ewma_lambda": "--ewma",
    "folds": "--folds",
}


@app.command()
def fit(
    train: Annotated[
        Path, typer.Option("--train", help="In-control training data, one sample per row.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write MODEL.json.")],
    components: Annotated[
        int | None, typer.Option("--components", help="Principal components to keep.")
    ] = None,
    cumulative_variance: Annotated[
        float | None,
        typer.Option(
            "--cumulative-variance",
            help="Instead of --components: fewest components explaining this share, e.g. 0.9.",
        ),
    ] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Confidence level of the limits.")] = 0.99,
    transpose: TransposeOpt = False,
    lags: Annotated[
        int, typer.Option("--lags", help="Dynamic PCA: previous samples appended to each row.")
    ] = 0,
    ewma: Annotated[
        float | None,
        typer.Option(
            "--ewma",
            help="EWMA weight λ on T² and SPE; alarms then use the EWMA statistics with limits "
            "from cross-validation on the training data.",
        ),
    ] = None,
    folds: Annotated[int, typer.Option("--folds", help="Cross-validation folds for --ewma.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Fit a PCA model on in-control data and write it as JSON."""
    from nearfab.monitoring.logic.matrix import read_table
    from nearfab.monitoring.logic.mspc import PcaModel

    try:
        if components is None and cumulative_variance is None:
            raise ValidationFailed(
                "give --components N (or --cumulative-variance SHARE)", field="--components"
            )
        if components is not None and cumulative_variance is not None:
            raise ValidationFailed(
                "give --components or --cumulative-variance, not both", field="--components"
            )
        table = read_table(train, transpose=transpose, field="--train")
        try:
            model = PcaModel.fit(
                table.values,
                components,
                alpha=alpha,
                cumulative_variance=cumulative_variance,
                lags=lags,
                ewma_lambda=ewma,
                folds=folds,
                variable_names=table.names,
            )
        except ValidationFailed as exc:
            option = _FIT_OPTIONS.get(exc.field or "X", "--train")
            message = f"{train}: {exc.message}" if option == "--train" else exc.message
            raise ValidationFailed(message, field=option) from None
        document = model.to_dict()
        _write_atomic(out, json.dumps(document, indent=1) + "\n")
    except ValidationFailed as exc:
        fail(exc, as_json)
    summary: dict[str, Any] = {
        "model": str(out),
        "sha256": document["sha256"],
        "method": document["method"],
        "samples": int(table.values.shape[0]),
        "variables": model.n_variables,
        "components": model.components,
        "lags": model.lags,
        "explained_variance": round(model.explained_variance, 4),
        "limits": _limits(model),
        "training_fingerprint": model.fingerprint,
        "warnings": [],
    }
    n, m = table.values.shape
    if n <= m:
        summary["warnings"].append(
            f"{n} samples of {m} variables: if {train} has one variable per row, use --transpose"
        )
    if as_json:
        emit_json(summary)
        return
    for warning in summary["warnings"]:
        err_console.print(f"[yellow]note[/]: {escape(warning)}")
    console.print(
        f"model written: {out} ({summary['method']}, {model.components} components"
        f"{f', {model.lags} lags' if model.lags else ''}, "
        f"{summary['explained_variance']:.1%} of variance)"
    )
    for key, value in _limits(model).items():
        console.print(f"  {key}: {value:.6g}")
    console.print(f"  training sha256: {model.fingerprint}", soft_wrap=True)


def _limits(model: PcaModel) -> dict[str, float]:
    limits = {"alpha": model.alpha, "t2": model.t2_limit, "spe": model.spe_limit}
    if model.ewma is not None:
        limits |= {
            "ewma_lambda": model.ewma.lam,
            "ewma_level": model.ewma.level,
            "ewma_t2": model.ewma.t2_limit,
            "ewma_spe": model.ewma.spe_limit,
        }
    return limits


@app.command()
def score(
    model_path: Annotated[Path, typer.Option("--model", help="MODEL.json written by `mspc fit`.")],
    data: Annotated[Path, typer.Option("--data", help="Samples to score, one per row.")],
    transpose: TransposeOpt = False,
    top: Annotated[
        int, typer.Option("--top", help="Variables listed per alarm, by contribution.")
    ] = 3,
    all_contributions: Annotated[
        bool,
        typer.Option("--all-contributions", help="Every variable's contribution per alarm."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Score samples: T², SPE and the alarm per sample, with contributions for every alarm."""
    from nearfab.monitoring.logic.matrix import read_table

    try:
        model = _load_model(model_path)
        table = read_table(data, transpose=transpose, field="--data")
        X = table.values
        if X.shape[1] != model.n_variables:
            raise ValidationFailed(
                f"{data} has {X.shape[1]} variables per sample; {model_path} expects "
                f"{model.n_variables}",
                field="--data",
            )
        if table.names and model.variable_names and table.names != model.variable_names:
            raise ValidationFailed(
                f"{data}: header names differ from the model's variables", field="--data"
            )
        if top < 0:
            raise ValidationFailed("--top must be ≥ 0", field="--top")
        try:
            result = model.monitor(X)
        except ValidationFailed as exc:
            raise ValidationFailed(f"{data}: {exc.message}", field="--data") from None
    except ValidationFailed as exc:
        fail(exc, as_json)
    import numpy as np

    lags = model.lags
    alarms = [int(i) for i in np.flatnonzero(result.alarm)]
    contributions = []
    for i in alarms:
        c = model.contributions(X[i - lags : i + 1] if lags else X[i])
        entry: dict[str, Any] = {
            "sample": i,
            "t2_top": [{"variable": n, "value": v} for n, v in c.top("t2", top)],
            "spe_top": [{"variable": n, "value": v} for n, v in c.top("spe", top)],
        }
        if all_contributions:
            entry |= {"t2": c.t2.tolist(), "spe": c.spe.tolist()}
        contributions.append(entry)
    out: dict[str, Any] = {
        "model": {
            "sha256": model.to_dict()["sha256"],
            "method": "dynamic_pca" if lags else "pca",
            "components": model.components,
            "lags": lags,
            "training_fingerprint": model.fingerprint,
        },
        "samples": int(X.shape[0]),
        "warmup": result.warmup,
        "alarm_basis": result.basis,
        "t2": _floats(result.t2),
        "spe": _floats(result.spe),
        "alarm": [bool(a) for a in result.alarm],
        "limits": _limits(model),
        "alarms": len(alarms),
        "variables": list(model.names),
        "contributions": contributions,
    }
    if result.t2_ewma is not None:
        out["t2_ewma"] = _floats(result.t2_ewma)
        out["spe_ewma"] = _floats(result.spe_ewma)
    if as_json:
        emit_json(out)
        return
    _print_summary(out, result.t2, result.spe)


def _print_summary(
    out: dict[str, Any], t2: np.ndarray[Any, Any], spe: np.ndarray[Any, Any]
) -> None:
    import numpy as np

    limits = out["limits"]
    table = Table("figure", "value", title=f"mspc score ({out['alarm_basis']})")
    table.add_row("samples", str(out["samples"]))
    table.add_row("alarms", f"{out['alarms']} ({out['alarms'] / max(1, out['samples']):.1%})")
    first = out["contributions"][0] if out["contributions"] else None
    table.add_row("first alarm (0-based sample)", str(first["sample"]) if first else "-")
    table.add_row("T² limit / max", f"{limits['t2']:.4g} / {np.nanmax(t2, initial=0.0):.4g}")
    table.add_row("SPE limit / max", f"{limits['spe']:.4g} / {np.nanmax(spe, initial=0.0):.4g}")
    if "ewma_t2" in limits:
        table.add_row("EWMA T² / SPE limits", f"{limits['ewma_t2']:.4g} / {limits['ewma_spe']:.4g}")
    if first:
        tops = ", ".join(f"{t['variable']} ({t['value']:.3g})" for t in first["spe_top"])
        table.add_row("first alarm: top SPE contributions", tops)
    console.print(table)


if __name__ == "__main__":
    app()
