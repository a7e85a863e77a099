"""CLI: the audit trail (`nearfab audit`): one record's trail, a filtered list, the hash-chain
check and record export. `nearfab audit TYPE ID` is short for `nearfab audit show TYPE ID`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from nearfab.bootstrap import App
from nearfab.cli.context import (
    console,
    emit_json,
    err_console,
    local_actor,
    signed_in,
    state,
    use_case,
)
from nearfab.identity import Actor, search_audit, verify_audit_chain
from nearfab.recordexport import FORMATS, entry_dict, export_record, record_view


class _ShowByDefault(TyperGroup):
    """`nearfab audit order ord_1` runs `show order ord_1` (the command before the group)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().resolve_command(ctx, args)


audit_app = typer.Typer(
    cls=_ShowByDefault,
    no_args_is_help=True,
    help="Audit trail: show a record's trail (`nearfab audit TYPE ID` is short for `show`), "
    "list rows, verify the hash chain, export a record with its signatures.",
)

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data folder (default: NEARFAB_DATA_DIR).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
UserOpt = Annotated[
    str | None, typer.Option("--user", help="Act as this user (default: the local system user).")
]
PasswordOpt = Annotated[str | None, typer.Option("--password", help="Their password.")]


def _who(application: App, user: str | None, password: str | None, as_json: bool) -> Actor:
    if user is None:
        return local_actor()
    return signed_in(application, user, password or "", as_json)


@audit_app.command("show")
def show(
    ctx: typer.Context,
    entity_type: str,
    entity_id: str,
    as_json: JsonOpt = False,
    user: UserOpt = None,
    password: PasswordOpt = None,
    data_dir: DataDir = None,
) -> None:
    """The audit trail of one record, oldest first."""
    application = state(ctx, data_dir).app()
    who = _who(application, user, password, as_json)
    view = use_case(
        application,
        as_json,
        lambda uow: record_view(application, uow, who, entity_type, entity_id),
    )
    rows: list[dict[str, Any]] = view["audit_trail"]
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        console.print(
            f"{r['seq']:>6} {r['at']} {r['actor']}: {r['action']} {r['old']} -> {r['new']} "
            f"{r['reason'] or ''}",
            markup=False,
        )
    for s in view["signatures"]:
        console.print(
            f"signed by {s['printed_name']} at {s['signed_at']}: {s['meaning']} "
            f"(valid now: {s['valid_for_current_content']})",
            markup=False,
        )


@audit_app.command("list")
def list_rows(
    ctx: typer.Context,
    site: Annotated[str | None, typer.Option("--site", help="Site id.")] = None,
    since: Annotated[
        datetime | None, typer.Option("--since", help="From (UTC).", formats=["%Y-%m-%dT%H:%M:%S"])
    ] = None,
    until: Annotated[
        datetime | None, typer.Option("--until", help="To (UTC).", formats=["%Y-%m-%dT%H:%M:%S"])
    ] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="User id or name.")] = None,
    action: Annotated[str | None, typer.Option("--action")] = None,
    entity_type: Annotated[str | None, typer.Option("--type", help="Record type.")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    offset: Annotated[int, typer.Option("--offset")] = 0,
    as_json: JsonOpt = False,
    user: UserOpt = None,
    password: PasswordOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Audit rows, newest first, filtered (times are UTC)."""
    from datetime import UTC

    application = state(ctx, data_dir).app()
    who = _who(application, user, password, as_json)
    rows, total = use_case(
        application,
        as_json,
        lambda uow: search_audit(
            uow,
            who,
            site_id=site,
            since=since.replace(tzinfo=UTC) if since else None,
            until=until.replace(tzinfo=UTC) if until else None,
            who=actor,
            action=action,
            entity_type=entity_type,
            limit=limit,
            offset=offset,
        ),
    )
    items = [entry_dict(r) for r in rows]
    if as_json:
        emit_json({"items": items, "total": total, "limit": limit, "offset": offset})
        return
    for r in items:
        console.print(
            f"{r['seq']:>6} {r['at']} {r['actor']}: {r['action']} {r['entity_type']} "
            f"{r['entity_id']} {r['old']} -> {r['new']} {r['reason'] or ''}",
            markup=False,
        )
    console.print(f"{len(items)} of {total} rows")


@audit_app.command("verify")
def verify(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    user: UserOpt = None,
    password: PasswordOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Walk the whole hash chain. Exit 0 with a summary, or 1 naming the first bad row (edited,
    deleted before it, inserted, reordered)."""
    application = state(ctx, data_dir).app()
    who = _who(application, user, password, as_json)
    report = use_case(application, as_json, lambda uow: verify_audit_chain(uow, who))
    if as_json:
        emit_json(report.to_dict())
    elif report.ok:
        console.print(
            f"audit chain ok: {report.rows_checked} rows checked; head {report.head_seq} "
            f"{report.head_hash}",
            markup=False,
        )
    else:
        assert report.first_bad is not None
        err_console.print(
            f"audit chain broken: first bad row: {report.first_bad.describe()}", markup=False
        )
    if not report.ok:
        raise typer.Exit(code=1)


@audit_app.command("export")
def export(
    ctx: typer.Context,
    entity_type: str,
    entity_id: str,
    out: Annotated[Path, typer.Option("--out", help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", help="json (electronic copy) or pdf.")] = "json",
    as_json: JsonOpt = False,
    user: UserOpt = None,
    password: PasswordOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Export one record with its audit trail and signatures."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"one of {', '.join(FORMATS)}", param_hint="--format")
    application = state(ctx, data_dir).app()
    who = _who(application, user, password, as_json)
    body, media_type, _name = use_case(
        application,
        as_json,
        lambda uow: export_record(application, uow, who, entity_type, entity_id, fmt),
    )
    out.write_bytes(body)
    if as_json:
        emit_json({"file": str(out), "media_type": media_type, "bytes": len(body)})
    else:
        console.print(f"wrote {out} ({media_type}, {len(body)} bytes)", markup=False)
