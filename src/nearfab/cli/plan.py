"""`nearfab plan`: make a new network plan and show it (late and unplaced orders say why)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from nearfab.cli.context import console, emit_json, local_actor, state, use_case
from nearfab.scheduling.schemas import plan_dict


def plan(
    ctx: typer.Context,
    horizon: Annotated[float, typer.Option(help="Planning horizon in hours.")] = 72.0,
    time_limit: Annotated[float, typer.Option(help="CP-SAT time limit in seconds.")] = 10.0,
    reason: Annotated[str, typer.Option(help="Why you plan now (kept with the version).")] = (
        "planned from the command line"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder.")] = None,
) -> None:
    """Plan every designed order and every job not started yet across the network."""
    application = state(ctx, data_dir).app()
    version = use_case(
        application,
        as_json,
        lambda uow: application.scheduling.plan(
            uow, local_actor(), reason=reason, horizon_h=horizon, time_limit_s=time_limit
        ),
    )
    data = plan_dict(version)
    if as_json:
        emit_json(data)
        return
    console.print(
        f"plan v{data['number']} ({escape(data['trigger'])}, {data['solver']}, {data['status']}):"
        f" weighted tardiness {data['weighted_tardiness']}, gap {data['gap']:.1%},"
        f" {len(data['changes'])} change(s), {data['solve_s']} s"
    )
    for a in sorted(data["assignments"], key=lambda a: (a["machine"], a["start"])):
        late = f" [red]late {a['late_min']} min[/]" if a["late_min"] else ""
        frozen = " (running)" if a["frozen"] else ""
        console.print(
            f"  {escape(a['machine'])}: {a['order_id']} {a['start'][11:16]}–{a['end'][11:16]}"
            f"{frozen}{late}"
        )
    for e in data["explanations"]:
        console.print(f"  [yellow]{e['order_id']} {e['status']}[/]: {escape(e['message'])}")
