"""CLI: the audit trail (`nearfab audit`): one record's trail, a filtered list, the hash-chain
check and record export. `nearfab audit TYPE ID` is short for `nearfab audit show TYPE ID`."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from nearfab.cli.context import (
    console,
    emit_json,
    err_console,
    fail,
    local_actor,
    signed_in,
    state,
    use_case,
)
from nearfab.common.errors import ValidationFailed

if TYPE_CHECKING:
    from nearfab.bootstrap import App
    from nearfab.identity import Actor


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
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="With --json: the whole record as the API and the export give it (content, "
            "changed fields, audit trail, signatures), not only the trail.",
        ),
    ] = False,
    user: UserOpt = None,
    password: PasswordOpt = None,
    data_dir: DataDir = None,
) -> None:
    """The audit trail of one record, oldest first, and its signatures."""
    from nearfab.recordexport import record_view

    application = state(ctx, data_dir).app()
    who = _who(application, user, password, as_json)
    view = use_case(
        application,
        as_json,
        lambda uow: record_view(application, uow, who, entity_type, entity_id),
    )
    rows: list[dict[str, Any]] = view["audit_trail"]
    if as_json:
        emit_json(view if full else rows)
        return
    for r in rows:
        console.print(
            f"{r['seq']:>6} {r['at']} {r['actor']}: {r['action']} {r['old']} -> {r['new']} "
            f"{r['reason'] or ''}",
            markup=False,
        )
    for s in view["signatures"]:
        console.print(
            f"signed by {s['printed_name']} ({s['signer_id']}) at {s['signed_at']}: "
            f"{s['meaning']} on {s['record_type']} {s['record_id']} "
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

    from nearfab.identity import search_audit
    from nearfab.recordexport import entry_dict

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


def read_against(path: Path | None, as_json: bool) -> dict[str, Any] | None:
    """The exported checkpoint file given with --against, as JSON (exit 2 naming it if not)."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(
            ValidationFailed(
                f"--against {path}: not a readable JSON file ({exc})", field="against"
            ),
            as_json,
        )
    if not isinstance(data, dict):
        fail(ValidationFailed(f"--against {path}: not a checkpoint file", field="against"), as_json)
    return data


AgainstOpt = Annotated[
    Path | None,
    typer.Option(
        "--against",
        help="An exported checkpoint file (`nearfab audit checkpoint export`) kept outside the "
        "database: the rows it signed must still be there, unchanged.",
    ),
]


@audit_app.command("verify")
def verify(
    ctx: typer.Context,
    against: AgainstOpt = None,
    as_json: JsonOpt = False,
    user: UserOpt = None,
    password: PasswordOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Walk the whole hash chain (hashes, keyed MACs, links) and compare it with every signed
    checkpoint (and the file given with --against). Exit 0 with a summary, or 1 naming what
    changed (edited, deleted, inserted, reordered); rows after the last checkpoint are
    reported as unanchored."""
    from nearfab.identity import verify_audit_chain

    application = state(ctx, data_dir).app()
    who = _who(application, user, password, as_json)
    file = read_against(against, as_json)
    report = use_case(application, as_json, lambda uow: verify_audit_chain(uow, who, against=file))
    if as_json:
        emit_json(report.to_dict())
    elif report.ok:
        console.print(
            f"audit chain ok: {report.rows_checked} rows checked; head {report.head_seq} "
            f"{report.head_hash}; MACs {'checked' if report.keyed else 'NOT checked (no key)'}; "
            f"anchored up to seq {report.anchored_seq}, {report.unanchored_rows} unanchored "
            "row(s) after the last signed checkpoint",
            markup=False,
        )
    else:
        assert report.first_bad is not None
        err_console.print(
            f"audit chain broken: first bad row: {report.first_bad.describe()}", markup=False
        )
        for problem in report.problems[1:20]:
            err_console.print(f"  also: {problem.describe()}", markup=False)
    if not report.ok:
        raise typer.Exit(code=1)


checkpoint_app = typer.Typer(
    invoke_without_command=True,
    help="Sign the audit head and every custody ledger head with the control site's key now "
    "(`export --out FILE`: and write it to a file to keep outside the database).",
)
audit_app.add_typer(checkpoint_app, name="checkpoint")


@checkpoint_app.callback()
def checkpoint(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    user: UserOpt = None,
    password: PasswordOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Take a signed checkpoint now (also written to the control site's ledger chain)."""
    from nearfab.identity.services.audit import create_checkpoint

    if ctx.invoked_subcommand is not None:
        return
    application = state(ctx, data_dir).app()
    who = _who(application, user, password, as_json)
    made = use_case(application, as_json, lambda uow: create_checkpoint(uow, who))
    if as_json:
        emit_json(made.to_dict())
    else:
        console.print(
            f"checkpoint #{made.id}: audit seq {made.seq} {made.head_hash} at {made.at}, "
            f"{len(made.ledger)} ledger heads, signed by key {made.key_id}",
            markup=False,
        )


@checkpoint_app.command("export")
def checkpoint_export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="JSON file to write (keep it elsewhere).")],
    as_json: JsonOpt = False,
    user: UserOpt = None,
    password: PasswordOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Take a checkpoint and write it, with every earlier checkpoint's head, signed, to a file:
    `audit verify --against FILE` and `custody verify-ledger --against FILE` later prove what
    existed then."""
    from nearfab.identity.services.audit import export_checkpoint

    application = state(ctx, data_dir).app()
    who = _who(application, user, password, as_json)
    doc = use_case(application, as_json, lambda uow: export_checkpoint(uow, who))
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    body = doc["checkpoint"]
    if as_json:
        emit_json({"file": str(out), "seq": body["seq"], "head_hash": body["head_hash"]})
    else:
        console.print(
            f"wrote {out}: audit seq {body['seq']} {body['head_hash']}, "
            f"{len(body['ledger'])} ledger heads",
            markup=False,
        )


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
    from nearfab.recordexport import FORMATS, export_record

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
