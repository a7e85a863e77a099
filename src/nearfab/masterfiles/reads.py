"""What other domains may read of masterfiles' tables."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Subquery, select
from sqlalchemy.orm import Session

from nearfab.masterfiles.changecontrol import ChangeControl
from nearfab.masterfiles.models import MasterFile


def change_controls_by_id(session: Session, ids: Iterable[str]) -> dict[str, ChangeControl]:
    """The change controls with these ids, in one statement; an unknown id is simply absent."""
    wanted = set(ids)
    if not wanted:
        return {}
    rows = session.scalars(select(ChangeControl).where(ChangeControl.id.in_(wanted)))
    return {cc.id: cc for cc in rows}


def master_files(session: Session) -> list[MasterFile]:
    """Every master file version, by code and version, in one statement."""
    return list(session.scalars(select(MasterFile).order_by(MasterFile.code, MasterFile.version)))


def master_file_view() -> Subquery:
    """The master file versions as a read view to join on: `id`, `code`, `version`,
    `product_family`."""
    return select(
        MasterFile.id, MasterFile.code, MasterFile.version, MasterFile.product_family
    ).subquery("master_file_view")
