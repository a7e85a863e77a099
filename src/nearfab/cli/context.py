"""Per-invocation state: settings from --data-dir / NEARFAB_*, the app, output helpers."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from nearfab.common.errors import DomainError, ValidationFailed
from nearfab.config import Settings

# the platform is imported when a command runs, not when the CLI starts: `nearfab --help`
# must answer at once (tests/cli/test_cli_startup.py)
if TYPE_CHECKING:
    from nearfab.bootstrap import App
    from nearfab.identity import Actor

# options every command takes
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="NEARFAB_DATA_DIR",
        help="Folder for the SQLite database and keys (default: per-user data folder).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
# an e-signature's components on a signing command (the same options on every one)
User = Annotated[str, typer.Option("--user", help="Your username (typed as the user ID).")]
Password = Annotated[str, typer.Option("--password", help="Your password (signature component).")]
Totp = Annotated[
    str | None, typer.Option("--totp", help="Authenticator code, where signing demands it.")
]
# who does it: --user, and a --password asked for (hidden) when not given
UserOpt = Annotated[str, typer.Option("--user", help="Who does it (username).")]
PasswordOpt = Annotated[
    str, typer.Option("--password", prompt=True, hide_input=True, help="Their password.")
]

console = Console()
err_console = Console(stderr=True)


def build_app(settings: Settings, **kwargs: Any) -> App:
    """The platform, wired when a command first needs it (bootstrap.build_app)."""
    from nearfab.bootstrap import build_app as wire

    return wire(settings, **kwargs)


@dataclass
class CliState:
    data_dir: Path | None = None
    _app: App | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir) if self.data_dir else Settings()

    def app(self, **kwargs: Any) -> App:
        from nearfab.identity import KeyMismatch

        if self._app is None:
            try:
                self._app = build_app(self.settings(), **kwargs)
            except KeyMismatch as exc:
                err_console.print(f"[bold red]cannot start[/]: {escape(str(exc))}")
                raise typer.Exit(code=2) from None
        return self._app


def state(ctx: typer.Context, data_dir: Path | None = None) -> CliState:
    """The invocation's state; a command's own --data-dir wins over the global one."""
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    if data_dir is not None:
        obj.data_dir = data_dir
    return obj


def local_actor() -> Actor:
    """Who runs a CLI command without credentials: the operating-system user holding the data
    folder, recorded as such in the audit trail (like a database owner's console)."""
    from nearfab.identity import Actor

    who = getpass.getuser()
    return Actor(
        user_id=f"system:cli:{who}",
        username=f"cli:{who}",
        full_name=f"nearfab CLI ({who})",
        roles=("system",),
    )


def login(app: App, username: str, password: str) -> Actor:
    from nearfab.identity import actor_of

    with app.uow() as uow:
        return actor_of(app.users.authenticate(uow, username, password), uow.session)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def done(out: Any, as_json: bool, text: str) -> None:
    """A command's answer: `out` as JSON with --json, else the line `text` for people."""
    if as_json:
        emit_json(out)
    else:
        console.print(text)


def fail(exc: DomainError, as_json: bool = False) -> NoReturn:
    if as_json:
        emit_json({"error": exc.to_dict()})
    else:
        where = f" [{exc.field}]" if exc.field else ""
        # escape: "[field]" and user text must not be read as rich markup
        err_console.print(
            f"[bold red]refused[/] ({exc.code}){escape(where)}: {escape(exc.message)}"
        )
    raise typer.Exit(code=2)


def read_json_file(path: Path, as_json: bool, field: str = "file") -> Any:
    """The JSON document in the file given with --`field`; unreadable or not JSON: a refusal
    naming the field, exit code 2."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(ValidationFailed(f"{field}: {exc}", field=field), as_json)


def write_report(path: Path, pdf: Callable[[], bytes], csv: Callable[[], str]) -> None:
    """Write a report to `path`: PDF when it ends in .pdf (any case), else CSV (UTF-8); only
    the chosen one is made."""
    if path.suffix.lower() == ".pdf":
        path.write_bytes(pdf())
    else:
        path.write_text(csv(), encoding="utf-8")


T = TypeVar("T")


def use_case(application: App, as_json: bool, step: Callable[[Any], T]) -> T:
    """Run one use case in its own unit of work; a refusal is printed and exits with code 2."""
    try:
        with application.uow() as uow:
            return step(uow)
    except DomainError as exc:
        fail(exc, as_json)


def signed_in(application: App, username: str, password: str, as_json: bool) -> Actor:
    """The person behind --user/--password, or a refusal and exit code 2."""
    try:
        return login(application, username, password)
    except DomainError as exc:
        fail(exc, as_json)


def signer(application: App, username: str, password: str, as_json: bool) -> Actor:
    """Who means to sign: the password is checked by the signature itself, inside the use case,
    so a wrong one is refused and audited on the record being signed, not only as a login."""
    from nearfab.identity import actor_of

    with application.uow() as uow:
        user = application.users.by_username(uow, username)
        actor = actor_of(user, uow.session) if user is not None and user.active else None
    if actor is None:
        return signed_in(application, username, password, as_json)  # refused, audited
    return actor


def app_as(
    ctx: typer.Context,
    data_dir: Path | None,
    username: str,
    password: str,
    as_json: bool,
    *,
    signing: bool = False,
) -> tuple[App, Actor]:
    """The invocation's app and the person behind --user/--password: `signed_in`, or `signer`
    when the command's use case signs with that password (`signing=True`)."""
    application = state(ctx, data_dir).app()
    who = signer if signing else signed_in
    return application, who(application, username, password, as_json)
