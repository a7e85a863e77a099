"""`nearfab worklist`: what the --user has to do now on the open batches of their sites (the
/worklist page's view, nearfab/worklist.py). Sign with `nearfab batches sign-step`."""

from __future__ import annotations

from typing import Any

import typer

from nearfab.cli.context import (
    DataDir,
    JsonOpt,
    PasswordOpt,
    UserOpt,
    app_as,
    console,
    emit_json,
    use_case,
)


def worklist(
    ctx: typer.Context,
    user: UserOpt,
    password: PasswordOpt,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Steps due now (before the machine starts / after the run), entries to verify as a
    second person, and for a QP the audit trails to review and the batches ready to certify."""
    from nearfab.worklist import MACHINE_WAITS, worklist_view

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    out: dict[str, Any] = use_case(
        application, as_json, lambda uow: worklist_view(application, uow, actor)
    )
    if as_json:
        emit_json(out)
        return
    for s in out["steps"]:
        fields = ", ".join(f"{k} ({v})" for k, v in s["entry_fields"].items()) or "no entry"
        when = f"{s['phase']}; {MACHINE_WAITS}" if s["machine_waits"] else s["phase"]
        console.print(
            f"sign  {s['batch_number']} {s['code']} ({when}): {s['title']} [{fields}]",
            markup=False,
        )
    for w in out["waiting"]:
        console.print(f"wait  {w['batch_number']} {w['code']}: {w['reason']}", markup=False)
    for v in out["verifications"]:
        waits = f" ({MACHINE_WAITS})" if v["machine_waits"] else ""
        console.print(
            f"verify {v['batch_number']} {v['code']}: {v['entry']} by {v['performed_by']}{waits}",
            markup=False,
        )
    for r in out["reviews"]:
        console.print(f"review {r['batch_number']}: {r['reason']}", markup=False)
    for r in out["certify"]:
        console.print(f"certify {r['batch_number']} (nearfab release pending)", markup=False)
    if not any(out[k] for k in ("steps", "waiting", "verifications", "reviews", "certify")):
        console.print("Nothing is due now.")
