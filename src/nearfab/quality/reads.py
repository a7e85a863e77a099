"""What other domains may read of quality's tables."""

from __future__ import annotations

from sqlalchemy import Subquery, select
from sqlalchemy.orm import aliased

from nearfab.quality.models import ReleaseReview


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
