"""Run the `nearfab` command line in the test process, as `python -m nearfab` would.

A real `nearfab` process imports the whole stack (about 5 s on the CI machine) before it does
anything; Typer's CliRunner calls the same Typer app (`nearfab.cli.main:app`, the console
script's entry point) with the same arguments, environment, stdout and stderr, in
milliseconds. Two tests keep real processes as smoke tests of the entry point itself
(tests/e2e/test_cli_flow.py: `test_demo_serves_the_dashboard`,
`test_cli_refuses_a_data_folder_with_other_keys`).

`run` returns a `subprocess.CompletedProcess`, so a test reads the same fields either way. An
exception that escapes a command (a real process would print a traceback and exit 1) is
raised in the test, with its own traceback, rather than turned into an exit code.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import typer.main
import typer.testing
from typer.testing import CliRunner

import nearfab.cli.context as cli_context
from nearfab.bootstrap import App
from nearfab.cli.main import app as cli_app


@contextmanager
def _apps_disposed() -> Iterator[None]:
    """Dispose of every App a command built once it returns (a process exit would close its
    database connections)."""
    built: list[App] = []
    real = cli_context.build_app

    def recording(*args: Any, **kwargs: Any) -> App:
        application = real(*args, **kwargs)
        built.append(application)
        return application

    cli_context.build_app = recording  # type: ignore[assignment]
    try:
        yield
    finally:
        cli_context.build_app = real
        for application in built:
            application.engine.dispose()


# Typer turns the app into its Click group (every command's signature and type hints read,
# about 0.15 s of CPU for this CLI) at each `CliRunner.invoke`; the group is built once per
# process here and invoked again, as a real process would build it once (Click commands keep
# no state between invocations: each run gets a new context).
_COMMANDS: dict[int, tuple[typer.Typer, Any]] = {}


def _command(typer_app: typer.Typer) -> Any:
    """`typer.main.get_command(typer_app)`, built once per process."""
    built = _COMMANDS.get(id(typer_app))
    if built is None or built[0] is not typer_app:
        built = _COMMANDS[id(typer_app)] = (typer_app, typer.main.get_command(typer_app))
    return built[1]


@contextmanager
def _built_once() -> Iterator[None]:
    """`CliRunner.invoke` with the Click group built once (`_command`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", _command)
        yield


def run(
    args: list[str],
    env: Mapping[str, str | None] | None = None,
    data_dir: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`nearfab [--data-dir DIR] ARGS...` in process; `env` entries set (or, when None, unset)
    environment variables for the duration of the command."""
    argv = (["--data-dir", str(data_dir)] if data_dir is not None else []) + list(args)
    with _apps_disposed(), _built_once():
        result = CliRunner().invoke(cli_app, argv, env=dict(env or {}), prog_name="nearfab")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(
        ["nearfab", *argv], result.exit_code, result.stdout, result.stderr
    )
