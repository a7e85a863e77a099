"""Results pending at release, and their follow-up.

A family may declare release tests whose result may still be pending when the QP certifies
(`quality.kit.pending_tests`). The QP's release then opens one `ReleaseFollowUp` per pending
test. Its result is entered later by QA or a QP, e-signed and audited in one transaction: a pass
closes the follow-up; a fail opens an investigation (a deviation on the batch) and a notice to
the treating prescriber of every patient who received the batch. A result is never overwritten:
a second entry is refused unless it is a signed correction with its reason (a new row).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from nearfab.common.errors import DomainError, NotFound, Refused, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    SignatureService,
    audit,
    authorize,
    refuse,
    visible_sites,
)
from nearfab.masterfiles import MasterFileService
from nearfab.orders import OrderService
from nearfab.production import ProductionService
from nearfab.quality.models import (
    FollowUpResult,
    PrescriberNotice,
    ReleaseFollowUp,
    ReleaseReview,
)
from nearfab.quality.records import add_deviation, refused_on_batch, sign_for_batch
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.production import BatchRecord

PENDING, PASSED, FAILED = "pending", "passed", "failed"
OUTCOMES = {"pass": PASSED, "fail": FAILED}
# the deviation a failed follow-up opens: raised after the certification, so not part of what
# the QP's release signature is bound to
FAILED_KIND = "release_followup_failed"
DETAIL_MAX = 2000


class FollowUps:
    """`QualityService.followups`: the follow-up of results pending at release."""

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

    # --- opened by the QP's release ------------------------------------------------------------
    def open_for_release(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        review: ReleaseReview,
        titles: Mapping[str, str],
    ) -> list[ReleaseFollowUp]:
        """One follow-up per test the review lists as pending, in the release's transaction."""
        out = []
        for test in review.proposal.get("pending") or []:
            fu = ReleaseFollowUp(
                id=new_id("rfu"),
                batch_id=batch.id,
                review_id=review.id,
                site_id=batch.site_id,
                test=str(test),
                title=titles.get(str(test), str(test)),
                status=PENDING,
                opened_at=uow.clock.now(),
                result_id=None,
                deviation_id=None,
            )
            uow.session.add(fu)
            out.append(fu)
        if out:
            uow.flush()
        for fu in out:
            audit(
                uow,
                actor,
                AuditAction.CREATE,
                "release_followup",
                fu.id,
                new={"batch_id": batch.id, "test": fu.test, "status": PENDING},
                reason="released with this result pending",
                site_id=batch.site_id,
            )
        return out

    # --- the result, entered later -------------------------------------------------------------
    def enter_result(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch_id: str,
        test: str,
        *,
        outcome: str,
        detail: str,
        password: str,
        meaning: str,
        reason: str | None = None,
        username: str | None = None,
        totp: str | None = None,
    ) -> ReleaseFollowUp:
        """Enter (e-signed) the result of a test that was pending at release. A second entry
        for the same test is refused, unless it gives a `reason`: then it is a signed
        correction of the one before. A fail opens an investigation and notifies the treating
        prescriber of every patient who received the batch, in the same transaction."""
        batch = self._production.get(uow, batch_id)
        key, site_id = batch.id, batch.site_id
        with refused_on_batch(uow, actor, key, site_id):
            authorize(actor, Permission.RELEASE_FOLLOWUP_ENTER, site_id=site_id)
            status = OUTCOMES.get(str(outcome))
            if status is None:
                raise ValidationFailed(
                    f"outcome must be pass or fail, not {outcome!r}", field="outcome"
                )
            text = (detail or "").strip()
            if not text:
                raise ValidationFailed("a result needs its detail", field="detail")
            if len(text) > DETAIL_MAX:
                raise ValidationFailed(
                    f"detail has more than {DETAIL_MAX} characters", field="detail"
                )
            why = (reason or "").strip() or None
            fu = uow.session.scalar(
                select(ReleaseFollowUp).where(
                    ReleaseFollowUp.batch_id == batch.id, ReleaseFollowUp.test == test
                )
            )
            if fu is None:
                known = [f.test for f in self.for_batch(uow, batch.id)]
                raise NotFound(
                    f"batch {batch.batch_number} has no result pending for test {test!r}"
                    + (f" (pending at release: {', '.join(known)})" if known else ""),
                    field="test",
                )
            if fu.result_id is not None and why is None:
                raise Refused(
                    f"the result of {fu.title} for batch {batch.batch_number} was already "
                    "entered; a second entry is a correction and needs its reason",
                    field="reason",
                    code="result_already_entered",
                )
            before = self.result(uow, fu.result_id) if fu.result_id else None
            if before is not None and before.outcome == outcome and before.detail == text:
                raise Refused(
                    "the correction repeats the result in force; nothing to correct",
                    field="detail",
                    code="nothing_to_correct",
                )
            result = FollowUpResult(
                id=new_id("rfr"),
                followup_id=fu.id,
                outcome=str(outcome),
                detail=text,
                entered_by=actor.user_id,
                entered_by_name=actor.full_name,
                entered_at=uow.clock.now(),
                signature_id="",
                corrects_id=fu.result_id,
                reason=why,
            )
            sig = sign_for_batch(
                self._signatures,
                self._master_files,
                uow,
                actor,
                batch,
                password=password,
                meaning=meaning,
                record_type="release_followup_result",
                record_id=result.id,
                content=result.content(),
                username=username,
                totp=totp,
            )
            result.signature_id, result.entered_by_name = sig.id, sig.signer_name
            uow.session.add(result)
            uow.flush()
            old = {"status": fu.status, "result_id": fu.result_id}
            fu.status, fu.result_id = status, result.id
            audit(
                uow,
                actor,
                AuditAction.UPDATE,
                "release_followup",
                fu.id,
                old=old,
                new={
                    "status": status,
                    "result_id": result.id,
                    "outcome": result.outcome,
                    "detail": text,
                    "signature_id": sig.id,
                },
                reason=why or f"result entered: {outcome}",
                site_id=site_id,
            )
            if status == FAILED and fu.deviation_id is None:
                self._failed(uow, actor, batch, fu, text)
            self._production.add_step(
                uow,
                actor,
                batch,
                "release_followup_result",
                {
                    "test": fu.test,
                    "outcome": result.outcome,
                    "signature_id": sig.id,
                    **({"corrects": result.corrects_id, "reason": why} if before else {}),
                },
            )
            uow.flush()  # two results entered at once: the loser fails here, audited
        uow.commit()
        return fu

    def _failed(
        self, uow: UnitOfWork, actor: Actor, batch: BatchRecord, fu: ReleaseFollowUp, text: str
    ) -> None:
        """A result that failed after release: an investigation, and the prescribers told."""
        dev = add_deviation(
            uow,
            actor,
            batch,
            kind=FAILED_KIND,
            description=(
                f"investigation: {fu.title} failed after release of batch "
                f"{batch.batch_number}: {text}"
            ),
            audited={"followup_id": fu.id, "test": fu.test},
        )
        fu.deviation_id = dev.id
        # every patient who received the batch: the batch's order (through the orders service)
        for order_id in [batch.order_id]:
            order = self._orders.get(uow, order_id)
            patient = self._orders.patient(uow, order.patient_id)
            reference, name = self._orders.prescriber(uow, order)
            notice = PrescriberNotice(
                id=new_id("ntc"),
                kind="result_failed_after_release",
                site_id=order.site_id,
                order_id=order.id,
                patient_ref=patient.ref,
                prescriber_reference=reference,
                prescriber_display=name,
                batch_id=batch.id,
                batch_number=batch.batch_number,
                followup_id=fu.id,
                deviation_id=dev.id,
                message=(
                    f"{fu.title} of batch {batch.batch_number} (order {order.id}, patient "
                    f"{patient.ref}) was pending at release and has FAILED: {text}. "
                    f"An investigation is open ({dev.id}); please review the patient."
                ),
                created_at=uow.clock.now(),
                acknowledged_at=None,
                acknowledged_by=None,
            )
            uow.session.add(notice)
            uow.flush()
            audit(
                uow,
                actor,
                AuditAction.CREATE,
                "prescriber_notice",
                notice.id,
                new={
                    "order_id": order.id,
                    "batch_id": batch.id,
                    "prescriber": reference or name,
                    "deviation_id": dev.id,
                },
                site_id=order.site_id,
            )

    # --- reading -------------------------------------------------------------------------------
    def for_batch(self, uow: UnitOfWork, batch_id: str) -> list[ReleaseFollowUp]:
        return list(
            uow.session.scalars(
                select(ReleaseFollowUp)
                .where(ReleaseFollowUp.batch_id == batch_id)
                .order_by(ReleaseFollowUp.opened_at, ReleaseFollowUp.id)
            )
        )

    def batch_followups(
        self, uow: UnitOfWork, actor: Actor, batch_id: str
    ) -> tuple[BatchRecord, list[ReleaseFollowUp]]:
        batch = self._production.get(uow, batch_id)
        authorize(actor, Permission.RELEASE_FOLLOWUP_READ, site_id=batch.site_id)
        return batch, self.for_batch(uow, batch.id)

    def open_list(self, uow: UnitOfWork, actor: Actor) -> list[ReleaseFollowUp]:
        """Follow-ups still waiting for their result, of the sites the actor sees."""
        authorize(actor, Permission.RELEASE_FOLLOWUP_READ)
        stmt = (
            select(ReleaseFollowUp)
            .where(ReleaseFollowUp.status == PENDING)
            .order_by(ReleaseFollowUp.opened_at, ReleaseFollowUp.id)
        )
        sites = visible_sites(actor, Permission.RELEASE_FOLLOWUP_READ)
        if sites is not None:
            stmt = stmt.where(ReleaseFollowUp.site_id.in_(sites))
        return list(uow.session.scalars(stmt))

    def view(self, uow: UnitOfWork, followup_id: str) -> dict[str, Any]:
        """One follow-up by id, as `followup_dict` shows it (e.g. after a result is entered)."""
        fu = uow.session.get(ReleaseFollowUp, followup_id)
        if fu is None:
            raise NotFound(f"no release follow-up {followup_id!r}", field="followup_id")
        number = self._production.get(uow, fu.batch_id).batch_number
        return followup_dict(self, uow, fu, number)

    def result(self, uow: UnitOfWork, result_id: str) -> FollowUpResult | None:
        return uow.session.get(FollowUpResult, result_id)

    def results(self, uow: UnitOfWork, followup_id: str) -> list[FollowUpResult]:
        """Every entry of a follow-up, first to last: each correction after the entry it
        corrects (the chain, not the clock, orders them)."""
        rows = list(
            uow.session.scalars(
                select(FollowUpResult)
                .where(FollowUpResult.followup_id == followup_id)
                .order_by(FollowUpResult.entered_at, FollowUpResult.id)
            )
        )
        after = {r.corrects_id: r for r in rows}
        chain: list[FollowUpResult] = []
        row = after.get(None)
        while row is not None and len(chain) < len(rows):
            chain.append(row)
            row = after.get(row.id)
        return chain + [r for r in rows if r not in chain]

    def result_valid(self, uow: UnitOfWork, result: FollowUpResult) -> bool:
        sig = next(
            (
                s
                for s in self._signatures.signatures_for(uow, "release_followup_result", result.id)
                if s.id == result.signature_id
            ),
            None,
        )
        return sig is not None and self._signatures.is_valid(sig, result.content())

    # --- notices to prescribers ----------------------------------------------------------------
    def notices(
        self, uow: UnitOfWork, actor: Actor, *, unacknowledged: bool = False
    ) -> list[PrescriberNotice]:
        """Notices of the sites the actor sees (a clinician: their own site's), newest first."""
        authorize(actor, Permission.NOTICE_READ)
        stmt = select(PrescriberNotice).order_by(
            PrescriberNotice.created_at.desc(), PrescriberNotice.id
        )
        sites = visible_sites(actor, Permission.NOTICE_READ)
        if sites is not None:
            stmt = stmt.where(PrescriberNotice.site_id.in_(sites))
        if unacknowledged:
            stmt = stmt.where(PrescriberNotice.acknowledged_at.is_(None))
        return list(uow.session.scalars(stmt))

    def acknowledge(self, uow: UnitOfWork, actor: Actor, notice_id: str) -> PrescriberNotice:
        """A clinician of the ordering site says they have read the notice (audited)."""
        notice = uow.session.get(PrescriberNotice, notice_id)
        if notice is None:
            raise NotFound(f"no notice {notice_id!r}", field="notice_id")
        try:
            authorize(actor, Permission.NOTICE_ACKNOWLEDGE, site_id=notice.site_id)
            if notice.acknowledged_at is not None:
                raise Refused(
                    f"notice {notice.id} was already acknowledged",
                    field="notice_id",
                    code="already_acknowledged",
                )
        except DomainError as exc:
            refuse(uow, actor, exc, "prescriber_notice", notice_id, site_id=notice.site_id)
        notice.acknowledged_at, notice.acknowledged_by = uow.clock.now(), actor.user_id
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            "prescriber_notice",
            notice.id,
            old={"acknowledged_at": None},
            new={"acknowledged_at": notice.acknowledged_at.isoformat()},
            site_id=notice.site_id,
        )
        uow.commit()
        return notice


def followup_dict(
    followups: FollowUps, uow: UnitOfWork, fu: ReleaseFollowUp, batch_number: str
) -> dict[str, Any]:
    """A follow-up with its entries: the one shape, `schemas.FollowUpOut`."""
    return {
        "id": fu.id,
        "batch_id": fu.batch_id,
        "batch_number": batch_number,
        "site_id": fu.site_id,
        "test": fu.test,
        "title": fu.title,
        "status": fu.status,
        "opened_at": fu.opened_at.isoformat(),
        "deviation_id": fu.deviation_id,
        "results": [
            {
                "id": r.id,
                "outcome": r.outcome,
                "detail": r.detail,
                "entered_by": r.entered_by,
                "entered_by_name": r.entered_by_name,
                "entered_at": r.entered_at.isoformat(),
                "signature_id": r.signature_id,
                "signature_valid": followups.result_valid(uow, r),
                "corrects_id": r.corrects_id,
                "reason": r.reason,
                "in_force": r.id == fu.result_id,
            }
            for r in followups.results(uow, fu.id)
        ],
    }


def notice_dict(notice: PrescriberNotice) -> dict[str, Any]:
    """A notice to a prescriber: the one shape, `schemas.NoticeOut`."""
    return {
        "id": notice.id,
        "kind": notice.kind,
        "site_id": notice.site_id,
        "order_id": notice.order_id,
        "patient_ref": notice.patient_ref,
        "prescriber_reference": notice.prescriber_reference,
        "prescriber_display": notice.prescriber_display,
        "batch_id": notice.batch_id,
        "batch_number": notice.batch_number,
        "followup_id": notice.followup_id,
        "deviation_id": notice.deviation_id,
        "message": notice.message,
        "created_at": notice.created_at.isoformat(),
        "acknowledged_at": notice.acknowledged_at.isoformat() if notice.acknowledged_at else None,
        "acknowledged_by": notice.acknowledged_by,
    }
