"""The network plan as a reader may see it.

The plan is one, computed for the whole network (`planning.py`); what each reader is shown
of it follows their grant of `plan.read` (identity/permissions.py, scope per role grant):
control-site staff and the auditor grant see every site; site staff see their own site's
machines and the jobs planned on them, the late or unplaced orders their site ordered or
makes, and the changes that touch them, with another site's machine left unnamed. A plan
version's own figures (solver, objective, counts of late and unplaced orders) are the
network's and are shown to everyone who may read the plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from nearfab.identity import Actor, Permission, authorize, visible_sites
from nearfab.network import reads as network_reads
from nearfab.orders import reads as orders_reads
from nearfab.scheduling.models import PlanVersion
from nearfab.scheduling.schemas import plan_dict, plan_summary
from nearfab.uow import UnitOfWork


class PlanScope:
    """What one reader may see of plan versions: every site, or the sites in `sites`."""

    def __init__(self, uow: UnitOfWork, actor: Actor) -> None:
        authorize(actor, Permission.PLAN_READ)
        self._uow = uow
        self.sites = visible_sites(actor, Permission.PLAN_READ)  # None: the whole network
        self.machines: frozenset[str] | None = None
        self._hidden_names: list[str] = []  # other sites' machine names, longest first
        self._order_sites: dict[str, str] = {}  # order id -> ordering site, read once each
        if self.sites is not None:
            machine = network_reads.machine_view()
            rows = list(
                uow.session.execute(select(machine.c.id, machine.c.name, machine.c.site_id))
            )
            self.machines = frozenset(str(i) for i, _, site in rows if site in self.sites)
            self._hidden_names = sorted(
                {str(n) for _, n, site in rows if site not in self.sites}, key=len, reverse=True
            )

    @property
    def scoped(self) -> bool:
        return self.sites is not None

    def machine_names(self) -> dict[str, str]:
        """Names of the machines the reader may see (to show a change's machines)."""
        machine = network_reads.machine_view()
        stmt = select(machine.c.id, machine.c.name)
        if self.sites is not None:
            stmt = stmt.where(machine.c.site_id.in_(self.sites))
        return {str(i): str(n) for i, n in self._uow.session.execute(stmt)}

    def _ordering_sites(self, order_ids: Iterable[str]) -> dict[str, str]:
        """Order id -> the site that ordered it (each order read once per scope: a history
        of plan versions names the same orders again and again)."""
        ids = sorted({str(i) for i in order_ids if i} - set(self._order_sites))
        if ids:
            order = orders_reads.order_view()
            rows = self._uow.session.execute(
                select(order.c.id, order.c.site_id).where(order.c.id.in_(ids))
            )
            self._order_sites.update({str(i): str(s) for i, s in rows})
        return self._order_sites

    def _machine_seen(self, machine_id: Any) -> bool:
        return self.machines is None or (machine_id is not None and machine_id in self.machines)

    def changes(self, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The changes that touch the reader's sites (their order, or a machine of theirs);
        another site's machine and start are left out (None)."""
        if self.sites is None:
            return list(changes)
        ordered_by = self._ordering_sites(c["order_id"] for c in changes)
        out = []
        for c in changes:
            mine = ordered_by.get(c["order_id"]) in self.sites
            if not (
                mine
                or (c.get("from_machine") and self._machine_seen(c["from_machine"]))
                or (c.get("to_machine") and self._machine_seen(c["to_machine"]))
            ):
                continue
            shown = dict(c)
            for side in ("from", "to"):
                if not self._machine_seen(c.get(f"{side}_machine")):
                    shown[f"{side}_machine"] = None
                    shown[f"{side}_start"] = None
            out.append(shown)
        return out

    def _unnamed(self, message: str) -> str:
        """An explanation's words with another site's machines left unnamed."""
        for name in self._hidden_names:
            message = message.replace(name, "a machine of another site")
        return message

    def plan(self, version: PlanVersion) -> dict[str, Any]:
        """`plan_dict` of the version, limited to the reader's sites."""
        data = plan_dict(version)
        data["scoped"] = self.scoped
        if self.sites is None:
            return data
        sites = self.sites
        assignments = [a for a in version.assignments if a.get("site_id") in sites]
        placed_here = {str(a["order_id"]) for a in assignments}
        ordered_by = self._ordering_sites(e["order_id"] for e in version.explanations)
        data["assignments"] = assignments
        data["explanations"] = [
            {**e, "message": self._unnamed(str(e.get("message") or ""))}
            for e in version.explanations
            if ordered_by.get(e["order_id"]) in sites or e["order_id"] in placed_here
        ]
        data["changes"] = self.changes(version.changes)
        return data

    def summary(self, version: PlanVersion) -> dict[str, Any]:
        """`plan_summary` with the reader's changes (history)."""
        return {**plan_summary(version), "changes": self.changes(version.changes)}
