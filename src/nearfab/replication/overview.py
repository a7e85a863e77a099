"""What the node page (`/node`) shows: which node this is, its link to the broker, its outbox,
per origin what it received, and at a site node the control's records waiting there. A
summary read in a few aggregate statements, so it stays quick on a control site holding
millions of records; the full re-hash of every chain is `nearfab node inbox status`
(docs/replication.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import func, select

from nearfab.custody.reads import site_public_keys
from nearfab.identity import Actor, Permission, authorize, can
from nearfab.network.reads import control_site, sites_by_id
from nearfab.replication.decisions import Waiting, waiting_at
from nearfab.replication.enums import ProblemKind
from nearfab.replication.link import LinkState
from nearfab.replication.models import InboxProblem, InboxRecord
from nearfab.replication.outcomes import SiteOutcome, site_outcomes
from nearfab.replication.services import OutboxStatus, ReplicationService, anchored_seqs
from nearfab.uow import UnitOfWork

# a duplicate is dropped and counted; a gap is what `missing` says while it is open
_COUNTED_APART = frozenset({ProblemKind.DUPLICATE.value, ProblemKind.GAP.value})


@dataclass(frozen=True)
class OriginSummary:
    """One origin node as this node holds it."""

    origin_site: str
    site_code: str
    site_name: str
    records: int
    head_seq: int
    missing: int  # sequence numbers below the head not held (a gap still open)
    last_created_at: datetime | None
    duplicates: int
    problems: int  # forks, altered and malformed records named
    anchored_seq: int  # where this node last anchored the origin's chains (0: never)
    # the keys of the origin's first and newest ledger entries this node does not hold: their
    # signatures cannot be checked here (`nearfab node keys import`)
    unverified_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.problems == 0 and not self.unverified_keys


@dataclass(frozen=True)
class NodeOverview:
    site_id: str
    site_code: str
    control: bool  # this node is the control site's
    outbox: OutboxStatus
    link: LinkState | None  # None: not serving its link (no NEARFAB_REPLICATION_URL)
    origins: list[OriginSummary]
    # at a site node: the control's records waiting here and why (`decisions.waiting_at`),
    # for a reader whose grant reaches this node's site (empty for another site's reader)
    waiting: list[Waiting] = field(default_factory=list)
    # at the control node: the control's records the site nodes the reader sees refused or
    # still hold (`outcomes.site_outcomes`)
    at_sites: list[SiteOutcome] = field(default_factory=list)


def node_overview(
    uow: UnitOfWork, actor: Actor, service: ReplicationService, link: LinkState | None
) -> NodeOverview:
    """This node's replication at a glance, for a reader of the audit trail (AUDIT_READ). A
    reader bound to a site sees its own site's origin and the control site's, not the other
    sites' (the control node holds every site's records)."""
    authorize(actor, Permission.AUDIT_READ)
    s = uow.session
    hub = control_site(s)
    hub_id = hub.id if hub is not None else None
    counts = s.execute(
        select(
            InboxRecord.origin_site,
            func.count(),
            func.max(InboxRecord.seq),
            func.max(InboxRecord.created_at),
        ).group_by(InboxRecord.origin_site)
    ).all()
    problems: dict[tuple[str, str], int] = {
        (origin, kind): int(n)
        for origin, kind, n in s.execute(
            select(InboxProblem.origin_site, InboxProblem.kind, func.count()).group_by(
                InboxProblem.origin_site, InboxProblem.kind
            )
        )
    }
    origins = {origin for origin, *_ in counts} | {origin for origin, _ in problems}
    visible = sorted(
        o for o in origins if o == hub_id or can(actor, Permission.AUDIT_READ, site_id=o)
    )
    anchored = anchored_seqs(s, visible)
    unverified = _unverified_keys(uow, visible)
    sites = sites_by_id(s, [*visible, service.site_id])
    held = {origin: (int(n), int(head or 0), at) for origin, n, head, at in counts}
    summaries = []
    for origin in visible:
        n, head, at = held.get(origin, (0, 0, None))
        site = sites.get(origin)
        summaries.append(
            OriginSummary(
                origin_site=origin,
                site_code=site.code if site is not None else origin,
                site_name=site.name if site is not None else "(not a site of this network)",
                records=n,
                head_seq=head,
                missing=head - n,
                last_created_at=at,
                duplicates=problems.get((origin, ProblemKind.DUPLICATE.value), 0),
                problems=sum(
                    v
                    for (o, kind), v in problems.items()
                    if o == origin and kind not in _COUNTED_APART
                ),
                anchored_seq=anchored.get(origin, 0),
                unverified_keys=unverified.get(origin, []),
            )
        )
    own = sites.get(service.site_id)
    waiting: list[Waiting] = []
    # this site's own rows: for a reader whose grant reaches this node's site
    if service.site_id != hub_id and can(actor, Permission.AUDIT_READ, site_id=service.site_id):
        waiting = waiting_at(uow, service.site_id, hub_id)
    at_sites: list[SiteOutcome] = []
    if service.site_id == hub_id:
        at_sites = [
            replace(o, site_code=sites[o.origin_site].code if o.origin_site in sites else "")
            for o in site_outcomes(uow, [o for o in visible if o != hub_id])
        ]
    return NodeOverview(
        site_id=service.site_id,
        site_code=own.code if own is not None else service.site_id,
        control=service.site_id == hub_id,
        outbox=service.outbox(uow),
        link=link,
        origins=summaries,
        waiting=waiting,
        at_sites=at_sites,
    )


def _unverified_keys(uow: UnitOfWork, origins: list[str]) -> dict[str, list[str]]:
    """Per origin, the signing keys of its first and newest ledger entries that this node does
    not hold (two look-ups on the inbox's kind index each, so the page stays quick). A site
    signs with the key it made after its copy from its first entry on, and with its newest key
    now, so these are the keys an import is missing in practice; `nearfab node inbox status`
    checks every entry."""
    s = uow.session
    known = site_public_keys(s)
    out: dict[str, list[str]] = {}
    ledger = InboxRecord.kind == "ledger"
    for origin in origins:
        ends = s.execute(
            select(func.min(InboxRecord.seq), func.max(InboxRecord.seq)).where(
                ledger, InboxRecord.origin_site == origin
            )
        ).one()
        if ends[0] is None:
            continue
        payloads = s.scalars(
            select(InboxRecord.payload)
            .where(ledger, InboxRecord.origin_site == origin, InboxRecord.seq.in_(set(ends)))
            .order_by(InboxRecord.seq)
        )
        missing: list[str] = []
        for payload in payloads:
            key_id = str(json.loads(payload).get("key_id") or "")
            if key_id and key_id not in known and key_id not in missing:
                missing.append(key_id)
        if missing:
            out[origin] = missing
    return out
