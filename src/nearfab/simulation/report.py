"""Reports: one self-contained HTML page with Plotly charts (plotly.js embedded inline from the
installed package: nothing is loaded from a CDN) and CSV tables beside it."""

from __future__ import annotations

import csv
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from nearfab.simulation.logic.costs import CATEGORIES
from nearfab.simulation.logic.engine import ReplicationResult
from nearfab.simulation.logic.spec import ScenarioSpec
from nearfab.simulation.services import compare

Run = tuple[ScenarioSpec, list[ReplicationResult], dict[str, Any]]


def _div(fig: go.Figure) -> str:
    return str(fig.to_html(full_html=False, include_plotlyjs=False))


def figures(runs: Sequence[Run]) -> list[tuple[str, go.Figure]]:
    out: list[tuple[str, go.Figure]] = []
    lead = go.Figure()
    for spec, results, _ in runs:
        values = [x for r in results for x in r.lead_times]
        lead.add_trace(go.Histogram(x=values, name=spec.name, histnorm="probability", opacity=0.6))
    lead.update_layout(
        barmode="overlay",
        xaxis_title="order-to-patient lead time (days)",
        yaxis_title="share of orders",
    )
    out.append(("Lead-time distribution", lead))

    cost = go.Figure()
    for k in CATEGORIES:
        cost.add_trace(
            go.Bar(
                name=k,
                x=[s["scenario"] for _, _, s in runs],
                y=[s["cost_per_dose"][k]["mean"] for _, _, s in runs],
            )
        )
    cost.update_layout(barmode="stack", yaxis_title="cost per dose")
    out.append(("Cost per dose", cost))

    util = go.Figure()
    for spec, results, _ in runs:
        first = results[0]
        n = len(next(iter(first.utilisation_over_time.values()), []))
        slots = {s.name: s.slots for s in spec.sites}
        total = sum(slots.values())
        series = [
            sum(r.utilisation_over_time[name][i] * slots[name] for r in results for name in slots)
            / (total * len(results))
            for i in range(n)
        ]
        util.add_trace(
            go.Scatter(
                x=[i * spec.bucket_days for i in range(n)], y=series, mode="lines", name=spec.name
            )
        )
    util.update_layout(
        xaxis_title="day", yaxis_title="network slot utilisation", yaxis_range=[0, 1]
    )
    out.append(("Utilisation over time", util))

    impact = go.Figure()
    for _, _, s in runs:
        names = list(s["disruptions"])
        if names:
            impact.add_trace(
                go.Bar(
                    name=s["scenario"],
                    x=names,
                    y=[s["disruptions"][n]["excess_late_orders"]["mean"] for n in names],
                )
            )
    impact.update_layout(yaxis_title="patients delayed beyond target (excess over baseline)")
    out.append(("Disruption impact", impact))
    return out


def _table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r[k]))}</td>" for k in keys) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def disruption_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    rows = []
    for _, _, s in runs:
        for name, d in s["disruptions"].items():
            rows.append(
                {
                    "scenario": s["scenario"],
                    "disruption": name,
                    "kind": d["kind"],
                    "late_orders": d["late_orders"]["mean"],
                    "excess_late_orders": d["excess_late_orders"]["mean"],
                    "time_to_recover_days": d["time_to_recover_days"]["mean"],
                    "not_recovered": d["not_recovered"],
                }
            )
    return rows


def write_html(runs: Sequence[Run], path: str | Path, title: str = "nearfab simulation") -> Path:
    """A self-contained HTML report (plotly.js inline, several MB; works offline)."""
    p = Path(path)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}</style>",
        f"<script>{get_plotlyjs()}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Summary (means over replications; 95 % CI)</h2>",
        _table(compare([s for _, _, s in runs])),
        "<h2>Disruptions</h2>",
        _table(disruption_rows(runs)),
    ]
    for heading, fig in figures(runs):
        parts += [f"<h2>{html.escape(heading)}</h2>", _div(fig)]
    parts.append("</body></html>")
    p.write_text("\n".join(parts), encoding="utf-8")
    return p


def write_csv(runs: Sequence[Run], folder: str | Path, stem: str = "simulation") -> list[Path]:
    """CSV tables: summary per scenario, replications, utilisation per site, disruptions."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    written = []

    def put(name: str, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        path = d / f"{stem}-{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        written.append(path)

    put("summary", compare([s for _, _, s in runs]))
    put(
        "replications",
        [
            {
                "scenario": r.scenario,
                "replication": r.replication,
                "delivered": r.delivered,
                "lead_time_mean": r.lead_time_mean,
                "within_target_share": r.within_target_share,
                "wip_mean": r.wip_mean,
                "cost_per_dose": r.cost_per_dose["total"],
                **{f"waste_{k}": v for k, v in r.waste.items()},
            }
            for _, results, _ in runs
            for r in results
        ],
    )
    put(
        "utilisation",
        [
            {
                "scenario": s["scenario"],
                "site": site,
                "utilisation": u["mean"],
                "ci_low": u["ci_low"],
                "ci_high": u["ci_high"],
            }
            for _, _, s in runs
            for site, u in s["utilisation"].items()
        ],
    )
    put("disruptions", disruption_rows(runs))
    return written


def markdown(runs: Sequence[Run], title: str, command: str) -> str:
    """The comparison as Markdown tables (for docs/)."""
    rows = compare([s for _, _, s in runs])
    reps = runs[0][2]["replications"] if runs else 0
    lines = [
        f"# {title}",
        "",
        f"Generated by `{command}` ({reps} replications per scenario, one simulated year, the",
        "same seeds in every scenario: common random numbers). Means over replications with",
        "95 % confidence intervals. Costs are planning assumptions stated in the scenario files",
        "(`docs/scenarios/`), not measurements; lead time is prescription to patient.",
        "",
        "| scenario | lead time mean (d) | p95 (d) | within 2 d target | cost per dose | "
        "utilisation | waste (units/yr) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lo, hi = r["within_target_ci"]
        clo, chi = r["cost_per_dose_ci"]
        lines.append(
            f"| {r['scenario']} | {r['lead_time_mean_days']:.2f} | {r['lead_time_p95_days']:.2f}"
            f" | {r['within_target_share']:.1%} [{lo:.1%}, {hi:.1%}]"
            f" | {r['cost_per_dose']:,.2f} [{clo:,.2f}, {chi:,.2f}]"
            f" | {r['mean_utilisation']:.1%} | {r['waste_units']:.1f} |"
        )
    lines += [
        "",
        "## Cost per dose by category",
        "",
        "| scenario | " + " | ".join(CATEGORIES) + " | total |",
        "|---|" + "---:|" * (len(CATEGORIES) + 1),
    ]
    for r in rows:
        cells = " | ".join(f"{r[f'cost_{k}']:,.2f}" for k in CATEGORIES)
        lines.append(f"| {r['scenario']} | {cells} | {r['cost_per_dose']:,.2f} |")
    lines += [
        "",
        "## Disruptions",
        "",
        "| scenario | disruption | late orders | delayed beyond baseline | time to recover (d) |",
        "|---|---|---:|---:|---:|",
    ]
    for d in disruption_rows(runs):
        lines.append(
            f"| {d['scenario']} | {d['disruption']} | {d['late_orders']:.1f}"
            f" | {d['excess_late_orders']:.1f} | {d['time_to_recover_days']:.2f} |"
        )
    return "\n".join(lines) + "\n"
