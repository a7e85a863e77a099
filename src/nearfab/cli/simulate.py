"""`nearfab simulate`: run, compare and validate network scenarios; export today's network.

`nearfab simulate SCENARIO.yaml` is short for `nearfab simulate run SCENARIO.yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from nearfab.cli.context import console, emit_json, fail, state
from nearfab.common.errors import DomainError


class _DefaultRun(TyperGroup):
    """A group whose unknown first word is a scenario file for `run`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultRun,
    no_args_is_help=True,
    help="Simulate the network: lead time, cost per dose, resilience.",
)

Executor = Annotated[str, typer.Option(help="local (process pool), serial, or dask://HOST:PORT.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _progress(enabled: bool) -> tuple[Progress | None, Any]:
    if not enabled:
        return None, None
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    return bar, None


def _updater(bar: Progress, task: Any) -> Any:
    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return update


def _run(paths: list[Path], replications: int | None, executor: str, as_json: bool) -> list[Any]:
    from nearfab.bootstrap import product_families
    from nearfab.simulation import load_scenario, run_scenario

    families = product_families()  # the platform's own families make each product's design
    scenarios = [load_scenario(p, families) for p in paths]
    runs = []
    bar, _ = _progress(not as_json)
    if bar is None:
        return [run_scenario(s, replications, executor, families=families) for s in scenarios]
    with bar:
        for s in scenarios:
            task = bar.add_task(escape(s.name), total=replications or s.replications)
            update = _updater(bar, task)
            runs.append(run_scenario(s, replications, executor, update, families))
    return runs


def _outputs(runs: list[Any], report: Path | None, csv: Path | None, as_json: bool) -> None:
    from nearfab.simulation import compare
    from nearfab.simulation.report import write_csv, write_html

    summaries = [s for _, _, s in runs]
    if report is not None:
        write_html(runs, report)
        write_csv(runs, csv or report.parent, report.stem)
    elif csv is not None:
        write_csv(runs, csv)
    if as_json:
        emit_json(summaries if len(summaries) > 1 else summaries[0])
        return
    table = Table(
        "scenario", "lead time (d)", "p95 (d)", "within target", "cost/dose", "utilisation", "waste"
    )
    for row in compare(summaries):
        table.add_row(
            escape(row["scenario"]),
            f"{row['lead_time_mean_days']:.2f}",
            f"{row['lead_time_p95_days']:.2f}",
            f"{row['within_target_share']:.1%} [{row['within_target_ci'][0]:.1%}, "
            f"{row['within_target_ci'][1]:.1%}]",
            f"{row['cost_per_dose']:,.2f}",
            f"{row['mean_utilisation']:.1%}",
            f"{row['waste_units']:.1f}",
        )
    console.print(table)
    _collection_table(summaries)
    for s in summaries:
        for name, d in s["disruptions"].items():
            console.print(
                f"  {escape(s['scenario'])} · {escape(name)}: "
                f"{d['excess_late_orders']['mean']:.1f} patients delayed beyond target, "
                f"recovers in {d['time_to_recover_days']['mean']:.1f} d",
                soft_wrap=True,
            )
    if report is not None:
        console.print(f"report: {report}")


def _collection_table(summaries: list[dict[str, Any]]) -> None:
    """For scenarios whose products are made from material collected from the patient: time
    from collection to administration and cost per patient (one administration each)."""
    from nearfab.simulation import compare
    from nearfab.simulation.logic.costs import CATEGORIES

    rows = [r for r in compare(summaries) if "collection_to_administration_mean_days" in r]
    if not rows:
        return
    table = Table(
        "scenario",
        "collection to administration (d)",
        "p90 (d)",
        "new collections / patient",
        "cost / patient",
        *CATEGORIES,
        title="Collection to administration and cost per patient",
    )
    for row in rows:
        low, high = row["collection_to_administration_mean_ci"]
        clo, chi = row["cost_per_dose_ci"]
        table.add_row(
            escape(row["scenario"]),
            f"{row['collection_to_administration_mean_days']:.2f} [{low:.2f}, {high:.2f}]",
            f"{row['collection_to_administration_p90_days']:.2f}",
            f"{row['recollections_per_order']:.3f}",
            f"{row['cost_per_dose']:,.0f} [{clo:,.0f}, {chi:,.0f}]",
            *(f"{row[f'cost_{k}']:,.0f}" for k in CATEGORIES),
        )
    console.print(table)


@app.command("run")
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    replications: Annotated[int | None, typer.Option(min=1, help="Replications.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report (and CSVs).")] = None,
    csv: Annotated[Path | None, typer.Option(help="Folder for CSV tables.")] = None,
    executor: Executor = "local",
    as_json: AsJson = False,
) -> None:
    """Simulate one scenario."""
    try:
        runs = _run([scenario], replications, executor, as_json)
    except DomainError as exc:
        fail(exc, as_json)
    _outputs(runs, report, csv, as_json)


@app.command("compare")
def compare_cmd(
    scenarios: Annotated[list[Path], typer.Argument(help="Two or more scenario files.")],
    replications: Annotated[int | None, typer.Option(min=1, help="Replications.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report (and CSVs).")] = None,
    csv: Annotated[Path | None, typer.Option(help="Folder for CSV tables.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the comparison as Markdown.")] = None,
    executor: Executor = "local",
    as_json: AsJson = False,
) -> None:
    """Simulate several scenarios side by side (same seeds: common random numbers)."""
    try:
        runs = _run(scenarios, replications, executor, as_json)
    except DomainError as exc:
        fail(exc, as_json)
    if markdown is not None:
        from nearfab.simulation.report import markdown as to_markdown

        names = " ".join(p.name for p in scenarios)
        markdown.write_text(
            to_markdown(
                runs,
                "Centralised vs redistributed: demo products",
                f"nearfab simulate compare {names}",
            ),
            encoding="utf-8",
        )
    _outputs(runs, report, csv, as_json)


@app.command("validate")
def validate_cmd(
    executor: Executor = "local",
    scale: Annotated[float, typer.Option(min=0.1, help="Horizon multiplier.")] = 1.0,
    as_json: AsJson = False,
) -> None:
    """Check the engine against queueing theory (within 3 %, theory in the 99 % CI)."""
    from nearfab.simulation import validate

    checks = validate(executor, scale)
    ok = all(c.passed for c in checks)
    if as_json:
        emit_json({"passed": ok, "checks": [c.as_dict() for c in checks]})
    else:
        table = Table("check", "theory", "simulated", "error", "99 % CI", "")
        for c in checks:
            table.add_row(
                escape(c.name),
                f"{c.theory:.4f}",
                f"{c.simulated:.4f}",
                f"{c.relative_error:.2%}",
                f"[{c.ci_low:.4f}, {c.ci_high:.4f}]",
                "[green]pass[/]" if c.passed else "[red]FAIL[/]",
            )
        console.print(table)
    if not ok:
        raise typer.Exit(code=1)


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Scenario YAML to write.")],
    horizon: Annotated[float, typer.Option(min=1, help="Horizon in days.")] = 365.0,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder.")] = None,
    as_json: AsJson = False,
) -> None:
    """Write today's network (sites, machines, measured cycle times) as a scenario."""
    from nearfab.simulation import dump_scenario, export_scenario

    application = state(ctx, data_dir).app()
    try:
        with application.uow() as uow:
            scenario = export_scenario(uow, application.families, horizon_days=horizon)
    except DomainError as exc:
        fail(exc, as_json)
    out.write_text(dump_scenario(scenario), encoding="utf-8")
    if as_json:
        emit_json(
            {"written": str(out), "sites": len(scenario.sites), "products": len(scenario.products)}
        )
    else:
        console.print(
            f"wrote {out}: {len(scenario.sites)} sites, {len(scenario.products)} products"
        )


@app.command("scale-out")
def scale_out_cmd(
    forecast: Annotated[Path, typer.Argument(help="Forecast YAML (see docs/simulation.md).")],
    as_json: AsJson = False,
) -> None:
    """The least-cost set and timing of units that meets the service level every year (NPV)."""
    from nearfab.simulation import UnitType, plan_scale_out
    from nearfab.simulation.schemas import load_scale_out

    try:
        spec = load_scale_out(forecast)
    except DomainError as exc:
        fail(exc, as_json)
    plan = plan_scale_out(
        spec.demand_per_day,
        [UnitType(u.name, u.slots, u.capital, u.fixed_per_year) for u in spec.unit_types],
        cycle_days=spec.cycle_days,
        slack_days=spec.slack_days,
        service_level=spec.service_level,
        discount_rate=spec.discount_rate,
    )
    years = [
        {
            "year": y.year,
            "demand_per_day": y.demand_per_day,
            "slots_needed": y.slots_needed,
            "slots": y.slots,
            "units": y.units,
            "added": y.added,
            "service_level": round(y.service_level, 4),
            "cost": round(y.cost, 2),
            "discounted": round(y.discounted, 2),
        }
        for y in plan.years
    ]
    if as_json:
        emit_json({"name": spec.name, "npv": round(plan.npv, 2), "years": years})
        return
    table = Table("year", "demand/day", "slots needed", "slots", "add", "service level", "cost")
    for y in plan.years:
        added = ", ".join(f"{n} × {name}" for name, n in y.added.items()) or "—"
        table.add_row(
            str(y.year),
            f"{y.demand_per_day:g}",
            str(y.slots_needed),
            str(y.slots),
            escape(added),
            f"{y.service_level:.1%}",
            f"{y.cost:,.0f}",
        )
    console.print(table)
    console.print(f"NPV at {spec.discount_rate:.1%}: {plan.npv:,.0f}")
