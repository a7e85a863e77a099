"""Which node this process is (docs/replication.md): in a replicated network, a site node runs
everything that does not need another site, and refuses the use cases only the control site
may run (QP release and rejection, master-file changes). Each of those use cases asks its
service's `NodeRole` beside its permission check, so the API, the CLI and the screens, which
all call the service, refuse the same way."""

from __future__ import annotations

from nearfab.common.errors import Refused

CONTROL_ONLY = "needs the control site: this node is a site node"
RELEASE_DECISION = "a QP release or rejection"
MASTER_FILE_CHANGE = "a master-file change"
SIGNING_POLICY_CHANGE = "a change of a site's signing policy"
BUILD_APPROVAL = "a home build's approval"
LEDGER_ANCHOR = "anchoring the sites' ledger heads in the control site's chain"


class NodeRole:
    """One per process, shared by the services (bootstrap). `control_site_id` is set when the
    process is a site node of a replicated network (replication.decisions.wire_site_node);
    None: a control node, or a network in one database, where every use case runs."""

    def __init__(self, control_site_id: str | None = None, site_id: str | None = None) -> None:
        self.control_site_id = control_site_id
        # a node's own site: a site node's (set with control_site_id) or the control node's
        # (bootstrap); None in a network of one database
        self.site_id = site_id

    @property
    def site_node(self) -> bool:
        return self.control_site_id is not None

    def works_for(self, site_id: str | None) -> bool:
        """Whether this process plans, starts and runs work of `site_id`: a node of a
        replicated network (a site node, or the control node: `site_id` set) only its own
        site's (its database is a copy of the network's, and another site's orders and
        machines there are that site's node's business); in one database every site's."""
        return self.site_id is None or site_id == self.site_id

    def require_control(self, what: str) -> None:
        """Refuse `what` (`control_site_only`, field `node`) at a site node."""
        if self.site_node:
            raise Refused(f"{what} {CONTROL_ONLY}", field="node", code="control_site_only")
