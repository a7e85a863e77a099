"""`nearfab users`: list, create, deactivate, reactivate, grant, revoke, unlock, set-password,
request-grant, requests, approve, refuse (qp/admin grants and QP naming need a second admin).

Without `--user`, a command acts as the local operating-system user (`system:cli:<name>`),
recorded as such in the audit trail; with `--user`/`--password` it acts as that person and
the permission matrix applies (only administrators manage accounts, at their own site)."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from nearfab.cli.context import (
    DataDir,
    JsonOpt,
    console,
    emit_json,
    local_actor,
    signed_in,
    state,
    use_case,
)
from nearfab.common.canonical import to_jsonable

if TYPE_CHECKING:
    from nearfab.bootstrap import App
    from nearfab.identity import Actor

app = typer.Typer(no_args_is_help=True, help="User accounts: never deleted, only deactivated.")

UserOpt = Annotated[
    str | None, typer.Option("--user", help="Act as this person (their password is asked).")
]
PasswordOpt = Annotated[
    str | None, typer.Option("--password", help="That person's password.", envvar=None)
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")]


def _actor(application: App, user: str | None, password: str | None, as_json: bool) -> Actor:
    if user is None:
        return local_actor()
    secret = password if password is not None else getpass.getpass(f"password for {user}: ")
    return signed_in(application, user, secret, as_json)


def _show(application: App, user_id: str, as_json: bool, done: str) -> None:
    with application.uow() as uow:
        data = to_jsonable(
            application.users.describe(application.users.get(uow, user_id), uow.clock.now())
        )
    if as_json:
        emit_json(data)
    else:
        roles = ", ".join(data["roles"]) or "-"
        console.print(f"{done}: {escape(data['username'])} ({data['id']}), roles {roles}")


def _user_id(application: App, who: str, as_json: bool) -> str:
    """A username or a user id."""
    with application.uow() as uow:
        found = application.users.by_username(uow, who)
        if found is not None:
            return found.id
    return who


def _acting_on(
    ctx: typer.Context,
    data_dir: Path | None,
    user: str | None,
    password: str | None,
    who: str,
    as_json: bool,
) -> tuple[App, Actor, str]:
    """The application, who acts (signed in or the local user) and the account they act on."""
    application = state(ctx, data_dir).app()
    actor = _actor(application, user, password, as_json)
    return application, actor, _user_id(application, who, as_json)


@app.command("list")
def list_users(
    ctx: typer.Context,
    user: UserOpt = None,
    password: PasswordOpt = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Every account you may see (active, deactivated, locked)."""
    application = state(ctx, data_dir).app()
    actor = _actor(application, user, password, as_json)

    def rows(uow: Any) -> list[dict[str, Any]]:
        now = uow.clock.now()
        return [
            to_jsonable(application.users.describe(u, now))
            for u in application.users.list_users(uow, actor)
        ]

    data = use_case(application, as_json, rows)
    if as_json:
        emit_json(data)
        return
    table = Table("username", "name", "roles", "site", "state", "password expires", "TOTP")
    for u in data:
        state_ = "deactivated" if not u["active"] else ("locked" if u["locked"] else "active")
        table.add_row(
            escape(u["username"]),
            escape(u["full_name"]),
            ", ".join(u["roles"]),
            u["home_site_id"] or "network",
            state_ + (" (temporary password)" if u["must_change_password"] else ""),
            str(u["password_expires_at"])[:10],
            "yes" if u["totp_enabled"] else "no",
        )
    console.print(table)


@app.command()
def create(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Login name (never reused).")],
    full_name: Annotated[str, typer.Option("--name", help="Full (printed) name.")],
    role: Annotated[list[str], typer.Option("--role", help="A role; repeat for several.")],
    new_password: Annotated[
        str | None,
        typer.Option("--new-password", help="Temporary password (asked if omitted)."),
    ] = None,
    site: Annotated[str | None, typer.Option("--site", help="Home site id.")] = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Create an account; a password set by an administrator is changed at first login."""
    application = state(ctx, data_dir).app()
    actor = _actor(application, user, password, as_json)
    secret = new_password or getpass.getpass(f"temporary password for {username}: ")
    made = use_case(
        application,
        as_json,
        lambda uow: application.users.create_user(
            uow,
            actor,
            username=username,
            full_name=full_name,
            roles=role,
            password=secret,
            home_site_id=site,
            temporary=True,
        ),
    )
    _show(application, made.id, as_json, "created")


def _simple(action: str) -> Any:
    def command(
        ctx: typer.Context,
        who: Annotated[str, typer.Argument(help="Username or user id.")],
        reason: ReasonOpt,
        user: UserOpt = None,
        password: PasswordOpt = None,
        as_json: JsonOpt = False,
        data_dir: DataDir = None,
    ) -> None:
        application, actor, user_id = _acting_on(ctx, data_dir, user, password, who, as_json)
        step = getattr(application.users, action)
        use_case(application, as_json, lambda uow: step(uow, actor, user_id, reason=reason))
        _show(
            application, user_id, as_json, f"{action}d" if action.endswith("e") else f"{action}ed"
        )

    command.__doc__ = {
        "deactivate": "Deactivate an account: no login, token or signature; nothing is deleted.",
        "reactivate": "Reactivate a deactivated account.",
        "unlock": "Unlock an account locked after failed attempts.",
    }[action]
    return command


app.command("deactivate")(_simple("deactivate"))
app.command("reactivate")(_simple("reactivate"))
app.command("unlock")(_simple("unlock"))


def _roles(grant: bool) -> Any:
    def command(
        ctx: typer.Context,
        who: Annotated[str, typer.Argument(help="Username or user id.")],
        role: Annotated[list[str], typer.Option("--role", help="A role; repeat for several.")],
        reason: ReasonOpt,
        user: UserOpt = None,
        password: PasswordOpt = None,
        as_json: JsonOpt = False,
        data_dir: DataDir = None,
    ) -> None:
        application, actor, user_id = _acting_on(ctx, data_dir, user, password, who, as_json)
        use_case(
            application,
            as_json,
            lambda uow: application.users.change_roles(
                uow,
                actor,
                user_id,
                grant=role if grant else (),
                revoke=() if grant else role,
                reason=reason,
            ),
        )
        _show(application, user_id, as_json, "granted" if grant else "revoked")

    command.__doc__ = (
        "Grant roles (audited with the old and new role lists)."
        if grant
        else "Revoke roles (audited with the old and new role lists)."
    )
    return command


app.command("grant")(_roles(True))
app.command("revoke")(_roles(False))


@app.command("set-password")
def set_password(
    ctx: typer.Context,
    who: Annotated[str, typer.Argument(help="Username or user id.")],
    reason: ReasonOpt,
    new_password: Annotated[
        str | None, typer.Option("--new-password", help="Temporary password (asked if omitted).")
    ] = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Set a temporary password (changed at the next login); the user's sessions end."""
    application, actor, user_id = _acting_on(ctx, data_dir, user, password, who, as_json)
    secret = new_password or getpass.getpass(f"temporary password for {who}: ")
    use_case(
        application,
        as_json,
        lambda uow: application.users.reset_password(
            uow, actor, user_id, password=secret, reason=reason
        ),
    )
    _show(application, user_id, as_json, "password set")


@app.command("signing-policy")
def signing_policy(
    ctx: typer.Context,
    reason: ReasonOpt,
    totp: Annotated[
        bool, typer.Option("--totp/--no-totp", help="Require a TOTP code when signing.")
    ],
    site: Annotated[str | None, typer.Option("--site", help="Site id or code.")] = None,
    master_file: Annotated[
        str | None, typer.Option("--master-file", help="Master-file code (its effective version).")
    ] = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Whether signatures on a site's or a product's records need a TOTP code (21 CFR 11.200);
    audited with the reason."""
    if (site is None) == (master_file is None):
        raise typer.BadParameter("give exactly one of --site and --master-file")
    application = state(ctx, data_dir).app()
    actor = _actor(application, user, password, as_json)

    def step(uow: Any) -> dict[str, Any]:
        if site is not None:
            row = application.network.set_signing_policy(
                uow,
                actor,
                application.network.get_site(uow, site).id,
                totp_for_signing=totp,
                reason=reason,
            )
            return {"site_id": row.id, "code": row.code, "totp_for_signing": row.totp_for_signing}
        assert master_file is not None
        mf = application.master_files.effective_for_code(uow, master_file)
        mf = application.master_files.set_signing_policy(
            uow, actor, mf.id, totp_for_signing=totp, reason=reason
        )
        return {"master_file_id": mf.id, "code": mf.code, "totp_for_signing": mf.totp_for_signing}

    result = use_case(application, as_json, step)
    if as_json:
        emit_json(result)
    else:
        console.print(f"{result['code']}: TOTP for signing {'on' if totp else 'off'}")


@app.command("patient-identification")
def patient_identification(
    ctx: typer.Context,
    reason: ReasonOpt,
    site: Annotated[str, typer.Option("--site", help="Site id or code.")],
    birth_date: Annotated[
        bool,
        typer.Option(
            "--birth-date-required/--no-birth-date-required",
            help="Hand-overs at this site need the date of birth as a second identifier.",
        ),
    ],
    mrn_system: Annotated[
        str | None,
        typer.Option("--mrn-system", help="The FHIR identifier system of its hospital numbers."),
    ] = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """How a site identifies patients at dispense and at the bedside
    (docs/patient-identification.md); audited with the reason."""
    application = state(ctx, data_dir).app()
    actor = _actor(application, user, password, as_json)

    def step(uow: Any) -> dict[str, Any]:
        row = application.network.set_patient_identification(
            uow,
            actor,
            application.network.get_site(uow, site).id,
            birth_date_required=birth_date,
            mrn_system=mrn_system,
            reason=reason,
        )
        return {
            "site_id": row.id,
            "code": row.code,
            "birth_date_required": row.birth_date_required,
            "mrn_system": row.mrn_system,
        }

    result = use_case(application, as_json, step)
    if as_json:
        emit_json(result)
    else:
        console.print(
            f"{result['code']}: date of birth {'required' if birth_date else 'not required'}"
        )


# --- separation of duties: qp/admin grants and QP naming wait for a second administrator -----
@app.command("request-grant")
def request_grant(
    ctx: typer.Context,
    who: Annotated[str, typer.Argument(help="Username or user id.")],
    role: Annotated[str, typer.Option("--role", help="qp or admin.")],
    reason: ReasonOpt,
    user: UserOpt = None,
    password: PasswordOpt = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Ask for qp or admin to be granted; another control-site administrator approves."""
    application, actor, user_id = _acting_on(ctx, data_dir, user, password, who, as_json)
    row = use_case(
        application,
        as_json,
        lambda uow: application.users.request_grant(uow, actor, user_id, role=role, reason=reason),
    )
    _show_request(application, row.id, as_json, "requested")


def _show_request(application: App, request_id: str, as_json: bool, done: str) -> None:
    from nearfab.identity import approval_dict

    with application.uow() as uow:
        data = to_jsonable(approval_dict(application.users.requests_get(uow, request_id)))
    if as_json:
        emit_json(data)
        return
    what = data["role"] or f"QP for {data['master_file_code']}"
    console.print(f"{done}: {data['id']} ({data['kind']}: {escape(what)}), {data['status']}")


@app.command("requests")
def requests(
    ctx: typer.Context,
    status: Annotated[
        str, typer.Option("--status", help="pending, approved, refused or all.")
    ] = "pending",
    user: UserOpt = None,
    password: PasswordOpt = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Approval requests (qp/admin grants, QPs named to master files), newest first."""
    from nearfab.identity import approval_dict

    application = state(ctx, data_dir).app()
    actor = _actor(application, user, password, as_json)
    wanted = None if status == "all" else status
    data = use_case(
        application,
        as_json,
        lambda uow: [
            to_jsonable(approval_dict(r)) for r in application.users.requests(uow, actor, wanted)
        ],
    )
    if as_json:
        emit_json(data)
        return
    table = Table("id", "kind", "about", "what", "status", "requested by", "reason")
    for r in data:
        table.add_row(
            r["id"],
            r["kind"],
            r["subject_user_id"],
            escape(r["role"] or f"QP for {r['master_file_code']}"),
            r["status"],
            escape(r["requested_by_name"]),
            escape(r["reason"]),
        )
    console.print(table)


def _decision(approve: bool) -> Any:
    def command(
        ctx: typer.Context,
        request_id: Annotated[str, typer.Argument(help="The request's id (apr_...).")],
        reason: ReasonOpt,
        user: UserOpt = None,
        password: PasswordOpt = None,
        as_json: JsonOpt = False,
        data_dir: DataDir = None,
    ) -> None:
        application = state(ctx, data_dir).app()
        actor = _actor(application, user, password, as_json)
        use_case(
            application,
            as_json,
            lambda uow: application.users.decide_request(
                uow, actor, request_id, approve=approve, reason=reason
            ),
        )
        _show_request(application, request_id, as_json, "approved" if approve else "refused")

    command.__doc__ = (
        "Approve a request as a second control-site administrator (it applies now, audited)."
        if approve
        else "Refuse a request as a second control-site administrator (audited)."
    )
    return command


app.command("approve")(_decision(True))
app.command("refuse")(_decision(False))
