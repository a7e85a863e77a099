"""Exceptional release of an out-of-specification batch.

At the treating physician's request, under exceptional circumstances (no other batch can be
made in time for the patient), a batch that failed a release test may still be released: the
physician (a clinician account of the patient's site, i.e. the ordering site) signs a request
naming the circumstances; then the QP signs the release (`QualityService.decide(...,
exceptional=True)`). Without both signatures there is no release. The certificate and the batch
record show the release as exceptional, with both signatures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    SignatureService,
    audit,
    authorize,
)
from nearfab.masterfiles import MasterFileService
from nearfab.orders import OrderService
from nearfab.production import ProductionService
from nearfab.quality.logic import STATUS_CHECKS
from nearfab.quality.models import ExceptionalRelease, ReleaseReview
from nearfab.quality.records import pending_review, refused_on_batch, sign_for_batch
from nearfab.quality.signedrows import SignedRequest
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.production import BatchRecord

REQUESTED, RELEASED, CLOSED = "requested", "released", "closed"
REQUESTED_BY = "requested by the treating physician (exceptional release)"
CIRCUMSTANCES_MAX = 2000


def out_of_specification(review: ReleaseReview) -> list[str]:
    """The family's release tests the batch failed (quality's own checks are not tests)."""
    return [
        str(c.get("name"))
        for c in review.proposal.get("checks") or []
        if c.get("passed") is False and c.get("name") not in STATUS_CHECKS
    ]


def require_out_of_specification(
    review: ReleaseReview, batch: BatchRecord, field: str
) -> list[str]:
    """`out_of_specification(review)`; Refused (`not_out_of_specification`, naming `field`)
    when the batch failed no release test: an exceptional release is for such a batch only."""
    failed = out_of_specification(review)
    if not failed:
        raise Refused(
            f"batch {batch.batch_number} failed no release test; an exceptional release is "
            "for an out-of-specification batch",
            field=field,
            code="not_out_of_specification",
        )
    return failed


class ExceptionalReleases:
    """`QualityService.exceptional`: the physician's side of an exceptional release."""

    def __init__(
        self,
        production: ProductionService,
        master_files: MasterFileService,
        orders: OrderService,
        signatures: SignatureService,
    ) -> None:
        self._production = production
        self._master_files = master_files
        self._orders = orders
        self._signatures = signatures

    def request(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch_id: str,
        *,
        circumstances: str,
        password: str,
        meaning: str = REQUESTED_BY,
        username: str | None = None,
        totp: str | None = None,
    ) -> ExceptionalRelease:
        """The treating physician asks (e-signed) for the exceptional release of an
        out-of-specification batch waiting for the QP. Refused for anyone but a clinician whose
        home is the patient's (ordering) site, for a batch within specification, and twice."""
        batch = self._production.get(uow, batch_id)
        key, site_id = batch.id, batch.site_id
        order = self._orders.get(uow, batch.order_id)
        order_site = order.site_id
        with refused_on_batch(uow, actor, key, site_id):
            authorize(actor, Permission.RELEASE_EXCEPTIONAL_REQUEST, site_id=order_site)
            if actor.site_id != order_site:
                raise Refused(
                    f"{actor.full_name} is not a clinician of the patient's site; only the "
                    "treating physician asks for an exceptional release",
                    field="signer",
                    code="not_treating_site",
                )
            review = pending_review(uow, batch)
            failed = require_out_of_specification(review, batch, "batch_id")
            text = (circumstances or "").strip()
            if not text:
                raise ValidationFailed(
                    "an exceptional release needs the exceptional circumstances",
                    field="circumstances",
                )
            if len(text) > CIRCUMSTANCES_MAX:
                raise ValidationFailed(
                    f"circumstances has more than {CIRCUMSTANCES_MAX} characters",
                    field="circumstances",
                )
            if self.for_batch(uow, batch.id) is not None:
                raise Refused(
                    f"an exceptional release of batch {batch.batch_number} was already asked for",
                    field="batch_id",
                    code="already_requested",
                )
            row = ExceptionalRelease(
                id=new_id("xrl"),
                batch_id=batch.id,
                review_id=review.id,
                site_id=site_id,
                order_site_id=order_site,
                status=REQUESTED,
                circumstances=text,
                out_of_specification=failed,
                requested_by=actor.user_id,
                requested_by_name=actor.full_name,
                requested_at=uow.clock.now(),
                physician_signature_id="",
                qp_signature_id=None,
                decided_by=None,
                decided_at=None,
            )
            sig = sign_for_batch(
                self._signatures,
                self._master_files,
                uow,
                actor,
                batch,
                password=password,
                meaning=meaning,
                record_type="exceptional_release",
                record_id=row.id,
                content=row.request_content(),
                username=username,
                totp=totp,
            )
            row.physician_signature_id, row.requested_by_name = sig.id, sig.signer_name
            uow.session.add(row)
            uow.flush()
            audit(
                uow,
                actor,
                AuditAction.CREATE,
                "exceptional_release",
                row.id,
                new={
                    "batch_id": batch.id,
                    "status": REQUESTED,
                    "out_of_specification": failed,
                    "signature_id": sig.id,
                },
                reason=text,
                site_id=site_id,
            )
            self._production.add_step(
                uow,
                actor,
                batch,
                "exceptional_release_requested",
                {"request_id": row.id, "signature_id": sig.id, "out_of_specification": failed},
            )
            uow.flush()
        uow.commit()
        return row

    def for_batch(self, uow: UnitOfWork, batch_id: str) -> ExceptionalRelease | None:
        return uow.session.scalar(
            select(ExceptionalRelease).where(ExceptionalRelease.batch_id == batch_id)
        )

    def request_valid(self, uow: UnitOfWork, row: ExceptionalRelease) -> bool:
        """The physician's signature still matches the request."""
        sig = next(
            (
                s
                for s in self._signatures.signatures_for(uow, "exceptional_release", row.id)
                if s.id == row.physician_signature_id
            ),
            None,
        )
        return sig is not None and self._signatures.is_valid(sig, row.request_content())

    @staticmethod
    def signed_part(row: ExceptionalRelease | SignedRequest) -> dict[str, Any]:
        """What the QP's release signature binds of the request."""
        return {
            "id": row.id,
            "physician_signature_id": row.physician_signature_id,
            "requested_by": row.requested_by,
            "out_of_specification": list(row.out_of_specification),
            "circumstances": row.circumstances,
        }

    def released(
        self, uow: UnitOfWork, actor: Actor, row: ExceptionalRelease, qp_signature_id: str
    ) -> None:
        """The QP's signature completes the release (in the QP decision's transaction)."""
        row.status, row.qp_signature_id = RELEASED, qp_signature_id
        row.decided_by, row.decided_at = actor.user_id, uow.clock.now()
        audit(
            uow,
            actor,
            AuditAction.TRANSITION,
            "exceptional_release",
            row.id,
            old={"status": REQUESTED},
            new={"status": RELEASED, "qp_signature_id": qp_signature_id},
            reason="released by the QP at the treating physician's request",
            site_id=row.site_id,
        )

    def closed(self, uow: UnitOfWork, actor: Actor, row: ExceptionalRelease, why: str) -> None:
        row.status, row.decided_by, row.decided_at = CLOSED, actor.user_id, uow.clock.now()
        audit(
            uow,
            actor,
            AuditAction.TRANSITION,
            "exceptional_release",
            row.id,
            old={"status": REQUESTED},
            new={"status": CLOSED},
            reason=why,
            site_id=row.site_id,
        )

    def view(self, uow: UnitOfWork, row: ExceptionalRelease) -> dict[str, Any]:
        """The request and its two signatures: `schemas.ExceptionalOut`."""
        return {
            "id": row.id,
            "status": row.status,
            "circumstances": row.circumstances,
            "out_of_specification": list(row.out_of_specification),
            "requested_by": row.requested_by,
            "requested_by_name": row.requested_by_name,
            "requested_at": row.requested_at.isoformat(),
            "physician_signature_id": row.physician_signature_id,
            "physician_signature_valid": self.request_valid(uow, row),
            "qp_signature_id": row.qp_signature_id,
            "decided_by": row.decided_by,
            "decided_at": row.decided_at.isoformat() if row.decided_at else None,
        }
