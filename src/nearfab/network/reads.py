"""What other domains may read of network's tables."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Subquery, select
from sqlalchemy.orm import Session

from nearfab.common.errors import NotFound
from nearfab.network.enums import SiteKind
from nearfab.network.models import Machine, Qualification, Site, Training


def machine(session: Session, machine_id: str) -> Machine:
    """A machine by id; NotFound naming `machine_id` (as the network service's own look-up)."""
    found = session.get(Machine, machine_id)
    if found is None:
        raise NotFound(f"no machine {machine_id!r}", field="machine_id")
    return found


def machine_view() -> Subquery:
    """The machines as a read view: `id`, `name`, `site_id`, `machine_type`, `status`."""
    return select(
        Machine.id, Machine.name, Machine.site_id, Machine.machine_type, Machine.status
    ).subquery("machine_view")


def site_view() -> Subquery:
    """The sites as a read view: `id`, `code`, `kind`, `status`."""
    return select(Site.id, Site.code, Site.kind, Site.status).subquery("site_view")


def qualification_view() -> Subquery:
    """Machine qualifications as a read view: `id`, `machine_id`, `master_file_code`,
    `revoked`, `valid_until`."""
    return select(
        Qualification.id,
        Qualification.machine_id,
        Qualification.master_file_code,
        Qualification.revoked,
        Qualification.valid_until,
    ).subquery("qualification_view")


def training_view() -> Subquery:
    """Operator training as a read view: `id`, `user_id`, `master_file_code`, `valid_until`."""
    return select(
        Training.id, Training.user_id, Training.master_file_code, Training.valid_until
    ).subquery("training_view")


def site(session: Session, site_id: str, field: str = "site_id") -> Site:
    """A site by id (from the session's identity map when loaded); NotFound naming `field`
    (`site_id` unless the caller's form calls it otherwise), as the network's own look-up."""
    found = session.get(Site, site_id) if site_id else None
    if found is None:
        raise NotFound(f"no site {site_id!r}", field=field)
    return found


def sites(session: Session) -> list[Site]:
    """Every site of the network, by code, in one statement."""
    return list(session.scalars(select(Site).order_by(Site.code)))


def control_site(session: Session) -> Site | None:
    """The network's control site (None before one is set up)."""
    return session.scalar(select(Site).where(Site.kind == SiteKind.CONTROL.value))


def sites_by_id(session: Session, ids: Iterable[str]) -> dict[str, Site]:
    """The sites with these ids, in one statement; an unknown id is simply absent."""
    wanted = set(ids)
    if not wanted:
        return {}
    return {s.id: s for s in session.scalars(select(Site).where(Site.id.in_(wanted)))}


def sites_by_code(session: Session, codes: Iterable[str]) -> dict[str, Site]:
    """The sites with these codes, in one statement, by code; an unknown code is absent."""
    wanted = set(codes)
    if not wanted:
        return {}
    return {s.code: s for s in session.scalars(select(Site).where(Site.code.in_(wanted)))}
