"""The main menu: only the pages the person's role may open.

Each entry is shown when the page's declared permission (`web.pages.page`, read from the
routes as the route-matrix test reads them: `api.deps.declared_pages`) passes the same check
the page makes before it runs (`authorize_declared`); the record's site is checked when it is
opened. A page that declares no permission (the API reference) is shown to everyone logged in.
"""

from __future__ import annotations

from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context

from nearfab.api.deps import declared_pages
from nearfab.common.errors import Forbidden
from nearfab.identity import Actor, Permission, authorize_declared
from nearfab.web.pages import templates

# (path, label, the paths it is current for) in menu order
MENU: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("/", "Network", ()),
    ("/worklist", "Worklist", ("/worklist",)),
    ("/orders", "Orders", ("/orders",)),
    ("/release/remote", "Site releases", ("/release/remote",)),  # a control node only (_shown)
    ("/release", "Release queue", ("/release",)),
    ("/builds/approvals", "Home builds", ("/builds",)),
    ("/dispense", "Dispense", ("/dispense",)),
    ("/hand-overs", "Hand-over", ("/hand-overs",)),
    ("/notices", "Notices", ("/notices",)),
    ("/trace", "Trace", ("/trace",)),
    ("/recalls", "Recalls", ("/recalls",)),
    ("/custody/alerts", "Custody alerts", ("/custody/alerts",)),
    ("/epcis", "EPCIS", ("/epcis",)),
    ("/ledger", "Ledger", ("/ledger",)),
    ("/monitoring", "Monitoring", ("/monitoring",)),
    ("/plan", "Plan", ("/plan",)),
    ("/comparability", "Comparability", ("/comparability",)),
    ("/qa", "Quality", ("/qa",)),
    ("/master-files", "Master files", ("/master-files",)),
    ("/audit", "Audit", ("/audit",)),
    ("/node", "Node", ("/node",)),  # a node of a replicated network only (_shown)
    ("/api/docs", "API", ("/api/docs",)),
    ("/users", "Users", ("/users", "/security")),
)


def _permissions(app: Any) -> dict[str, Permission | None]:
    cached: dict[str, Permission | None] | None = getattr(app.state, "menu_permissions", None)
    if cached is None:
        cached = {path: perm for method, path, perm in declared_pages(app) if method == "GET"}
        cached.setdefault("/api/docs", None)
        app.state.menu_permissions = cached
    return cached


def may_see(actor: Actor, permission: Permission | None) -> bool:
    if permission is None:
        return True
    try:
        authorize_declared(actor, permission)
    except Forbidden:
        return False
    return True


def _shown(app: Any, href: str) -> bool:
    """The node page is in the menu of a node only (in one database it has nothing to show);
    the site nodes' releases in the control node's only."""
    application = getattr(app.state, "nearfab", None)
    if href == "/node":
        return getattr(application, "replication", None) is not None
    if href == "/release/remote":
        return getattr(application, "remote_releases", None) is not None
    return True


def menu_for(app: Any, actor: Actor, path: str) -> list[dict[str, Any]]:
    """The entries `actor` may open, each with whether it is the current page."""
    declared = _permissions(app)
    out: list[dict[str, Any]] = []
    for href, label, prefixes in MENU:
        if href not in declared or not may_see(actor, declared[href]) or not _shown(app, href):
            continue
        match = max((len(p) for p in prefixes if path.startswith(p)), default=0)
        current = path == "/" if href == "/" else match > 0
        out.append({"href": href, "label": label, "current": current, "match": match})
    # one current entry: the longest prefix (/release/remote is not the release queue too)
    best = max((int(e["match"]) for e in out if e["current"]), default=0)
    for entry in out:
        entry["current"] = entry["current"] and (entry["href"] == "/" or entry["match"] == best)
        del entry["match"]
    return out


@pass_context
def menu(context: Context) -> list[dict[str, Any]]:
    request, actor = context.get("request"), context.get("actor")
    if request is None or actor is None:
        return []
    return menu_for(request.app, actor, request.url.path)


templates.env.globals["menu"] = menu


@pass_context
def site_node_note(context: Context) -> str | None:
    """At a site node, one line on every page: which decisions wait for the control site."""
    request = context.get("request")
    application = getattr(getattr(request, "app", None), "state", None)
    application = getattr(application, "nearfab", None)
    if application is None or not application.network.node.site_node:
        return None
    return (
        "This is a site node: QP release and rejection, master-file changes, change controls "
        "and home-build approval are decided at the control site, and reach this node "
        "through its link."
    )


templates.env.globals["site_node_note"] = site_node_note
