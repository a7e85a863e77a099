"""CLI: comparability between sites and proficiency testing (`nearfab comparability ...`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from nearfab.cli.context import (
    DataDir,
    JsonOpt,
    PasswordOpt,
    UserOpt,
    app_as,
    console,
    done,
    emit_json,
    use_case,
)

if TYPE_CHECKING:
    from nearfab.bootstrap import App
    from nearfab.identity import Actor

app = typer.Typer(
    no_args_is_help=True,
    help="Sites held to one another (TOST, Cpk, charts of means) and proficiency testing.",
)


@app.command("report")
def report(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="The master file's code.")],
    user: UserOpt,
    password: PasswordOpt,
    by: Annotated[str, typer.Option(help="site, machine, material_lot or month")] = "site",
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Each site (machine, lot, month) against the network; what drifts is flagged."""
    from nearfab.comparability.schemas import ReportOut

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    out = ReportOut.model_validate(
        use_case(
            application, as_json, lambda uow: application.comparability.report(uow, actor, code, by)
        )
    ).model_dump()
    if as_json:
        emit_json(out)
        return
    console.print(
        f"{out['master_file_code']}: {out['batches']} batch(es), by {out['by']}, "
        f"margins: {out['margins_from']}"
    )
    for attribute in out["attributes"]:
        table = Table(title=attribute["label"])
        for column in ("group", "n", "mean", "limits", "TOST", "Cpk (95 %)", "flags"):
            table.add_column(column)
        for g in attribute["groups"]:
            limits = f"{g['lcl']:.4g}–{g['ucl']:.4g}" if g["lcl"] is not None else "-"
            tost = (
                f"{g['tost']['difference']:+.3g} "
                f"[{g['tost']['ci_low']:+.3g}, {g['tost']['ci_high']:+.3g}] "
                + ("equivalent" if g["tost"]["equivalent"] else "not shown")
                if g["tost"]
                else "-"
            )
            cap = g["capability"]
            cpk = f"{cap['cpk']:.2f} ({cap['cpk_low']:.2f}–{cap['cpk_high']:.2f})" if cap else "-"
            table.add_row(
                g["label"], str(g["n"]), f"{g['mean']:.4g}", limits, tost, cpk,
                "; ".join(g["flags"]) or "-",
            )  # fmt: skip
        console.print(table)
    for flag in out["flagged"]:
        console.print(f"[bold red]flag[/] {flag}")


def _round_text(r: dict[str, Any]) -> str:
    lines = [f"round {r['id']} · {r['master_file_code']} · {r['attribute']} · {r['status']}"]
    for res in r["results"]:
        z = "" if res["z"] is None else f"  z = {res['z']:+.2f} {res['verdict']}"
        lines.append(f"  {res['site_code']}: {res['value']:g}{z}")
    return "\n".join(lines)


def _answer_round(
    application: App, actor: Actor, as_json: bool, change: Callable[[Any], str]
) -> None:
    """Run `change` (it returns the round's id) and answer the round as it then stands, in the
    same unit of work."""
    from nearfab.comparability.schemas import RoundOut

    def step(uow: Any) -> dict[str, Any]:
        return application.comparability.round(uow, actor, change(uow))

    out = RoundOut.model_validate(use_case(application, as_json, step)).model_dump()
    done(out, as_json, _round_text(out))


@app.command("open-round")
def open_round(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="The master file's code.")],
    user: UserOpt,
    password: PasswordOpt,
    attribute: Annotated[str, typer.Option(help="What the sites measure.")],
    unit: Annotated[str, typer.Option(help="Its unit.")],
    reference: Annotated[str, typer.Option(help="The blind sample or print sent.")],
    site: Annotated[list[str], typer.Option("--site", help="A site taking part (repeat).")],
    assigned_value: Annotated[float | None, typer.Option(help="Known reference value.")] = None,
    sd_pt: Annotated[float | None, typer.Option(help="σ for proficiency.")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """The control site sends blind reference samples to the sites."""
    application, actor = app_as(ctx, data_dir, user, password, as_json)
    data = {
        "master_file_code": code,
        "attribute": attribute,
        "unit": unit,
        "reference": reference,
        "site_ids": site,
        "assigned_value": assigned_value,
        "sd_pt": sd_pt,
    }
    _answer_round(
        application,
        actor,
        as_json,
        lambda uow: application.comparability.open_round(uow, actor, data).id,
    )


@app.command("enter-result")
def enter_result(
    ctx: typer.Context,
    round_id: Annotated[str, typer.Argument(help="The round's id.")],
    user: UserOpt,
    password: PasswordOpt,
    site: Annotated[str, typer.Option(help="The reporting site (id or code).")],
    value: Annotated[float, typer.Option(help="What the site measured.")],
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """A site's result on the blind sample."""
    application, actor = app_as(ctx, data_dir, user, password, as_json)

    def change(uow: Any) -> str:
        application.comparability.enter_result(
            uow, actor, round_id, {"site_id": site, "value": value}
        )
        return round_id

    _answer_round(application, actor, as_json, change)


@app.command("score")
def score(
    ctx: typer.Context,
    round_id: Annotated[str, typer.Argument(help="The round's id.")],
    user: UserOpt,
    password: PasswordOpt,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """ISO 13528 z-scores; sites with |z| > 3 are suspended from the master file."""
    application, actor = app_as(ctx, data_dir, user, password, as_json)

    def change(uow: Any) -> str:
        application.comparability.score_round(uow, actor, round_id)
        return round_id

    _answer_round(application, actor, as_json, change)


@app.command("suspensions")
def suspensions(
    ctx: typer.Context,
    user: UserOpt,
    password: PasswordOpt,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Suspensions, active and lifted."""
    from nearfab.comparability.schemas import SuspensionOut

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    rows = use_case(
        application, as_json, lambda uow: application.comparability.suspensions(uow, actor)
    )
    out = [SuspensionOut.model_validate(r).model_dump() for r in rows]
    text = "\n".join(
        f"{s['id']} {s['site_code']} {s['master_file_code']} z = {s['z']:+.2f} {s['status']}"
        for s in out
    )
    done(out, as_json, text or "no suspension")


@app.command("close-capa")
def close_capa(
    ctx: typer.Context,
    suspension_id: Annotated[str, typer.Argument(help="The suspension's id.")],
    user: UserOpt,
    password: PasswordOpt,
    capa: Annotated[str, typer.Option("--capa", help="The CAPA's reference.")],
    summary: Annotated[str, typer.Option(help="What was done.")],
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Close the site's CAPA with your e-signature; the suspension is lifted."""
    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)
    data = {"capa_reference": capa, "summary": summary, "password": password, "username": user}
    row = use_case(
        application,
        as_json,
        lambda uow: application.comparability.close_capa(uow, actor, suspension_id, data),
    )
    done(
        {"id": row.id, "status": row.status, "signature_id": row.signature_id},
        as_json,
        f"suspension {row.id} lifted (signature {row.signature_id})",
    )
