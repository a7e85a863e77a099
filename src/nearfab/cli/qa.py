"""CLI: the network's quality system (`nearfab qa ...`, docs/central-qa.md): the central view,
complaints, CAPAs, change control of a master file and the annual report (JSON, CSV, PDF)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    write_report,
)

app = typer.Typer(
    no_args_is_help=True,
    help="Deviations, complaints, CAPAs and change controls of every site; the annual report.",
)
OwnerOpt = Annotated[str, typer.Option(help="Who owns it (username).")]
DueOpt = Annotated[str, typer.Option(help="Due date, YYYY-MM-DD.")]


@app.command("view")
def view(
    ctx: typer.Context,
    user: UserOpt,
    password: PasswordOpt,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Open items by due date (overdue marked), counts by site and owner, monthly trend."""
    from nearfab.qaviews import central_qa

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    out = use_case(application, as_json, lambda uow: central_qa(application, uow, actor))
    if as_json:
        emit_json(out)
        return
    table = Table(title=f"Open quality items on {out['as_of']}")
    for column in ("due", "kind", "site", "what", "owner", "status"):
        table.add_column(column)
    for i in out["items"]:
        due = (i["due_date"] or "-") + (" OVERDUE" if i["overdue"] else "")
        table.add_row(due, i["kind"], i["site_code"], i["title"], i["owner"] or "-", i["status"])
    console.print(table)
    for s in out["by_site"]:
        console.print(f"{s['site_code']}: {s['open']} open, {s['overdue']} overdue")


@app.command("complaint")
def complaint(
    ctx: typer.Context,
    user: UserOpt,
    password: PasswordOpt,
    site: Annotated[str, typer.Option(help="The site (code or id).")],
    reporter: Annotated[str, typer.Option(help="Who reported it.")],
    description: Annotated[str, typer.Option(help="What was reported.")],
    owner: OwnerOpt,
    due: DueOpt,
    pack_serial: Annotated[str | None, typer.Option(help="The pack's serial.")] = None,
    batch: Annotated[str | None, typer.Option(help="The batch number.")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Record a complaint about a pack or a batch."""
    from nearfab.qaschemas import ComplaintOut, row_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    data: dict[str, Any] = {
        "site_id": site,
        "reporter": reporter,
        "description": description,
        "owner": owner,
        "due_date": due,
        "pack_serial": pack_serial,
        "batch_number": batch,
    }
    out = use_case(
        application,
        as_json,
        lambda uow: row_dict(application.qms.record_complaint(uow, actor, data), ComplaintOut),
    )
    done(out, as_json, f"complaint {out['id']} recorded on batch {out['batch_number']}")


@app.command("close-capa")
def close_capa(
    ctx: typer.Context,
    capa_id: Annotated[str, typer.Argument(help="The CAPA.")],
    user: UserOpt,
    password: PasswordOpt,
    effectiveness: Annotated[str, typer.Option(help="How its effectiveness was checked.")],
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """A QP closes the CAPA (e-signature: the password signs)."""
    from nearfab.qaschemas import CapaOut, row_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)
    data = {"effectiveness": effectiveness, "password": password, "username": user}
    out = use_case(
        application,
        as_json,
        lambda uow: row_dict(application.qms.close_capa(uow, actor, capa_id, data), CapaOut),
    )
    done(out, as_json, f"CAPA {out['id']} closed, signature {out['signature_id']}")


@app.command("change")
def change(
    ctx: typer.Context,
    proposed: Annotated[str, typer.Argument(help="The proposed master-file version's id.")],
    user: UserOpt,
    password: PasswordOpt,
    title: Annotated[str, typer.Option(help="The change, in a line.")],
    description: Annotated[str, typer.Option(help="What changes.")],
    reason: Annotated[str, typer.Option(help="Why.")],
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Raise a change control of a master file; prints its impact on every site."""
    from nearfab.qaschemas import ChangeControlOut, row_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    data = {
        "proposed_master_file_id": proposed,
        "title": title,
        "description": description,
        "reason": reason,
    }
    out = use_case(
        application,
        as_json,
        lambda uow: row_dict(
            application.change_controls.raise_change(uow, actor, data), ChangeControlOut
        ),
    )
    if as_json:
        emit_json(out)
        return
    table = Table(title=f"change control {out['id']}: impact")
    for column in ("site", "change", "qualified machines", "open orders", "batches in progress"):
        table.add_column(column)
    for r in out["impact"]:
        table.add_row(
            r["site_code"],
            r["change"],
            ", ".join(r["qualified_machines"]) or "-",
            str(r["open_orders"]),
            str(r["batches_in_progress"]),
        )
    console.print(table)


@app.command("annual-report")
def report(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="The master file's code.")],
    year: Annotated[int, typer.Argument(help="The calendar year.")],
    user: UserOpt,
    password: PasswordOpt,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write CSV (.csv) or PDF (.pdf) here.")
    ] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """The annual report a control site owes its regulator for one master file."""
    from nearfab.qaviews import annual_report, annual_report_csv, annual_report_pdf

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    out = use_case(
        application, as_json, lambda uow: annual_report(application, uow, actor, code, year)
    )
    if out_file is not None:
        write_report(out_file, lambda: annual_report_pdf(out), lambda: annual_report_csv(out))
    if as_json:
        emit_json(out)
        return
    t = out["totals"]
    console.print(
        f"{code} {year}: {t['batches_made']} batch(es) made, {t['batches_released']} released, "
        f"{t['batches_rejected']} rejected; {len(out['deviations'])} deviation(s), "
        f"{len(out['recalls'])} recall(s), {len(out['changes'])} change(s), "
        f"{len(out['complaints'])} complaint(s)" + (f"; written to {out_file}" if out_file else "")
    )
