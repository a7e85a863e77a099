"""What other domains may read of quality's tables."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Subquery, select
from sqlalchemy.orm import Session, aliased

from nearfab.quality.models import ReleaseReview
from nearfab.quality.qms_models import Capa


def review_view() -> Subquery:
    """The QP release reviews as a read view to join on (one per batch): `id`, `batch_id`,
    `decision`, `signature_id`, `decided_by`, `decided_at`, `row_version`."""
    return select(
        ReleaseReview.id,
        ReleaseReview.batch_id,
        ReleaseReview.decision,
        ReleaseReview.signature_id,
        ReleaseReview.decided_by,
        ReleaseReview.decided_at,
        ReleaseReview.row_version,
    ).subquery("review_view")


def review_entity_view() -> type[ReleaseReview]:
    """The release review as a joinable entity view, for a one-statement hot path that hands
    the loaded review on to quality (verification: the QP signature check then needs no
    statement of its own to find it). The caller reads it, never writes it."""
    return aliased(ReleaseReview, name="review_view")


def capas_by_id(session: Session, ids: Iterable[str]) -> dict[str, Capa]:
    """The CAPAs with these ids, in one statement; an unknown id is simply absent."""
    wanted = set(ids)
    if not wanted:
        return {}
    return {c.id: c for c in session.scalars(select(Capa).where(Capa.id.in_(wanted)))}


def capas_raised_by(session: Session, source_kind: str, source_id: str) -> list[Capa]:
    """The CAPAs raised by one source (e.g. a proficiency suspension), in one statement."""
    return list(
        session.scalars(
            select(Capa).where(Capa.source_kind == source_kind, Capa.source_id == source_id)
        )
    )
