"""`nearfab plan`: make a new network plan and show it (late and unplaced orders say why)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from nearfab.cli.context import console, emit_json, local_actor, state, use_case
from nearfab.common.errors import ValidationFailed

if TYPE_CHECKING:
    from nearfab.scheduling.models import PlanVersion

# the service names its fields; a person at the shell typed these options
OPTIONS = {"horizon": "--horizon", "time_limit": "--time-limit"}


def value_of(field: str | None, horizon: float, time_limit: float) -> str:
    return f"{horizon:g}" if field == "horizon" else f"{time_limit:g}"


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
    from nearfab.scheduling.schemas import plan_dict

    application = state(ctx, data_dir).app()

    def make(uow: Any) -> PlanVersion:
        try:
            return application.scheduling.plan(
                uow, local_actor(), reason=reason, horizon_h=horizon, time_limit_s=time_limit
            )
        except ValidationFailed as exc:
            option = OPTIONS.get(exc.field or "")
            if option is None:
                raise
            raise ValidationFailed(
                f"{option} {value_of(exc.field, horizon, time_limit)}: {exc.message}",
                field=exc.field,
            ) from None

    version = use_case(application, as_json, make)
    data = plan_dict(version)
    if as_json:
        emit_json(data)
        return
    console.print(
        f"plan v{data['number']} ({escape(data['trigger'])}, {data['solver']}, {data['status']}):"
        f" weighted tardiness {data['weighted_tardiness']}, gap {data['gap']:.1%},"
        f" {len(data['changes'])} change(s), {data['solve_s']} s",
        soft_wrap=True,
    )
    for a in sorted(data["assignments"], key=lambda a: (a["site"], a["machine"], a["start"])):
        late = f" [red]late {a['late_min']} min[/]" if a["late_min"] else ""
        frozen = " (running)" if a["frozen"] else ""
        console.print(
            f"  {escape(a['site'])} · {escape(a['machine'])}: {a['order_id']}"
            f" {_when(a['start'])} – {_when(a['end'])} UTC{frozen}{late}",
            soft_wrap=True,
        )
    for e in data["explanations"]:
        console.print(
            f"  [yellow]{e['order_id']} {e['status']}[/] ({e['reason']}): {escape(e['message'])}",
            soft_wrap=True,
        )


def _when(iso: str) -> str:
    """'2026-01-05T08:00:00+00:00' as '01-05 08:00' (a plan spans days)."""
    return f"{iso[5:10]} {iso[11:16]}"


def collection(
    ctx: typer.Context,
    order_id: str,
    at: Annotated[
        str | None,
        typer.Option(help="Record the collection date (ISO 8601 with zone): it slipped."),
    ] = None,
    rebook: Annotated[
        bool, typer.Option("--rebook", help="The run failed: a new slot for a new collection.")
    ] = False,
    reason: Annotated[str, typer.Option(help="Why; kept in the audit trail.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder.")] = None,
) -> None:
    """Show an order's collection of starting material from the patient: the collection date,
    the run's machine and window, the administration date and the hours from collection to
    administration. With --at: record a new collection date; with --rebook: after a failed run."""
    application = state(ctx, data_dir).app()
    actor = local_actor()

    def when() -> datetime | None:
        if at is None:
            return None
        try:
            value = datetime.fromisoformat(at)
        except ValueError:
            raise ValidationFailed(
                f"--at {at}: not an ISO 8601 date and time", field="collection_at"
            ) from None
        if value.tzinfo is None:
            raise ValidationFailed(f"--at {at}: give the time zone", field="collection_at")
        return value

    def change(uow: Any) -> dict[str, Any]:
        new_at = when()
        if rebook:
            application.scheduling.rebook_after_failure(
                uow, actor, order_id, reason=reason, collection_at=new_at
            )
        elif new_at is not None:
            application.scheduling.record_collection(uow, actor, order_id, new_at, reason=reason)
        with application.uow() as fresh:
            view: dict[str, Any] = application.scheduling.collection_view(fresh, actor, order_id)
            return view

    data = use_case(application, as_json, change)
    if as_json:
        emit_json(data)
        return
    current = data["current"]
    if current is None:
        console.print(f"{order_id}: no open collection", soft_wrap=True)
    else:
        machine = escape(current["machine"] or "no slot yet")
        run = (
            f"{_when(current['run_start'])} – {_when(current['run_end'])} UTC"
            if current["run_start"]
            else "not booked"
        )
        hours = current["collection_to_administration_h"]
        given = current["administration_at"]
        administration = f"{_when(given)} UTC" if given else "-"
        console.print(
            f"{order_id} ({current['status']}): collection {_when(current['collection_at'])} UTC;"
            f" run on {machine} {run}; administration {administration};"
            f" collection to administration {'-' if hours is None else f'{hours:g} h'}",
            soft_wrap=True,
        )
        if current.get("collected_at"):
            bound = current.get("chain_identifier")
            console.print(
                f"  collected {_when(current['collected_at'])} UTC by"
                f" {escape(str(current['collected_by']))}"
                + (f"; chain identifier {escape(bound)}" if bound else ""),
                soft_wrap=True,
            )
    for row in data["appointments"]:
        if current is None or row["id"] != current["id"]:
            console.print(
                f"  earlier: {row['status']}, collection {_when(row['collection_at'])} UTC",
                soft_wrap=True,
            )
