"""A QP release across the network: a site node's batch, released at the control site.

A site node makes and records its batches but may not release them (common/node.py); the
control site's QP holds only what the site sends. So the decision travels in three steps
(docs/replication.md, "Release across the network"):

1. `dossier` (at the site node): what the QP would be shown at the site, frozen: the content
   a QP decision signs (quality's `_signed_content`: batch record, manual steps and their
   signatures, laboratory results, RTRT proposal, deviations) with its hash, and every reason
   the site knows that a release would be refused now (`release_refusals` without a signer).
2. `sign` (at the control site): the QP signs that content with the decision, by the same
   rules as `QualityService.decide` for everything the control can know (the signatory's role,
   their assignment to the master file, the reason rules, the site's refusals), with a Part 11
   signature bound to the batch record's id and the content's hash.
3. `apply` (at the site node, on the control's record): the signature is checked against the
   site's own batch record as it is now (a record changed since the dossier is not released),
   the site's refusals are asked again, and the decision is recorded exactly as a local one,
   with the QP's signature row (the same id and hash) in the site's signature store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nearfab.common.errors import Forbidden, NotFound, Refused
from nearfab.common.node import RELEASE_DECISION
from nearfab.identity import Actor, Permission, authorize
from nearfab.identity import record_hash as hash_of_record
from nearfab.quality.enums import Decision, ReviewStatus
from nearfab.quality.events import BatchDispositioned
from nearfab.quality.exceptional import REQUESTED, out_of_specification
from nearfab.quality.kit import exceptional_only, release_kit, release_signatory, signatory_title
from nearfab.quality.logic import decision_reason, parse_decision
from nearfab.quality.models import ExceptionalRelease, ReleaseReview
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.identity import Signature
    from nearfab.quality.services import QualityService


class RemoteRelease:
    """The three steps of a release across the network (module docstring); one per
    `QualityService` (`quality.remote`)."""

    def __init__(self, quality: QualityService) -> None:
        self._q = quality

    def require_control(self) -> None:
        """Refused (`control_site_only`) at a site node: a QP decision is the control's."""
        self._q.node.require_control(RELEASE_DECISION)

    # --- 1. at the site node -----------------------------------------------------------------
    def dossier(self, uow: UnitOfWork, batch_id: str) -> dict[str, Any]:
        """The release dossier of a batch waiting for the QP: what the control site's QP signs
        (`content`, its hash `shown_hash`) and why a release would be refused now
        (`blockers`, the site's to settle). NotFound when the batch waits for no QP."""
        q = self._q
        batch = q._production.get(uow, batch_id)
        review = q.review_for(uow, batch.id)
        if review is None or review.status != ReviewStatus.PENDING.value:
            raise NotFound(
                f"batch {batch.batch_number} does not wait for a QP decision", field="batch_id"
            )
        signatory = q.signatory_for(uow, batch)
        blockers = [err.message for err in q.release_refusals(uow, None, batch, signatory)]
        if review.record_hash and hash_of_record(batch.content()) != review.record_hash:
            blockers.insert(0, f"the record of batch {batch.batch_number} changed after the RTRT")
        # the treating physician's request, signed at the site and still valid, is shown to
        # the QP and part of the content, so an exceptional release signs it (`sign`)
        request = q.exceptional.for_batch(uow, batch.id)
        if request is not None and (
            request.status != REQUESTED or not q.exceptional.request_valid(uow, request)
        ):
            request = None
        content = q._signed_content(uow, batch, review, None, None, request)
        return {
            "batch_id": batch.id,
            "batch_number": batch.batch_number,
            "site_id": batch.site_id,
            "order_id": batch.order_id,
            "review_id": review.id,
            "master_file_id": batch.master_file_id,
            "master_file_code": batch.master_file_code,
            "signatory": signatory,
            "proposed_decision": review.proposed_decision,
            "reasons": list(review.proposal.get("reasons") or []),
            "pending_results": q.pending_results(review),
            "out_of_specification": out_of_specification(review),
            "blockers": blockers,
            "exceptional_request": q.exceptional.view(uow, request) if request else None,
            "shown_hash": hash_of_record(content),
            "content": content,
        }

    # --- 2. at the control site --------------------------------------------------------------
    def sign(
        self,
        uow: UnitOfWork,
        actor: Actor,
        dossier: dict[str, Any],
        *,
        decision: Decision | str,
        password: str,
        meaning: str,
        reason: str | None = None,
        username: str | None = None,
        totp: str | None = None,
        exceptional: bool = False,
    ) -> tuple[Signature, Decision, str | None]:
        """The control site's QP signs a site node's dossier: their role and assignment, the
        reason rules and the site's refusals checked as `decide` checks them; the signature is
        added to the transaction (the caller records the decision and commits). Returns the
        signature, the decision and the reason as signed. `exceptional`: the release of an
        out-of-specification batch at the treating physician's request, which the dossier
        carries as signed at the site (the QP's signature then binds it too)."""
        q = self._q
        self.require_control()  # the control site's decision
        site_id = str(dossier["site_id"])
        authorize(actor, Permission.RELEASE_DECIDE, site_id=site_id)
        mf = q._master_files.get(uow, str(dossier["master_file_id"]))
        number = dossier["batch_number"]
        self._check_consistent(dossier, f"{mf.code} v{mf.version}")
        kit = release_kit(q._families, mf.product_family)
        signatory = release_signatory(kit)
        if not q.may_sign(actor, signatory):
            raise Forbidden(
                f"batch {number} is released by the {signatory_title(signatory)} "
                f"(role {signatory}); {actor.username} does not hold it",
                field="signer",
                code="wrong_signatory",
            )
        decided = parse_decision(decision, exceptional)
        request = dossier["content"].get("exceptional") if exceptional else None
        if decided is Decision.RELEASE:
            title = signatory_title(signatory)
            if not q._master_files.assigned_signers(uow, [(mf.code, actor.user_id, signatory)]):
                raise Refused(
                    f"{actor.full_name} is not an active {title} assigned to master file "
                    f"{mf.code}; only an assigned {title} certifies its batches",
                    field="signer",
                    code="not_qp_for_master_file",
                )
            blockers = list(dossier.get("blockers") or [])
            if blockers:
                raise Refused(
                    f"the site node reports batch {number} not ready: {blockers[0]}",
                    field="batch_id",
                    code="not_ready",
                )
            failed = out_of_specification(_as_review(dossier["content"]))
            if exceptional and not failed:
                raise Refused(
                    f"batch {number} failed no release test; an exceptional release is for an "
                    "out-of-specification batch",
                    field="exceptional",
                    code="not_out_of_specification",
                )
            if exceptional and not request:
                raise Refused(
                    f"no signed request from the treating physician for the exceptional release "
                    f"of batch {number} in the site's dossier; without both signatures there is "
                    "no release",
                    field="exceptional",
                    code="physician_request_missing",
                )
            if failed and not exceptional and exceptional_only(kit):
                raise Refused(
                    f"batch {number} is out of specification ({', '.join(failed)}); it is "
                    "released only exceptionally, at the treating physician's signed request",
                    field="exceptional",
                    code="out_of_specification",
                )
        if hash_of_record(dossier["content"]) != dossier["shown_hash"]:
            raise Refused(
                f"the dossier of batch {number} does not hash to what the site sent; nothing "
                "was signed",
                field="shown_hash",
                code="record_changed",
            )
        reason = decision_reason(decided, str(dossier["proposed_decision"]), reason, exceptional)
        # what a local decision signs: the physician's request only in an exceptional release
        shown = {k: v for k, v in dossier["content"].items() if exceptional or k != "exceptional"}
        content = {**shown, "decision": decided.value, "reason": reason}
        sig = q._signatures.sign(
            uow,
            actor,
            password=password,
            meaning=q.manifest_meaning(
                meaning,
                dossier["content"]["proposal"],
                decided,
                ExceptionalRelease() if exceptional else None,  # the words it adds
                signatory,
            ),
            record_type="batch",
            record_id=str(dossier["batch_id"]),
            content=content,
            username=username,
            totp=totp,
            require_totp=mf.totp_for_signing,
            site_id=site_id,
        )
        return sig, decided, reason

    @staticmethod
    def _check_consistent(dossier: dict[str, Any], master_file: str) -> None:
        """Refused (`dossier_inconsistent`, naming the field) when what the control checks the
        QP against (the batch, its site, its master file, the proposal, the tests failed) is
        not what the content the QP signs says: the signed content decides, never a label
        beside it."""
        content = dossier["content"]
        record = content.get("batch") or {}
        review = _as_review(content)
        claimed = {
            "batch_id": (dossier["batch_id"], record.get("id")),
            "site_id": (dossier["site_id"], record.get("site_id")),
            "batch_number": (dossier["batch_number"], record.get("batch_number")),
            "master_file_id": (master_file, record.get("master_file")),
            "proposed_decision": (dossier["proposed_decision"], review.proposal.get("decision")),
            "out_of_specification": (
                list(dossier.get("out_of_specification") or []),
                out_of_specification(review),
            ),
        }
        for name, (said, signed) in claimed.items():
            if said != signed:
                raise Refused(
                    f"the dossier of batch {dossier['batch_number']} says {name} {said!r}, the "
                    f"record it carries {signed!r}; nothing was signed",
                    field=name,
                    code="dossier_inconsistent",
                )

    # --- 3. back at the site node ------------------------------------------------------------
    def apply(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        batch_id: str,
        review_id: str,
        decision: str,
        reason: str | None,
        signature: dict[str, Any],
        exceptional: bool = False,
    ) -> ReleaseReview:
        """Record the control site's QP decision on this site's batch, in the caller's
        transaction (the caller writes what it applied and commits). Refused, with nothing
        written, when the review is not the one decided or no longer waits, when the signature
        row is not the one the control made, when its signer is unknown here, when the batch
        record differs from what the QP signed (changed since the dossier), or, for a release,
        when the site would refuse it now (a recalled lot, an alarm, packs not serialised).
        `exceptional`: the physician's request held here must still be pending and valid,
        and be the one the QP signed; it is then completed as by a local decision."""
        q = self._q
        batch = q._production.get(uow, batch_id)
        review = q.review_for(uow, batch.id)
        if review is None or review.id != review_id:
            raise Refused(
                f"the QP decided review {review_id}, not batch {batch.batch_number}'s",
                field="review_id",
                code="not_this_review",
            )
        if review.status != ReviewStatus.PENDING.value:
            raise Refused(
                f"batch {batch.batch_number} is already {review.status} here",
                field="batch_id",
                code="already_decided",
            )
        decided = parse_decision(decision, exceptional)
        # as `decide`: an out-of-specification release only exceptionally, and an exceptional
        # one only with the physician's request pending here and still valid
        request = q._exceptional_check(uow, batch, review, decided, exceptional)
        sig = q._signatures.carried_from(uow, signature, record_type="batch", record_id=batch.id)
        content = q._signed_content(uow, batch, review, decided.value, reason, request)
        if not q._signatures.is_valid(sig, content):
            raise Refused(
                f"the record of batch {batch.batch_number} is not the one the QP signed (it "
                "changed after the dossier was sent); nothing was recorded",
                field="record_hash",
                code="record_changed",
            )
        signatory = q.signatory_for(uow, batch)
        if decided is Decision.RELEASE:
            # as `decide`: a record changed after the RTRT is not released (whatever the
            # dossier said: its blockers are not what the QP signs)
            if review.record_hash and hash_of_record(batch.content()) != review.record_hash:
                raise Refused(
                    f"the record of batch {batch.batch_number} changed after the RTRT "
                    "evaluation; nothing was recorded",
                    field="batch_id",
                    code="record_changed",
                )
            refusals = q.release_refusals(uow, None, batch, signatory)
            if refusals:
                raise refusals[0]
        uow.session.add(sig)
        uow.flush()
        q._record_decision(uow, actor, batch, review, decided, reason, sig, signatory)
        review.decided_by, review.decided_at = sig.signer_id, sig.signed_at
        if request is not None:  # an exceptional release: the QP's signature completes it
            q.exceptional.released(uow, actor, request, sig.id)
        else:
            pending = q.exceptional.for_batch(uow, batch.id)
            if pending is not None and pending.status == REQUESTED:  # as `decide` closes it
                title = signatory_title(signatory)
                q.exceptional.closed(
                    uow, actor, pending, f"{title} {decided.value} without exceptional release"
                )
        if decided is Decision.RELEASE:
            q.followups.open_for_release(uow, actor, batch, review, q.check_titles())
        uow.flush()
        uow.emit(BatchDispositioned(batch.id, decided.value))
        return review


def _as_review(content: dict[str, Any]) -> ReleaseReview:
    """A transient review holding the signed content's proposal (never added to a session), to
    read it with quality's own rules (`out_of_specification`)."""
    return ReleaseReview(proposal=dict(content.get("proposal") or {}))
