"""Issue 13 item 12: the README's "same flow from a terminal" works exactly as written.

The lines are read from README.md at test time, so the README cannot drift from the CLI: each
command line of the block runs as written (continuations joined, comments dropped, the shell
variables it sets expanded), with only the README's placeholders (BATCH_ID, ORDER_ID,
PACK_ID, the scan and the patient, which a user copies from earlier output) filled from what
earlier commands printed. Commands run in process (tests/cli_helpers.py), in a temporary
folder, as `.venv/bin/nearfab`.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from tests import cli_helpers

from nearfab.custody import decode_datamatrix

README = Path(__file__).resolve().parents[2] / "README.md"
PASSWORD = "readme-flow-password-1"


def readme_terminal_flow() -> list[str]:
    """The command lines of the block after "The same flow from a terminal:", continuations
    joined."""
    text = README.read_text(encoding="utf-8")
    found = re.search(r"The same flow from a terminal:\s*```sh\n(.*?)```", text, re.S)
    assert found, "README.md has no 'The same flow from a terminal' block"
    joined = found.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


def _expand(line: str, variables: dict[str, str]) -> str:
    # $NAME and ${NAME}, as a POSIX shell would (inside double quotes too)
    return re.sub(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", lambda m: variables.get(m.group(1), ""), line)


def _assignments(words: list[str]) -> dict[str, str]:
    return dict(word.split("=", 1) for word in words)


def test_readme_flow_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the README runs from the clone's root; a folder that links its tests/ stands in for it,
    # so `--out pack.png` lands in the test's folder, not in the clone
    (tmp_path / "tests").symlink_to(README.parent / "tests")
    monkeypatch.chdir(tmp_path)
    lines = readme_terminal_flow()
    variables: dict[str, str] = {}
    env: dict[str, str | None] = {"NEARFAB_DATABASE_URL": None}
    filled: dict[str, str] = {}
    ran: list[str] = []
    outputs: dict[str, Any] = {}

    for line in lines:
        if line.startswith("export "):
            # the README's password is a placeholder; the test chooses its own
            assigned = _assignments(shlex.split(line, comments=True)[1:])
            assigned["NEARFAB_DATA_DIR"] = str(tmp_path / "nearfab")
            if "NEARFAB_DEMO_PASSWORD" in assigned:
                assigned["NEARFAB_DEMO_PASSWORD"] = PASSWORD
            variables.update(assigned)
            env.update(assigned)
            continue
        words = shlex.split(line, comments=True)
        if len(words) == 1 and "=" in words[0] and not words[0].startswith("."):
            # PW="--password $NEARFAB_DEMO_PASSWORD": a shell variable, expanded where used
            name, value = words[0].split("=", 1)
            variables[name] = _expand(value, variables)
            continue
        words = shlex.split(_expand(line, variables), comments=True)
        assert words[0] == ".venv/bin/nearfab", line
        args = [filled.get(w, w) for w in words[1:]]
        args = [_fill_scan(a, filled) for a in args]
        proc = cli_helpers.run(args, env=env)
        assert proc.returncode == 0, f"README line failed: {line}\n{proc.stdout}\n{proc.stderr}"
        ran.append(args[0] + " " + args[1] if len(args) > 1 else args[0])
        outputs[line] = proc.stdout
        _learn(args, proc.stdout, filled, env)

    # every command of the block ran, in order, ending with the hand-over to the patient
    assert ran[0] == "init --demo" and ran[-1].startswith("dispense")
    assert "dispensed" in outputs[lines[-1]].lower(), outputs[lines[-1]]
    assert (tmp_path / "pack.png").read_bytes().startswith(b"\x89PNG")


def _fill_scan(arg: str, filled: dict[str, str]) -> str:
    if arg.startswith("(01)…"):
        return filled["SCAN"]
    if arg == "PT-…":
        return filled["PATIENT"]
    return arg


def _learn(args: list[str], stdout: str, filled: dict[str, str], env: dict[str, Any]) -> None:
    """What a user would copy from a command's output into the next README line."""
    data = ["--data-dir", env["NEARFAB_DATA_DIR"]]
    if args[:2] == ["network", "run"] and "BATCH_ID" not in filled:
        # the batch record opened, its machine waiting for the steps before it: the line
        # names the batch by its id, whole, and the steps the person signs next
        (line,) = [x for x in stdout.splitlines() if "waits for the steps before" in x]
        filled["BATCH_ID"] = line.split("waiting: ", 1)[1].split(":", 1)[0]
        assert filled["BATCH_ID"].startswith("bat_"), line
        assert "line_clearance (" in line and "filament_loaded (" in line, line
    elif args[:2] == ["worklist", "--user"]:
        # the operator's worklist offers the first step its machine waits for, saying so
        assert stdout.count("due now: the machine waits for this") == 1, stdout
        assert "line_clearance" in stdout, stdout
    elif args[:2] == ["order", "submit"]:
        orders = json.loads(cli_helpers.run([*data, "order", "list", "--json"], env=env).stdout)
        filled["ORDER_ID"] = (
            orders[0]["id"] if isinstance(orders, list) else orders["items"][0]["id"]
        )
    elif args[:2] == ["release", "pending"]:
        pending = json.loads(
            cli_helpers.run([*data, "release", "pending", "--json"], env=env).stdout
        )
        (batch,) = pending
        # what the person copies must be on the screen, whole; the batch the machine made
        assert batch["batch_id"] in stdout, stdout
        assert batch["batch_id"] == filled["BATCH_ID"]
    elif args[:2] == ["order", "show"]:
        shown = json.loads(stdout)
        filled["PACK_ID"] = shown["packs"][0]["id"]
        filled["PATIENT"] = shown["patient_ref"]
    elif args[0] == "label":
        filled["SCAN"] = decode_datamatrix(Path(args[-1]).read_bytes())
