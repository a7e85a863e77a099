"""`nearfab builds`: the control site's approval of builds from the command line: the planned
builds whose product's family wants the control site's approval at their kind of site, and the
approver's e-signature that signs a build's job ticket (the same use cases as
`/api/v1/builds/awaiting-approval`, `/api/v1/jobs/{job_id}/build-approval` and the
`/builds/approvals` page)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from nearfab.cli.context import (
    DataDir,
    JsonOpt,
    Password,
    Totp,
    User,
    app_as,
    console,
    done,
    emit_json,
    local_actor,
    state,
    use_case,
)

app = typer.Typer(no_args_is_help=True, help="Builds awaiting the control site's approval.")


@app.command("awaiting")
def awaiting(ctx: typer.Context, as_json: JsonOpt = False, data_dir: DataDir = None) -> None:
    """Planned builds waiting for the control site's approval, with the role that approves."""
    application = state(ctx, data_dir).app()
    rows = use_case(
        application,
        as_json,
        lambda uow: [
            r.to_dict() for r in application.production.builds_awaiting_approval(uow, local_actor())
        ],
    )
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"{len(rows)} build(s) awaiting approval")
    for column in ("job", "site", "machine", "product", "makes", "approved by"):
        table.add_column(column, no_wrap=column == "job", overflow="fold")
    for r in rows:
        table.add_row(
            r["job_id"],
            f"{r['site_code']} ({r['site_kind']})",
            r["machine_name"],
            r["master_file"],
            r["design"],
            r["approver"],
        )
    console.print(table)


@app.command("approve")
def approve(
    ctx: typer.Context,
    job_id: str,
    user: User,
    password: Password,
    meaning: Annotated[
        str | None,
        typer.Option(help='What the signature means (default "<site kind> build approval").'),
    ] = None,
    totp: Totp = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Approve one build with your e-signature: its job ticket is signed, naming it."""
    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)
    ticket = use_case(
        application,
        as_json,
        lambda uow: application.production.approve_build(
            uow, actor, job_id, password=password, meaning=meaning, username=user, totp=totp
        ),
    )
    approval = ticket.payload["build_approval"]
    done(
        ticket.to_dict(),
        as_json,
        f"build {job_id} approved ({approval['meaning']}, signature {approval['signature_id']}); "
        f"ticket {ticket.ticket_hash[:16]} signed",
    )
