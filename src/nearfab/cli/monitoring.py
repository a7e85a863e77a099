"""CLI: telemetry (export, retention, health), monitoring models, alarms."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nearfab.cli.context import (
    DataDir,
    JsonOpt,
    app_as,
    console,
    emit_json,
    state,
    use_case,
)

telemetry_app = typer.Typer(no_args_is_help=True, help="Machine telemetry: export and upkeep.")
models_app = typer.Typer(no_args_is_help=True, help="SPC / MSPC models: train, approve, retire.")
alarms_app = typer.Typer(no_args_is_help=True, help="Process alarms: list and disposition.")

User = Annotated[str, typer.Option(help="Your username.")]
Password = Annotated[str, typer.Option(help="Your password.", prompt=True, hide_input=True)]


@telemetry_app.command("export")
def telemetry_export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="CSV file to write.")],
    run: Annotated[str | None, typer.Option(help="A run (job id).")] = None,
    machine: Annotated[str | None, typer.Option(help="A machine id.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Raw readings of a run or a machine as CSV (UTC times, metric, value, unit)."""
    application = state(ctx, data_dir).app()
    with out.open("w", newline="", encoding="utf-8") as handle:
        rows = use_case(
            application,
            False,
            lambda uow: application.telemetry.export_csv(uow, handle, machine_id=machine, run=run),
        )
    console.print(f"{rows} readings written to {out}")


@telemetry_app.command("retention")
def telemetry_retention(
    ctx: typer.Context,
    older_than_days: Annotated[int, typer.Option(help="Thin raw data older than this (≥ 30).")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit trail).")],
    user: User,
    password: Password,
    bucket_s: Annotated[int, typer.Option(help="Bucket width in seconds.")] = 60,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Replace old raw readings by per-bucket mean, min and max (audited)."""
    application, actor = app_as(ctx, data_dir, user, password, as_json)
    result = use_case(
        application,
        as_json,
        lambda uow: application.telemetry.apply_retention(
            uow, actor, older_than=timedelta(days=older_than_days), bucket_s=bucket_s, reason=reason
        ),
    )
    emit_json(result) if as_json else console.print(result)


@telemetry_app.command("status")
def telemetry_status(
    ctx: typer.Context, as_json: JsonOpt = False, data_dir: DataDir = None
) -> None:
    """Machines' sessions, open gaps and recent dead letters."""
    application = state(ctx, data_dir).app()
    with application.uow() as uow:
        machines = application.telemetry.machines(uow)
        gaps = [g for g in application.telemetry.gaps(uow) if g.missing]
        dead = application.telemetry.dead_letters(uow, limit=20)
    if as_json:
        emit_json(
            {
                "machines": [
                    {
                        "machine_id": m.machine_id,
                        "online": m.online,
                        "state": m.state,
                        "run": m.run,
                        "last_seen_at": m.last_seen_at,
                    }
                    for m in machines
                ],
                "open_gaps": [
                    {"machine_id": g.machine_id, "run": g.run, "missing": g.missing} for g in gaps
                ],
                "dead_letters": [
                    {"topic": d.topic, "code": d.code, "reason": d.reason} for d in dead
                ],
            }
        )
        return
    table = Table("machine", "online", "state", "run", "last message")
    for m in machines:
        table.add_row(m.machine_id, str(m.online), m.state or "", m.run or "", str(m.last_seen_at))
    console.print(table)
    console.print(f"{len(gaps)} open gap(s); {len(dead)} recent dead letter(s)")


@models_app.command("list")
def models_list(ctx: typer.Context, as_json: JsonOpt = False, data_dir: DataDir = None) -> None:
    from nearfab.monitoring import model_dict

    application = state(ctx, data_dir).app()
    with application.uow() as uow:
        rows = [model_dict(m) for m in application.monitoring.models(uow)]
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "kind", "product", "machine type", "version", "status", "runs")
    for r in rows:
        table.add_row(
            r["id"],
            r["kind"],
            r["master_file_code"],
            r["machine_type"],
            str(r["version"]),
            r["status"],
            str(len(r["training"]["runs"])),
        )
    console.print(table)


@models_app.command("train")
def models_train(
    ctx: typer.Context,
    kind: Annotated[str, typer.Option(help="spc, mspc or batch (batch-evolution MSPC)")],
    product: Annotated[str, typer.Option(help="Master-file code of the product.")],
    machine_type: Annotated[str, typer.Option(help="Machine type (one its product family runs).")],
    user: User,
    password: Password,
    run: Annotated[
        list[str] | None, typer.Option(help="A qualified run (repeat); default all released.")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Coverage of a healthy run.")] = 0.99,
    grid_points: Annotated[
        int, typer.Option(help="Batch models: points of elapsed time per run.")
    ] = 50,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Fit a draft model from qualified runs (released batches); a QP must approve it."""
    from nearfab.monitoring import model_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    model = use_case(
        application,
        as_json,
        lambda uow: application.monitoring.train(
            uow,
            actor,
            kind=kind,
            master_file_code=product,
            machine_type=machine_type,
            runs=run or None,
            alpha=alpha,
            grid_points=grid_points,
        ),
    )
    emit_json(model_dict(model)) if as_json else console.print(
        f"draft {model.kind} model {model.id} (version {model.version}) from "
        f"{len(model.training['runs'])} runs"
    )


@models_app.command("capability")
def models_capability(
    ctx: typer.Context,
    product: Annotated[str, typer.Option(help="Master-file code of the product.")],
    machine_type: Annotated[str, typer.Option(help="Machine type (one its product family runs).")],
    run: Annotated[list[str] | None, typer.Option(help="A qualified run (repeat).")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Cp, Cpk, Pp, Ppk (95 % intervals) of each process parameter over qualified runs."""
    application = state(ctx, data_dir).app()
    rows = use_case(
        application,
        as_json,
        lambda uow: application.monitoring.capability(
            uow, master_file_code=product, machine_type=machine_type, runs=run or None
        ),
    )
    if as_json:
        emit_json(rows)
        return
    table = Table("parameter", "n", "LSL", "USL", "Cp", "Cpk", "Pp", "Ppk (95 % CI)")

    def fmt(value: object) -> str:
        return f"{value:.2f}" if isinstance(value, float) else "—"

    for r in rows:
        ci = r["ppk_interval"]
        table.add_row(
            r["metric"],
            str(r["n"]),
            fmt(r["lsl"]),
            fmt(r["usl"]),
            fmt(r["cp"]),
            fmt(r["cpk"]),
            fmt(r["pp"]),
            f"{fmt(r['ppk'])} ({fmt(ci['lower'])}–{fmt(ci['upper'])})",
        )
    console.print(table)


@models_app.command("approve")
def models_approve(
    ctx: typer.Context,
    model_id: str,
    user: User,
    password: Password,
    meaning: Annotated[str, typer.Option()] = "QP approval of monitoring model",
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """QP approval by e-signature; the previous version is retired."""
    from nearfab.monitoring import model_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)
    model = use_case(
        application,
        as_json,
        lambda uow: application.monitoring.approve(
            uow, actor, model_id, password=password, meaning=meaning
        ),
    )
    emit_json(model_dict(model)) if as_json else console.print(f"{model.id} is {model.status}")


@alarms_app.command("list")
def alarms_list(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Closed ones too.")] = False,
    batch: Annotated[str | None, typer.Option(help="Only this batch id.")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Alarms not yet dispositioned (with --all, every alarm)."""
    from nearfab.monitoring import alarm_dict

    application = state(ctx, data_dir).app()
    with application.uow() as uow:
        rows = [
            alarm_dict(a)
            for a in application.monitoring.alarms(uow, open_only=not all_, batch_id=batch)
        ]
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "severity", "status", "batch", "rule", "message", "count")
    for r in rows:
        table.add_row(
            r["id"],
            r["severity"],
            r["status"],
            r["batch_id"] or "",
            f"{r['source']} {r['rule']}",
            r["message"],
            str(r["count"]),
        )
    console.print(table)


@alarms_app.command("close")
def alarms_close(
    ctx: typer.Context,
    alarm_id: str,
    disposition: Annotated[
        str, typer.Option(help="no_impact, assignable_cause_fixed, deviation_raised, false_alarm")
    ],
    note: Annotated[str, typer.Option(help="What was found and done.")],
    user: User,
    password: Password,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Close an alarm with a documented disposition."""
    from nearfab.monitoring import alarm_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    alarm = use_case(
        application,
        as_json,
        lambda uow: application.monitoring.close(
            uow, actor, alarm_id, disposition=disposition, note=note
        ),
    )
    emit_json(alarm_dict(alarm)) if as_json else console.print(f"{alarm.id} closed")
