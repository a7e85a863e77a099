"""Monitoring pages: alarms, machines' telemetry, models in force; per run the control charts
(Plotly, built here and drawn by the locally served plotly.js) and the MSPC view with a
contribution plot for a chosen sample; one alarm with its audit trail and disposition forms."""

from __future__ import annotations

import json
from typing import Annotated, Any

import plotly.graph_objects as go
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from plotly.subplots import make_subplots
from sqlalchemy import func, select

from nearfab.bootstrap import App
from nearfab.common.errors import DomainError, Forbidden, NotFound
from nearfab.identity import Actor, Permission, audit_trail, can
from nearfab.monitoring import Alarm, AlarmDisposition, AlarmStatus, alarm_dict
from nearfab.production import BatchRecord
from nearfab.readmodels import audit_dict
from nearfab.telemetry import DeadLetter
from nearfab.uow import UnitOfWork
from nearfab.web.pages import _app, _check_csrf, hidden, human, page, render, templates

router = APIRouter(include_in_schema=False)
Reader = Annotated[Actor, page(Permission.MONITORING_READ)]


def _sees(actor: Actor, site_id: str | None) -> bool:
    """Whether a monitoring row of a site may be listed for the actor (never a row of no site
    for site staff)."""
    return site_id is not None and can(actor, Permission.MONITORING_READ, site_id=site_id)


RED, BRAND, GREY, GREEN, AMBER = "#b3261e", "#0f3b57", "#5b6b7c", "#1f7a44", "#8a5a00"
PLOT_FONT = {"family": "system-ui, sans-serif", "size": 12, "color": "#1d2733"}

# what each rule means, for pharmacists and QPs (the codes stay in the audit trail)
RULES = {
    "we1": "reading beyond the control limit (3σ)",
    "we2": "2 of 3 readings beyond 2σ on one side",
    "we3": "4 of 5 readings beyond 1σ on one side",
    "we4": "8 readings in a row on one side of the centre",
    "moving_range": "jump between readings above its limit",
    "ewma": "slow drift: EWMA outside its limits",
    "cusum_upper": "sustained upward shift (CUSUM)",
    "cusum_lower": "sustained downward shift (CUSUM)",
    "t2": "Hotelling T² above its limit (unusual combination of parameters)",
    "spe": "SPE (Q) above its limit (pattern the model has not seen)",
    "gap": "telemetry messages missing",
}
KINDS = {"spc": "SPC control charts", "mspc": "MSPC (T² and SPE)"}
DISPOSITIONS = {
    AlarmDisposition.NO_IMPACT.value: "Investigated: no impact on the product",
    AlarmDisposition.ASSIGNABLE_CAUSE_FIXED.value: "Assignable cause found and fixed",
    AlarmDisposition.DEVIATION_RAISED.value: "Handled as a deviation on the batch",
    AlarmDisposition.FALSE_ALARM.value: "False alarm",
}


def rule_words(rule: object) -> str:
    return RULES.get(str(rule), human(rule))


# unit suffixes of telemetry metric names (`flow_rate_mm_s`) and how people write them
_UNIT_SUFFIXES = {
    ("mm", "s"): "mm/s",
    ("kpa",): "kPa",
    ("c",): "°C",
    ("pct",): "%",
    ("mm",): "mm",
    ("mg",): "mg",
    ("g",): "g",
    ("ml",): "mL",
    ("rpm",): "rpm",
    ("s",): "s",
}


def metric_label(metric: object, unit: str | None = None) -> str:
    """`chamber_pressure_kpa` -> `Chamber pressure (kPa)`."""
    words = str(metric or "").split("_")
    suffix_unit = None
    for suffix, written in _UNIT_SUFFIXES.items():
        if len(words) > len(suffix) and tuple(words[-len(suffix) :]) == suffix:
            words, suffix_unit = words[: -len(suffix)], written
            break
    name = human("_".join(words))
    name = name[:1].upper() + name[1:]
    shown = unit or suffix_unit
    return f"{name} ({shown})" if shown else name


templates.env.filters.update(rule_words=rule_words, metric_label=metric_label)


def _refused(
    request: Request, actor: Actor, exc: DomainError, ref: str | None = None
) -> HTMLResponse:
    """A readable page for a stale link or another site's record (both 404, alike: `hidden`)
    or a role that may not read monitoring (403)."""
    exc = hidden(exc, ref)
    return render(
        request,
        "monitoring_error.html",
        actor,
        title="Not found" if isinstance(exc, NotFound) else "Not allowed",
        error=exc.message,
        status_code=exc.http_status,
    )


# --- names for ids ---------------------------------------------------------------------------
class _Names:
    """Machine, site, user and batch names for the ids on monitoring rows (one lookup each)."""

    def __init__(self, application: App, uow: UnitOfWork) -> None:
        self._app, self._uow = application, uow
        self.sites = {s.id: s for s in application.network.list_sites(uow)}
        self.machines = {m.id: m for m in application.network.list_machines(uow)}
        self._users: dict[str, str] = {}
        self._batches: dict[str, str] = {}

    def machine(self, machine_id: str | None) -> str:
        m = self.machines.get(machine_id or "")
        return m.name if m else (machine_id or "—")

    def site(self, site_id: str | None) -> str:
        s = self.sites.get(site_id or "")
        return s.name if s else (site_id or "—")

    def site_code(self, site_id: str | None) -> str:
        s = self.sites.get(site_id or "")
        return s.code if s else (site_id or "—")

    def user(self, user_id: str | None) -> str | None:
        if not user_id:
            return None
        if user_id not in self._users:
            try:
                self._users[user_id] = self._app.users.get(self._uow, user_id).full_name
            except DomainError:
                self._users[user_id] = user_id
        return self._users[user_id]

    def batch_number(self, batch_id: str | None) -> str | None:
        if not batch_id:
            return None
        if batch_id not in self._batches:
            row = self._uow.session.get(BatchRecord, batch_id)
            self._batches[batch_id] = row.batch_number if row else batch_id
        return self._batches[batch_id]


def _alarm_view(alarm: Alarm, names: _Names) -> dict[str, Any]:
    return {
        **alarm_dict(alarm),
        "machine": names.machine(alarm.machine_id),
        "site": names.site(alarm.site_id),
        "site_code": names.site_code(alarm.site_id),
        "batch_number": names.batch_number(alarm.batch_id),
        "closed_by_name": names.user(alarm.closed_by),
        "is_open": alarm.status != AlarmStatus.CLOSED.value,
    }


def _most_severe_first(alarm: dict[str, Any]) -> tuple[int, str]:
    return ({"critical": 0, "major": 1, "minor": 2}.get(alarm["severity"], 3), alarm["first_at"])


# --- figures (Plotly JSON, drawn by /static/vendor/plotly.min.js) ----------------------------
def _layout(fig: go.Figure, *, title: str, y_title: str, height: int = 370) -> None:
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 14}},
        font=PLOT_FONT,
        height=height,
        margin={"l": 60, "r": 20, "t": 40, "b": 100},
        paper_bgcolor="#fff",
        plot_bgcolor="#fff",
        hovermode="closest",
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
        yaxis={"title": {"text": y_title}, "gridcolor": "#e8edf2", "zeroline": False},
        xaxis={"gridcolor": "#e8edf2"},  # times are UTC (said in the hover and the caption)
    )


def _level(fig: go.Figure, x: list[Any], y: list[float] | float, name: str, **line: Any) -> None:
    """A limit or centre line over the whole run (a trace, so it has a legend entry)."""
    ys = y if isinstance(y, list) else [y, y]
    xs = x if isinstance(y, list) else [x[0], x[-1]]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines",
            name=name,
            line=line,
            hovertemplate=f"{name} %{{y:.4g}}<extra></extra>",
        )
    )


def control_chart_figure(chart: dict[str, Any]) -> str:
    """One metric: readings, centre line, individuals limits, EWMA with its limits, and the
    readings a rule flagged in red (the rule names on hover)."""
    fig = go.Figure()
    x, values = chart["times"], chart["values"]
    fig.add_trace(
        go.Scatter(
            x=x,
            y=values,
            mode="lines+markers",
            name="reading",
            line={"color": BRAND, "width": 1.2},
            marker={"size": 4, "color": BRAND},
            hovertemplate="%{x} UTC<br>%{y:.4g}<extra>reading</extra>",
        )
    )
    if x and chart.get("center") is not None:
        _level(fig, x, chart["center"], "centre line", color=GREEN, dash="dash", width=1)
        _level(fig, x, chart["ucl"], "upper control limit", color=RED, dash="dash", width=1)
        _level(fig, x, chart["lcl"], "lower control limit", color=RED, dash="dash", width=1)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=chart["ewma"],
                mode="lines",
                name="EWMA",
                line={"color": AMBER, "width": 1.5},
                hovertemplate="EWMA %{y:.4g}<extra></extra>",
            )
        )
        _level(fig, x, chart["ewma_ucl"], "EWMA limits", color=AMBER, dash="dot", width=1)
        _level(fig, x, chart["ewma_lcl"], "EWMA lower limit", color=AMBER, dash="dot", width=1)
        fig.data[-1].showlegend = False
        flagged = chart.get("flagged") or []
        if flagged:
            fig.add_trace(
                go.Scatter(
                    x=[x[f["index"]] for f in flagged],
                    y=[values[f["index"]] for f in flagged],
                    mode="markers",
                    name="flagged by a rule",
                    marker={"color": RED, "size": 8, "symbol": "circle"},
                    text=["<br>".join(rule_words(s) for s in f["signals"]) for f in flagged],
                    customdata=[",".join(f["signals"]) for f in flagged],
                    hovertemplate="%{x} UTC<br>%{y:.4g}<br>%{text}<extra>flagged</extra>",
                )
            )
    title = metric_label(chart["metric"], chart.get("unit"))
    _layout(fig, title=title, y_title=chart.get("unit") or "")
    return str(fig.to_json())


CPP_COLOUR = "#5b2a86"  # the master file's CPP range: not a control limit, its own colour


def with_cpp_limits(chart: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Add the master file's CPP range for the chart's metric (`process_parameters`
    {name: {low, high, unit}}): `cpp_low`, `cpp_high`, `cpp_unit` and `cpp_beyond`, the
    readings (or buckets whose min or max) outside it. Drawn whether or not an SPC model
    exists: a spike past the master file's limit is visible from the first run."""
    spec = parameters.get(chart["metric"]) or {}
    low, high = spec.get("low"), spec.get("high")
    if low is None and high is None:
        return chart
    lows, highs = chart.get("low") or chart["values"], chart.get("high") or chart["values"]
    beyond = [
        i
        for i in range(len(chart["values"]))
        if (high is not None and highs[i] is not None and highs[i] > high)
        or (low is not None and lows[i] is not None and lows[i] < low)
    ]
    return {
        **chart,
        "cpp_low": low,
        "cpp_high": high,
        "cpp_unit": spec.get("unit") or chart.get("unit"),
        "cpp_beyond": beyond,
    }


def _cpp_lines(fig: go.Figure, chart: dict[str, Any]) -> None:
    x, values, unit = chart["times"], chart["values"], chart.get("cpp_unit") or ""
    if not x:
        return
    for key, words in (("cpp_high", "CPP high limit"), ("cpp_low", "CPP low limit")):
        if chart.get(key) is not None:
            _level(
                fig,
                x,
                chart[key],
                f"{words} {chart[key]:g} {unit}".strip(),
                color=CPP_COLOUR,
                width=1.5,
            )
    beyond = chart.get("cpp_beyond") or []
    if beyond:
        fig.add_trace(
            go.Scatter(
                x=[x[i] for i in beyond],
                y=[values[i] for i in beyond],
                mode="markers",
                name="outside the CPP range",
                marker={"color": CPP_COLOUR, "size": 9, "symbol": "diamond"},
                hovertemplate="%{x} UTC<br>%{y:.4g}<extra>outside the CPP range</extra>",
            )
        )


def machine_chart_figure(chart: dict[str, Any]) -> str:
    """A machine's recent readings of one metric: the line (with a min–max band when bucketed),
    the limits of the model in force, and readings beyond them in red."""
    fig = go.Figure()
    x, values = chart["times"], chart["values"]
    if chart.get("downsampled") and x:
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1],
                y=chart["high"] + chart["low"][::-1],
                fill="toself",
                fillcolor="rgba(31, 95, 139, 0.15)",
                line={"width": 0},
                name="min–max per bucket",
                hoverinfo="skip",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=values,
            mode="lines",
            name="mean per bucket" if chart.get("downsampled") else "reading",
            line={"color": BRAND, "width": 1.2},
            hovertemplate="%{x} UTC<br>%{y:.4g}<extra></extra>",
        )
    )
    if x and chart.get("center") is not None:
        _level(fig, x, chart["center"], "centre line", color=GREEN, dash="dash", width=1)
        _level(fig, x, chart["ucl"], "upper control limit", color=RED, dash="dash", width=1)
        _level(fig, x, chart["lcl"], "lower control limit", color=RED, dash="dash", width=1)
        flagged = chart.get("flagged") or []
        if flagged:
            fig.add_trace(
                go.Scatter(
                    x=[x[i] for i in flagged],
                    y=[values[i] for i in flagged],
                    mode="markers",
                    name="beyond a limit",
                    marker={"color": RED, "size": 7},
                    hovertemplate="%{x} UTC<br>%{y:.4g}<extra>beyond a limit</extra>",
                )
            )
    _cpp_lines(fig, chart)
    _layout(
        fig, title=metric_label(chart["metric"], chart.get("unit")), y_title=chart.get("unit") or ""
    )
    return str(fig.to_json())


def mspc_figure(mspc: dict[str, Any], stat: str) -> str:
    """T² or SPE per sample with its limit; samples over a limit red. A click on a sample asks
    for its contributions (monitoring.js reads the sample index from customdata)."""
    values, limit = mspc[stat], mspc[f"{stat}_limit"]
    label = "Hotelling T²" if stat == "t2" else "SPE (Q)"
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=mspc["times"],
            y=values,
            mode="lines+markers",
            name=label,
            line={"color": BRAND, "width": 1},
            marker={
                "size": [9 if v > limit else 5 for v in values],
                "color": [RED if v > limit else BRAND for v in values],
            },
            customdata=list(range(len(values))),
            hovertemplate="sample %{customdata}<br>%{x} UTC<br>"
            + label
            + " %{y:.3g}<extra>click for contributions</extra>",
        )
    )
    if mspc["times"]:
        _level(fig, mspc["times"], limit, f"limit {limit:.3g}", color=RED, dash="dash", width=1)
    _layout(fig, title=f"{label} per sample", y_title=label, height=330)
    return str(fig.to_json())


def contribution_figure(metrics: list[str], t2: list[float], spe: list[float]) -> dict[str, Any]:
    """Each variable's share of T² and of SPE for one sample, side by side."""
    labels = [metric_label(m) for m in metrics]
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("Contribution to T²", "Contribution to SPE (Q)")
    )
    for col, shares, name in ((1, t2, "T²"), (2, spe, "SPE")):
        top = max(shares) if shares else 0
        fig.add_trace(
            go.Bar(
                x=shares,
                y=labels,
                orientation="h",
                name=name,
                marker_color=[RED if v == top and v > 0 else BRAND for v in shares],
                hovertemplate="%{y}: %{x:.3g}<extra>" + name + "</extra>",
            ),
            row=1,
            col=col,
        )
    fig.update_layout(
        font=PLOT_FONT,
        height=120 + 36 * len(metrics),
        margin={"l": 170, "r": 20, "t": 40, "b": 30},
        showlegend=False,
        paper_bgcolor="#fff",
        plot_bgcolor="#fff",
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(showticklabels=False, row=1, col=2)
    result: dict[str, Any] = json.loads(fig.to_json())
    return result


def alarm_contribution_figure(contributions: dict[str, float], rule: str) -> str:
    ranked = sorted(contributions.items(), key=lambda kv: -kv[1])
    label = "T²" if rule == "t2" else "SPE (Q)" if rule == "spe" else "the statistic"
    fig = go.Figure(
        go.Bar(
            x=[v for _, v in ranked],
            y=[metric_label(m) for m, _ in ranked],
            orientation="h",
            marker_color=[RED if i == 0 else BRAND for i in range(len(ranked))],
            hovertemplate="%{y}: %{x:.3g}<extra></extra>",
        )
    )
    height = 120 + 36 * len(ranked)
    _layout(fig, title=f"Contribution of each parameter to {label}", y_title="", height=height)
    fig.update_layout(
        margin={"l": 170, "r": 20, "t": 40, "b": 40},
        xaxis={"title": {"text": "contribution"}},
        yaxis={"autorange": "reversed"},
        showlegend=False,
    )
    return str(fig.to_json())


# --- pages -----------------------------------------------------------------------------------
@router.get("/monitoring", response_class=HTMLResponse)
def monitoring_page(request: Request, actor: Reader) -> Response:
    """Alarms, machines and runs of the sites the person sees; the models in force."""
    application = _app(request)
    with application.uow() as uow:
        names = _Names(application, uow)
        monitoring = application.monitoring
        open_alarms = [
            _alarm_view(a, names) for a in monitoring.visible_alarms(uow, actor, open_only=True)
        ]
        open_alarms.sort(key=_most_severe_first)
        closed = [
            _alarm_view(a, names)
            for a in monitoring.visible_alarms(
                uow, actor, status=AlarmStatus.CLOSED.value, limit=15
            )
        ]
        sessions = {t.machine_id: t for t in application.telemetry.machines(uow)}
        seen = [m for m in names.machines.values() if _sees(actor, m.site_id)]
        machines = []
        for m in sorted(seen, key=lambda m: (names.site(m.site_id), m.name)):
            t = sessions.get(m.id)
            machines.append(
                {
                    "id": m.id,
                    "name": m.name,
                    "site": names.site(m.site_id),
                    "machine_type": m.machine_type,
                    "reporting": t is not None,
                    "online": bool(t and t.online),
                    "state": t.state if t else None,
                    "run": t.run if t else None,
                    "last_seen_at": t.last_seen_at if t else None,
                }
            )
        models = [
            {
                "id": m.id,
                "kind": m.kind,
                "master_file_code": m.master_file_code,
                "machine_type": m.machine_type,
                "version": m.version,
                "metrics": list(m.metrics),
                "runs": len(m.training.get("runs", [])),
                "approved_by": names.user(m.approved_by),
                "approved_at": m.approved_at,
            }
            for m in application.monitoring.active_models(uow)
        ]
        tel_runs = [r for r in application.telemetry.runs(uow) if _sees(actor, r.site_id)][:20]
        batches = {
            b.job_id: b
            for b in uow.session.scalars(
                select(BatchRecord).where(BatchRecord.job_id.in_([r.run for r in tel_runs]))
            )
        }
        open_by_run: dict[str, int] = {}
        for a in open_alarms:
            open_by_run[a["run"] or ""] = open_by_run.get(a["run"] or "", 0) + 1
        runs = [
            {
                "run": r.run,
                "machine": names.machine(r.machine_id),
                "site": names.site(r.site_id),
                "batch_id": batches[r.run].id if r.run in batches else None,
                "batch_number": batches[r.run].batch_number if r.run in batches else None,
                "first_at": r.first_at,
                "last_at": r.last_at,
                "end_state": r.end_state,
                "points": r.points,
                "open_alarms": open_by_run.get(r.run, 0),
            }
            for r in tel_runs
        ]
        dead = int(uow.session.scalar(select(func.count()).select_from(DeadLetter)) or 0)
    return render(
        request,
        "monitoring.html",
        actor,
        open_alarms=open_alarms,
        closed=closed,
        machines=machines,
        models=models,
        runs=runs,
        dead_letters=dead,
        kinds=KINDS,
        refresh=15,
    )


@router.get("/monitoring/runs/{run}", response_class=HTMLResponse)
def run_page(
    request: Request,
    run: str,
    actor: Reader,
    sample: Annotated[int | None, Query(ge=0, le=10_000_000)] = None,
) -> Response:
    application = _app(request)
    try:
        with application.uow() as uow:
            application.monitoring.authorize_run(uow, actor, run)  # the API's check
            names = _Names(application, uow)
            ctx = application.charts.context(uow, run)
            found = application.telemetry.run(uow, run)
            tel = (
                {
                    "site": names.site(found.site_id),
                    "first_at": found.first_at,
                    "last_at": found.last_at,
                    "end_state": found.end_state,
                }
                if found is not None
                else None
            )
            charts = application.charts.control_charts(uow, run)
            mspc: dict[str, Any] | None = None
            no_mspc: str | None = None
            try:
                mspc = application.charts.mspc_chart(uow, run)
            except NotFound as exc:
                no_mspc = exc.message
            chosen = None
            if mspc is not None and sample is not None and sample < len(mspc["t2"]):
                chosen = application.charts.contributions(uow, run, sample)
                chosen["figure"] = json.dumps(
                    contribution_figure(
                        chosen["metrics"], chosen["t2_contributions"], chosen["spe_contributions"]
                    )
                )
            alarms = [_alarm_view(a, names) for a in application.monitoring.alarms(uow, run=run)]
            alarms.sort(key=lambda a: (not a["is_open"], *_most_severe_first(a)))
    except (NotFound, Forbidden) as exc:
        return _refused(request, actor, exc, run)
    for chart in charts["charts"]:
        chart["figure"] = control_chart_figure(chart)
        chart["n_flagged"] = len(chart.get("flagged") or [])
    if mspc is not None:
        mspc["t2_figure"] = mspc_figure(mspc, "t2")
        mspc["spe_figure"] = mspc_figure(mspc, "spe")
        mspc["n_alarm"] = sum(mspc["alarm"])
    running = tel is not None and tel["end_state"] is None
    return render(
        request,
        "monitoring_run.html",
        actor,
        run=run,
        ctx=ctx,
        machine=names.machine(ctx.machine_id),
        site=tel["site"] if tel else "—",
        tel=tel,
        charts=charts,
        mspc=mspc,
        no_mspc=no_mspc,
        chosen=chosen,
        alarms=alarms,
        refresh=20 if running else None,
    )


def _process_parameters(application: App, uow: UnitOfWork, code: str | None) -> dict[str, Any]:
    """The CPP ranges of the effective master file of the product the machine made last ({}
    when it has made none, or the product has no effective version)."""
    if not code:
        return {}
    try:
        return dict(application.master_files.effective_for_code(uow, code).process_parameters)
    except DomainError:
        return {}


@router.get("/monitoring/machines/{machine_id}", response_class=HTMLResponse)
def machine_page(
    request: Request,
    machine_id: str,
    actor: Reader,
    hours: Annotated[float, Query(gt=0, le=744)] = 8.0,
) -> Response:
    """Live control charts of one machine over the last hours, across its runs."""
    application = _app(request)
    try:
        with application.uow() as uow:
            application.monitoring.authorize_machine(uow, actor, machine_id)  # the API's check
            data = application.charts.machine_charts(uow, machine_id, hours=hours)
            session = next(
                (t for t in application.telemetry.machines(uow) if t.machine_id == machine_id),
                None,
            )
            runs = application.telemetry.runs(uow, machine_id=machine_id)[:10]
            parameters = _process_parameters(application, uow, data.get("product"))
    except (NotFound, Forbidden) as exc:
        return _refused(request, actor, exc, machine_id)
    data["charts"] = [with_cpp_limits(c, parameters) for c in data["charts"]]
    data["has_cpp"] = any(c.get("cpp_beyond") is not None for c in data["charts"])
    for chart in data["charts"]:
        chart["figure"] = machine_chart_figure(chart)
    return render(
        request,
        "monitoring_machine.html",
        actor,
        data=data,
        session=session,
        runs=runs,
        refresh=15,
    )


@router.get("/monitoring/runs/{run}/contributions.json")
def run_contributions(
    request: Request,
    run: str,
    actor: Annotated[Actor, page(Permission.MONITORING_READ, file=True)],
    index: Annotated[int, Query(ge=0, le=10_000_000)],
) -> JSONResponse:
    """The API's contributions for one sample, for the session-authenticated pages, with the
    bar-chart figure ready to draw."""
    application = _app(request)
    with application.uow() as uow:
        try:
            application.monitoring.authorize_run(uow, actor, run)  # the API's check
        except (NotFound, Forbidden) as exc:
            shown = hidden(exc, run)  # another site's run is answered as an unknown one
            return JSONResponse({"error": shown.to_dict()}, status_code=shown.http_status)
        data = application.charts.contributions(uow, run, index)
    data["figure"] = contribution_figure(
        data["metrics"], data["t2_contributions"], data["spe_contributions"]
    )
    return JSONResponse(data)


def _alarm_page(
    request: Request,
    actor: Actor,
    alarm_id: str,
    *,
    error: str | None = None,
    message: str | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    application = _app(request)
    try:
        with application.uow() as uow:
            names = _Names(application, uow)
            record = application.monitoring.read_alarm(uow, actor, alarm_id)  # the API's check
            alarm = _alarm_view(record, names)
            trail = [audit_dict(r) for r in audit_trail(uow, "alarm", alarm_id)]
            model = None
            if alarm["model_id"]:
                try:
                    found = application.monitoring.get_model(uow, alarm["model_id"])
                    model = {"kind": found.kind, "version": found.version, "id": found.id}
                except NotFound:
                    model = None
    except (NotFound, Forbidden) as exc:
        return _refused(request, actor, exc, alarm_id)
    contributions = (alarm["details"] or {}).get("contributions")
    figure = alarm_contribution_figure(contributions, alarm["rule"]) if contributions else None
    return render(
        request,
        "alarm.html",
        actor,
        alarm=alarm,
        model=model,
        trail=trail,
        figure=figure,
        contributions=sorted((contributions or {}).items(), key=lambda kv: -kv[1]),
        sample=(alarm["details"] or {}).get("sample"),
        can_dispose=can(actor, Permission.ALARM_CLOSE, site_id=record.site_id),
        dispositions=DISPOSITIONS,
        error=error,
        message=message,
        form=form or {},
        status_code=status_code,
    )


@router.get("/alarms/{alarm_id}", response_class=HTMLResponse)
def alarm_page(request: Request, alarm_id: str, actor: Reader) -> Response:
    return _alarm_page(request, actor, alarm_id, message=request.session.pop("flash", None))


@router.post("/alarms/{alarm_id}/acknowledge")
def alarm_acknowledge(
    request: Request,
    alarm_id: str,
    actor: Annotated[Actor, page(Permission.ALARM_ACKNOWLEDGE)],
    note: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    application = _app(request)
    try:
        _check_csrf(request, csrf_token)
        with application.uow() as uow:
            application.monitoring.acknowledge(uow, actor, alarm_id, note=note)
    except DomainError as exc:
        return _alarm_page(
            request,
            actor,
            alarm_id,
            error=f"Not acknowledged: {exc.message}",
            form={"ack_note": note},
            status_code=exc.http_status,
        )
    request.session["flash"] = "Alarm acknowledged. It still blocks release until it is closed."
    return RedirectResponse(f"/alarms/{alarm_id}", status_code=303)


@router.post("/alarms/{alarm_id}/close")
def alarm_close(
    request: Request,
    alarm_id: str,
    actor: Annotated[Actor, page(Permission.ALARM_CLOSE)],
    disposition: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    application = _app(request)
    try:
        _check_csrf(request, csrf_token)
        with application.uow() as uow:
            application.monitoring.close(uow, actor, alarm_id, disposition=disposition, note=note)
    except DomainError as exc:
        return _alarm_page(
            request,
            actor,
            alarm_id,
            error=f"Not closed: {exc.message}",
            form={"disposition": disposition, "close_note": note},
            status_code=exc.http_status,
        )
    request.session["flash"] = f"Alarm closed: {DISPOSITIONS.get(disposition, human(disposition))}."
    return RedirectResponse(f"/alarms/{alarm_id}", status_code=303)
