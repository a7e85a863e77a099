"""The plan as a planner reads it (issue 13 item 8): every machine of every site the reader may
see (idle ones too), each job labelled (medication, patient reference, order), late orders
marked, a line at the current time, times in the network's local time with the zone, and the
actions the reader may take on each job.

Only reads: the plan version as `PlanScope` gives it (scheduling), machines and sites through
network's reads, orders and patient references through orders' reads.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import plotly.graph_objects as go
from sqlalchemy import select

from nearfab.bootstrap import App
from nearfab.identity import Actor, Permission, can
from nearfab.network.reads import machine_view
from nearfab.network.reads import sites as network_sites
from nearfab.orders.reads import orders_by_id, patients_by_id
from nearfab.uow import UnitOfWork
from nearfab.web.localtime import local, moment, zone_of

COLOURS = {"on time": "#2b8a3e", "late": "#c92a2a", "running": "#868e96"}


def _late_words(minutes: int) -> str:
    """75 -> "1 h 15 min"; 3000 -> "2 d 2 h"."""
    days, rest = divmod(int(minutes), 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {mins} min" if hours else f"{mins} min"


def machines_seen(uow: UnitOfWork, sites: frozenset[str] | None) -> list[dict[str, Any]]:
    """Every machine of the sites the reader sees (None: the network's), idle ones too,
    by site code and machine name."""
    names = {s.id: s for s in network_sites(uow.session)}
    m = machine_view()
    stmt = select(m.c.id, m.c.name, m.c.site_id, m.c.status)
    if sites is not None:
        stmt = stmt.where(m.c.site_id.in_(sites))
    rows = []
    for machine_id, name, site_id, status in uow.session.execute(stmt):
        site = names.get(site_id)
        code = site.code if site else str(site_id)
        rows.append(
            {
                "id": str(machine_id),
                "name": str(name),
                "site_id": str(site_id),
                "site_code": code,
                "site_name": site.name if site else code,
                "status": str(status),
                "label": f"{code} · {name}",
            }
        )
    return sorted(rows, key=lambda r: (r["site_code"], r["name"]))


def board(
    app: App, uow: UnitOfWork, actor: Actor, plan: dict[str, Any], sites: frozenset[str] | None
) -> dict[str, Any]:
    """The plan's jobs for the page: labels, local times, lateness in words, and per job the
    actions `actor` may take (unschedule; move forward: mark urgent and replan)."""
    zone = zone_of(app.settings)
    machines = machines_seen(uow, sites)
    orders = orders_by_id(uow.session, [a["order_id"] for a in plan["assignments"]])
    patients = patients_by_id(uow.session, [o.patient_id for o in orders.values()])
    may_plan = can(actor, Permission.PLAN_RUN)
    jobs = []
    for a in plan["assignments"]:
        order = orders.get(a["order_id"])
        order_site = order.site_id if order is not None else None
        # the patient's pseudonymous reference: for the ordering and the making site's staff
        # and the network (the order's own readers)
        shown_ref = can(actor, Permission.ORDER_READ, one_of=[order_site, a.get("site_id")])
        patient = patients.get(order.patient_id) if order is not None else None
        late = int(a.get("late_min") or 0)
        status = order.status if order is not None else None
        # unschedule: a scheduled order whose job has not started; move forward: an order
        # not started yet (designed, placed by the plan; or scheduled)
        waiting = not a.get("frozen") and status == "scheduled"
        movable = not a.get("frozen") and status in ("designed", "scheduled")
        jobs.append(
            {
                **a,
                "kind": "running" if a.get("frozen") else ("late" if late else "on time"),
                "patient_ref": patient.ref if (patient is not None and shown_ref) else None,
                "order_status": status,
                "late_words": _late_words(late) if late else "",
                "start_local": local(a["start"], zone),
                "end_local": local(a["end"], zone),
                "due_local": local(a.get("due"), zone) if a.get("due") else "—",
                "can_unschedule": waiting
                and can(actor, Permission.ORDER_SCHEDULE, site_id=order_site),
                "can_urgent": movable
                and a.get("priority") != "urgent"
                and may_plan
                and can(actor, Permission.ORDER_PRIORITY, site_id=order_site),
            }
        )
    jobs.sort(key=lambda j: (j["start"], j["order_id"]))
    for m in machines:  # the chart's rows in words too (the chart is an image to a reader)
        m["jobs"] = sum(1 for j in jobs if j["machine_id"] == m["id"])
    return {
        "zone": zone,
        "zone_name": str(zone.key),
        "machines": machines,
        "jobs": jobs,
        "late": [j for j in jobs if j["kind"] == "late"],
        "may_plan": may_plan,
        "now": uow.clock.now(),
        "now_local": local(uow.clock.now(), zone),
    }


def _on_axis(value: Any, zone: ZoneInfo) -> str:
    """A time as the axis reads it: the wall-clock time in `zone`, no offset."""
    at = moment(value)
    assert at is not None
    return at.astimezone(zone).replace(tzinfo=None).isoformat()


def _label(job: dict[str, Any]) -> str:
    words = [job.get("medication") or "running job", job.get("patient_ref") or ""]
    text = " · ".join(w for w in words if w)
    return f"LATE {job['late_words']} · {text}" if job["late_words"] else text


def gantt(data: dict[str, Any]) -> str:
    """A Plotly timeline as JSON: a row for every machine seen (idle ones too), a labelled bar
    per job (late red, running grey), a line at the current time."""
    zone: ZoneInfo = data["zone"]
    fig = go.Figure()
    rows = [m["label"] for m in data["machines"]]
    for kind in ("on time", "late", "running"):
        jobs = [j for j in data["jobs"] if j["kind"] == kind]
        if not jobs:
            continue
        starts = [moment(j["start"]) for j in jobs]
        ends = [moment(j["end"]) for j in jobs]
        fig.add_trace(
            go.Bar(
                name=kind,
                orientation="h",
                base=[_on_axis(s, zone) for s in starts],
                x=[
                    (e - s).total_seconds() * 1000  # type: ignore[operator]
                    for s, e in zip(starts, ends, strict=True)
                ],
                y=[f"{j['site']} · {j['machine']}" for j in jobs],
                marker_color=COLOURS[kind],
                text=[_label(j) for j in jobs],
                # inside a long bar, after a short one (a 20-minute job in a day's window)
                textposition="auto",
                insidetextanchor="start",
                insidetextfont={"color": "#fff"},
                outsidetextfont={"color": "#1d2733"},
                cliponaxis=False,
                customdata=[
                    [
                        j["order_id"],
                        j.get("medication") or "",
                        j.get("late_min") or 0,
                        j["due_local"],
                        j["start_local"],
                        j["end_local"],
                    ]
                    for j in jobs
                ],
                hovertemplate="%{text}<br>order %{customdata[0]}<br>%{customdata[4]} – "
                "%{customdata[5]}<br>due %{customdata[3]}<extra></extra>",
            )
        )
    now = _on_axis(data["now"], zone)
    # an invisible point per machine row, so an idle machine keeps its row
    fig.add_trace(
        go.Scatter(
            x=[now] * len(rows),
            y=rows,
            mode="markers",
            marker={"opacity": 0},
            showlegend=False,
            hoverinfo="skip",
            name="machines",
        )
    )
    fig.add_shape(
        type="line",
        x0=now,
        x1=now,
        y0=0,
        y1=1,
        yref="paper",
        line={"color": "#1c7ed6", "width": 2, "dash": "dot"},
        name="now",
    )
    fig.add_annotation(
        x=now,
        y=1,
        yref="paper",
        yanchor="bottom",
        text="now " + data["now"].astimezone(zone).strftime("%H:%M %Z"),
        showarrow=False,
        font={"color": "#1c7ed6"},
    )
    first = min([moment(j["start"]) for j in data["jobs"]] + [data["now"]])
    last = max([moment(j["end"]) for j in data["jobs"]] + [data["now"] + timedelta(hours=8)])
    pad = (last - first) * 0.03
    fig.update_layout(
        barmode="overlay",
        xaxis={
            "type": "date",
            "title": f"{data['zone_name']} ({data['now'].astimezone(zone).strftime('%Z')})",
            "range": [_on_axis(first - pad, zone), _on_axis(last + pad, zone)],
        },
        yaxis={
            "autorange": "reversed",
            "categoryorder": "array",
            "categoryarray": rows,
            "automargin": True,
        },
        height=180 + 44 * len(rows),
        margin={"l": 20, "r": 20, "t": 30, "b": 50},
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.0, "yanchor": "bottom"},
    )
    return str(fig.to_json())
