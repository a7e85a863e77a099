"""Quality use cases: real-time release testing proposals, deviations, QP decisions."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from nearfab.common.errors import DomainError, Forbidden, NotFound, Refused, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.common.node import RELEASE_DECISION, NodeRole
from nearfab.designs import FamilyRegistry
from nearfab.identity import Actor, AuditAction, Permission, SignatureService, audit, authorize
from nearfab.identity import record_hash as hash_of_record
from nearfab.identity.reads import signature
from nearfab.masterfiles import MasterFileService
from nearfab.materials import MaterialService
from nearfab.orders import OrderService, OrderStatus
from nearfab.production import BatchStatus, ProductionService
from nearfab.quality.enums import Decision, DeviationStatus, ReviewStatus
from nearfab.quality.events import BatchDispositioned
from nearfab.quality.exceptional import (
    REQUESTED,
    ExceptionalReleases,
    out_of_specification,
    require_out_of_specification,
)
from nearfab.quality.followup import FAILED_KIND, FollowUps, followup_dict
from nearfab.quality.kit import (
    ReleaseEvidence,
    exceptional_only,
    release_kit,
    release_signatory,
    signatory_title,
)
from nearfab.quality.labresults import LabResults
from nearfab.quality.logic import (
    STATUS_CHECKS,
    ReleaseProposal,
    decision_reason,
    parse_decision,
    propose_release,
)
from nearfab.quality.models import Deviation, ExceptionalRelease, ReleaseReview
from nearfab.quality.records import (
    RecordControls,
    add_deviation,
    check_pending_review,
    refused_on_batch,
    sign_for_batch,
)
from nearfab.quality.remote import RemoteRelease
from nearfab.quality.signedrows import SignedRequest, SignedRows, signed_rows
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.identity import Signature
    from nearfab.production import BatchRecord

ReleaseCheck = Callable[[UnitOfWork, str], str | None]
# the batch's alarms not yet dispositioned (monitoring, wired in bootstrap)
OpenAlarms = Callable[[UnitOfWork, str], list[str]]


class QualityService:
    def __init__(
        self,
        production: ProductionService,
        master_files: MasterFileService,
        materials: MaterialService,
        orders: OrderService,
        signatures: SignatureService,
        families: FamilyRegistry,
        release_check: ReleaseCheck | None = None,
        open_alarms: OpenAlarms | None = None,
        node: NodeRole | None = None,
    ) -> None:
        """`families` (wired in bootstrap): each product family's release tests, run through
        its `release` part (quality.kit.ReleaseKit). `release_check` says why a batch cannot be
        released yet, e.g. its packs are not serialised; None when it can. `open_alarms` lists
        the batch's process alarms that nobody has dispositioned: they block an automatic
        proposal and release."""
        self._families = families
        self.node = node or NodeRole()  # a site node refuses the QP decision (common/node.py)
        self._release_check = release_check
        self._open_alarms = open_alarms
        self._production = production
        self._master_files = master_files
        self._materials = materials
        self._orders = orders
        self._signatures = signatures
        # manual steps, second-person verification, audit-trail review (quality/records.py)
        self.records = RecordControls(production, master_files, signatures)
        # results pending at release and their follow-up (quality/followup.py)
        self.followups = FollowUps(production, master_files, orders, signatures)
        # a site node's batch released by the control site's QP (quality/remote.py)
        self.remote = RemoteRelease(self)
        # the physician's request for an exceptional release (quality/exceptional.py)
        self.exceptional = ExceptionalReleases(production, master_files, orders, signatures)
        # the laboratory's results of a batch, merged into the evidence (quality/labresults.py)
        self.lab_results = LabResults(
            production, master_files, signatures, families, self.reevaluate
        )
        # an abandoned or orphaned batch opens a deviation, in the abandonment's transaction
        production.on_abandon(self._abandoned)

    def _abandoned(
        self, uow: UnitOfWork, actor: Actor, batch: BatchRecord, kind: str, reason: str
    ) -> None:
        add_deviation(
            uow,
            actor,
            batch,
            kind=f"{kind}_batch",
            description=reason,
            audited={"machine_id": batch.machine_id},
        )

    def evaluate(self, uow: UnitOfWork, actor: Actor, batch_id: str) -> ReleaseReview:
        """Run the master file's release rule on a made batch and queue it for the QP."""
        batch = self._production.get(uow, batch_id)
        if batch.status != BatchStatus.COMPLETED.value:
            raise Refused(
                f"batch {batch.batch_number} is {batch.status}; only made batches are evaluated",
                field="batch_id",
                code="batch_not_completed",
            )
        existing = self.review_for(uow, batch.id)
        if existing is not None:
            return existing
        deviations = [
            self._open_deviation(uow, actor, batch, "cpp_excursion", text)
            for text in (batch.cpp_excursions or [])
        ]
        proposal = self._propose(uow, batch, [d.description for d in deviations])
        review = ReleaseReview(
            id=new_id("rev"),
            batch_id=batch.id,
            order_id=batch.order_id,
            site_id=batch.site_id,
            proposed_decision=proposal.decision,
            proposal=proposal.to_dict(),
            record_hash=hash_of_record(batch.content()),
            status=ReviewStatus.PENDING.value,
            created_at=uow.clock.now(),
            decision=None,
            decided_by=None,
            decided_at=None,
            reason=None,
            signature_id=None,
        )
        uow.session.add(review)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "release_review",
            review.id,
            new={
                "batch_id": batch.id,
                "proposed_decision": proposal.decision,
                "reasons": list(proposal.reasons),
            },
            site_id=batch.site_id,
        )
        self._production.add_step(
            uow,
            actor,
            batch,
            "rtrt_evaluated",
            {"proposal": proposal.decision, "reasons": list(proposal.reasons)},
        )
        uow.commit()
        return review

    def _propose(
        self, uow: UnitOfWork, batch: BatchRecord, open_deviations: list[str]
    ) -> ReleaseProposal:
        """The master file's release rule run on the batch's evidence: its record, with the
        laboratory's results in force (quality/labresults.py)."""
        mf = self._master_files.get(uow, batch.master_file_id)
        lot = self._materials.get(uow, batch.material_lot_id)
        evidence = ReleaseEvidence(
            measurements=self.lab_results.evidence(uow, batch),
            design=batch.design or {},
            material=lot.attributes or {},
            specs=mf.cqa_specs or {},
            assay_pct=lot.assay_pct,
            cpp_excursions=tuple(batch.cpp_excursions or ()),
            open_deviations=tuple(open_deviations),
            open_alarms=tuple(self._open_alarms(uow, batch.id) if self._open_alarms else ()),
        )
        kit = release_kit(self._families, mf.product_family)
        return propose_release(kit, evidence, mf.release_rule)

    def reevaluate(
        self, uow: UnitOfWork, actor: Actor, batch: BatchRecord, why: str
    ) -> ReleaseReview | None:
        """Evaluate the release rule again for a review still waiting for the QP (new evidence:
        laboratory results), audited, in the caller's transaction. The record hash the review
        was evaluated on stays: a changed batch record is still refused at the decision."""
        review = self.review_for(uow, batch.id)
        if review is None or review.status != ReviewStatus.PENDING.value:
            return None
        open_cpp = [
            d.description
            for d in self.deviations(uow, batch.id)
            if d.kind == "cpp_excursion" and d.status == DeviationStatus.OPEN.value
        ]
        proposal = self._propose(uow, batch, open_cpp)
        old = {"proposed_decision": review.proposed_decision, "reasons": review.proposal["reasons"]}
        review.proposed_decision, review.proposal = proposal.decision, proposal.to_dict()
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            "release_review",
            review.id,
            old=old,
            new={"proposed_decision": proposal.decision, "reasons": list(proposal.reasons)},
            reason=why,
            site_id=batch.site_id,
        )
        self._production.add_step(
            uow,
            actor,
            batch,
            "rtrt_reevaluated",
            {"proposal": proposal.decision, "reasons": list(proposal.reasons), "why": why},
        )
        return review

    def _open_deviation(
        self, uow: UnitOfWork, actor: Actor, batch: BatchRecord, kind: str, text: str
    ) -> Deviation:
        return add_deviation(uow, actor, batch, kind=kind, description=text)

    def decide(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch_id: str,
        *,
        decision: Decision | str,
        password: str,
        meaning: str,
        reason: str | None = None,
        record_hash: str | None = None,
        username: str | None = None,
        totp: str | None = None,
        exceptional: bool = False,
    ) -> ReleaseReview:
        """A QP releases or rejects a batch with an e-signature bound to the batch record.
        `record_hash` is the hash of the record the QP was shown: if the record has changed
        since, or since the RTRT evaluation, nothing is signed.

        Results pending at release (the family's `pending_at_release`): the release names them
        in the signature's meaning and opens their follow-up. `exceptional`: the release of an
        out-of-specification batch at the treating physician's signed request (both signatures,
        or no release)."""
        batch = self._production.get(uow, batch_id)
        review = self.review_for(uow, batch.id)
        # read now: after a failed flush the session cannot load them again until rolled back
        batch_key, site_id = batch.id, batch.site_id
        # a lost race met during an autoflush is a refusal too
        with refused_on_batch(uow, actor, batch_key, site_id):
            # every failed attempt at a QP decision is itself a record (Part 11 §11.300),
            # whoever made it and whatever was wrong
            self.node.require_control(RELEASE_DECISION)  # the control site's decision
            authorize(actor, Permission.RELEASE_DECIDE, site_id=site_id)
            signatory = self.signatory_for(uow, batch)
            self.check_signatory(actor, batch, signatory)
            decision = parse_decision(decision)
            sig, reason = self._check_and_sign(
                uow,
                actor,
                batch,
                review,
                decision,
                password,
                meaning,
                reason,
                record_hash,
                username=username,
                totp=totp,
                exceptional=exceptional,
                signatory=signatory,
            )
            assert review is not None
            self._record_decision(uow, actor, batch, review, decision, reason, sig, signatory)
            request = self.exceptional.for_batch(uow, batch.id)
            if exceptional and request is not None:
                self.exceptional.released(uow, actor, request, sig.id)
            elif request is not None and request.status == REQUESTED:
                self.exceptional.closed(
                    uow,
                    actor,
                    request,
                    f"{signatory_title(signatory)} {decision.value} without exceptional release",
                )
            if decision is Decision.RELEASE:
                self.followups.open_for_release(uow, actor, batch, review, self.check_titles())
            uow.flush()  # a decision that lost a race to another QP fails here, audited
        uow.emit(BatchDispositioned(batch.id, decision.value))
        uow.commit()
        return review

    def signatory_for(self, uow: UnitOfWork, batch: BatchRecord) -> str:
        """The role that signs `batch`'s release or rejection: its product family's
        `release_signatory` (quality.kit; "qp" by default, "responsible_person" for a medical
        device)."""
        family = self._master_files.get(uow, batch.master_file_id).product_family
        return release_signatory(release_kit(self._families, family))

    @staticmethod
    def may_sign(actor: Actor, signatory: str) -> bool:
        """Whether `actor` holds the role that signs (a system component never does: a release
        is a person's signature)."""
        return signatory in actor.roles

    def check_signatory(self, actor: Actor, batch: BatchRecord, signatory: str) -> None:
        """Forbidden (`wrong_signatory`, naming the role needed) unless the actor holds the
        family's signatory role: a QP does not release a medical device's batch, nor the
        device manufacturer's responsible person a medicine's. `release.decide` is held by both
        roles; the family decides which one signs."""
        if not self.may_sign(actor, signatory):
            raise Forbidden(
                f"batch {batch.batch_number} is released by the {signatory_title(signatory)} "
                f"(role {signatory}); {actor.username} does not hold it",
                field="signer",
                code="wrong_signatory",
            )

    def _record_decision(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        review: ReleaseReview,
        decision: Decision,
        reason: str | None,
        sig: Signature,
        signatory: str,
    ) -> None:
        target = BatchStatus.RELEASED if decision is Decision.RELEASE else BatchStatus.REJECTED
        # the records name the signatory as the product's family does (quality.kit)
        who = signatory_title(signatory)
        self._production.transition(
            uow, actor, batch, target, reason=reason or f"{who} {decision.value}"
        )
        order = self._orders.get(uow, batch.order_id)
        self._orders.transition(
            uow,
            actor,
            order,
            OrderStatus.RELEASED if decision is Decision.RELEASE else OrderStatus.REJECTED,
            reason=reason or f"{who} {decision.value}",
            extra={"signature_id": sig.id},
        )
        old = {"status": review.status}
        review.status = (
            ReviewStatus.RELEASED if decision is Decision.RELEASE else ReviewStatus.REJECTED
        ).value
        review.decision, review.reason, review.signature_id = decision.value, reason, sig.id
        review.decided_by, review.decided_at = actor.user_id, uow.clock.now()
        audit(
            uow,
            actor,
            AuditAction.TRANSITION,
            "release_review",
            review.id,
            old=old,
            new={"status": review.status, "signature_id": sig.id},
            reason=reason or f"{who} {decision.value}",
            site_id=review.site_id,
        )
        for dev in self.deviations(uow, batch.id):
            if dev.status == DeviationStatus.OPEN.value and dev.kind != FAILED_KIND:
                dev.status = DeviationStatus.CLOSED.value
                dev.closed_at, dev.closed_by = uow.clock.now(), actor.user_id
                dev.closure_note = f"dispositioned with batch ({decision.value}): {reason or ''}"
                audit(
                    uow,
                    actor,
                    AuditAction.TRANSITION,
                    "deviation",
                    dev.id,
                    old={"status": "open"},
                    new={"status": "closed"},
                    reason=dev.closure_note,
                    site_id=batch.site_id,
                )
        self._production.add_step(
            uow,
            actor,
            batch,
            f"qp_{decision.value}",
            {"signature_id": sig.id, "meaning": sig.meaning, "reason": reason},
        )

    def _check_and_sign(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        review: ReleaseReview | None,
        decision: Decision,
        password: str,
        meaning: str,
        reason: str | None,
        shown_hash: str | None,
        *,
        username: str | None = None,
        totp: str | None = None,
        exceptional: bool = False,
        signatory: str = "qp",
    ) -> tuple[Signature, str | None]:
        review = check_pending_review(review, batch)
        current = hash_of_record(batch.content())
        if review.record_hash and current != review.record_hash:
            raise Refused(
                f"the record of batch {batch.batch_number} changed after the RTRT evaluation; "
                "nothing was signed",
                field="batch_id",
                code="record_changed",
            )
        if shown_hash and shown_hash != self.shown_hash(uow, batch, review):
            raise Refused(
                f"the record of batch {batch.batch_number} changed since it was shown to you; "
                "nothing was signed, look again",
                field="record_hash",
                code="record_changed",
            )
        if decision is Decision.RELEASE:
            refusals = self.release_refusals(uow, actor, batch, signatory)
            if refusals:
                raise refusals[0]
        request = self._exceptional_check(uow, batch, review, decision, exceptional)
        reason = decision_reason(decision, review.proposed_decision, reason, request is not None)
        content = self._signed_content(uow, batch, review, decision.value, reason, request)
        sig = sign_for_batch(
            self._signatures,
            self._master_files,
            uow,
            actor,
            batch,
            password=password,
            meaning=self.manifest_meaning(meaning, review.proposal, decision, request, signatory),
            record_type="batch",
            record_id=batch.id,
            content=content,
            username=username,
            totp=totp,
        )
        return sig, reason

    def release_refusals(
        self, uow: UnitOfWork, actor: Actor | None, batch: BatchRecord, signatory: str = "qp"
    ) -> list[DomainError]:
        """Every reason a release of `batch` would be refused now, in the order `decide`
        checks them: its material lot, alarms without a disposition, the release check (packs
        serialised), and the record controls (a complete record, its audit trail reviewed;
        with `actor`, that they are a signatory assigned to the master file). `actor` None
        leaves the signer out: a site node's release dossier (quality/remote.py) names what is
        the site's to settle; the control site checks its QP."""
        found: list[DomainError] = []
        lot = self._materials.get(uow, batch.material_lot_id)
        if lot.status in ("recalled", "rejected", "on_hold"):
            found.append(
                Refused(
                    f"material lot {lot.lot_number} is {lot.status}; its batches cannot be "
                    "released",
                    field="material_lot",
                    code="lot_not_releasable",
                )
            )
        alarms = self._open_alarms(uow, batch.id) if self._open_alarms is not None else []
        if alarms:
            found.append(
                Refused(
                    f"batch {batch.batch_number} has {len(alarms)} alarm(s) without a documented "
                    f"disposition: {'; '.join(alarms)}",
                    field="alarms",
                    code="open_alarms",
                )
            )
        why_not = self._release_check(uow, batch.id) if self._release_check is not None else None
        if why_not:
            found.append(Refused(why_not, field="batch_id", code="not_ready"))
        # only an assigned QP certifies; a complete record; its audit trail reviewed
        found.extend(self.records.release_blockers(uow, actor, batch, signatory))
        return found

    def _exceptional_check(
        self,
        uow: UnitOfWork,
        batch: BatchRecord,
        review: ReleaseReview,
        decision: Decision,
        exceptional: bool,
    ) -> ExceptionalRelease | None:
        """The physician's request an exceptional release completes (None for any other
        decision); refuses an exceptional release without it, and a plain release of an
        out-of-specification batch whose family releases those only exceptionally."""
        failed = out_of_specification(review)
        if not exceptional:
            if decision is Decision.RELEASE and failed:
                kit = release_kit(
                    self._families, self._master_files.get(uow, batch.master_file_id).product_family
                )
                if exceptional_only(kit):
                    raise Refused(
                        f"batch {batch.batch_number} is out of specification "
                        f"({', '.join(failed)}); it is released only exceptionally, at the "
                        "treating physician's signed request",
                        field="exceptional",
                        code="out_of_specification",
                    )
            return None
        if decision is not Decision.RELEASE:
            raise ValidationFailed("only a release is exceptional", field="exceptional")
        require_out_of_specification(review, batch, "exceptional")
        request = self.exceptional.for_batch(uow, batch.id)
        if request is None or request.status != REQUESTED:
            raise Refused(
                f"no signed request from the treating physician for the exceptional release of "
                f"batch {batch.batch_number}; without both signatures there is no release",
                field="exceptional",
                code="physician_request_missing",
            )
        if not self.exceptional.request_valid(uow, request):
            raise Refused(
                "the treating physician's signature no longer matches the request; nothing was "
                "signed",
                field="exceptional",
                code="physician_signature_invalid",
            )
        return request

    @staticmethod
    def manifest_meaning(
        meaning: str,
        proposal: dict[str, Any],
        decision: Decision,
        request: ExceptionalRelease | None,
        signatory: str = "qp",
    ) -> str:
        """The meaning the signature's manifestation shows: the signatory's words, and what the
        certification is besides (released with results pending; exceptional). A signatory
        other than a QP is named in it (e.g. "responsible person release") unless the words
        already do."""
        text = (meaning or "").strip()
        title = signatory_title(signatory)
        if text and signatory != "qp" and title.lower() not in text.lower():
            text = f"{title} {decision.value}: {text}"
        if not text or decision is not Decision.RELEASE:
            if signatory == "qp" or not text:
                return meaning
            if len(text) > 200:
                raise ValidationFailed(
                    f"the meaning with its notes has {len(text)} characters; at most 200",
                    field="meaning",
                )
            return text
        pending = list(proposal.get("pending") or [])
        if pending:
            text += f"; released with results pending: {', '.join(pending)}"
        if request is not None:
            text += "; exceptional release at the treating physician's request"
        if len(text) > 200:
            raise ValidationFailed(
                f"the meaning with its notes has {len(text)} characters; at most 200",
                field="meaning",
            )
        return text

    def pending_results(self, review: ReleaseReview) -> list[str]:
        """The tests whose result was pending when the review was evaluated."""
        return [str(t) for t in review.proposal.get("pending") or []]

    def exceptional_for(self, uow: UnitOfWork, review: ReleaseReview) -> ExceptionalRelease | None:
        """The exceptional release the review's signature completed (None if it did not)."""
        row = self.exceptional.for_batch(uow, review.batch_id)
        if row is None or not review.signature_id or row.qp_signature_id != review.signature_id:
            return None
        return row

    def certificate(self, uow: UnitOfWork, review: ReleaseReview) -> dict[str, Any]:
        """What the certificate says besides the decision: the results pending at release and
        their follow-up, and the exceptional release (request and signatures) if any."""
        batch_number = self._production.get(uow, review.batch_id).batch_number
        request = self.exceptional.for_batch(uow, review.batch_id)
        return {
            "pending_results": self.pending_results(review),
            "followups": [
                followup_dict(self.followups, uow, fu, batch_number)
                for fu in self.followups.for_batch(uow, review.batch_id)
            ],
            "exceptional_release": self.exceptional.view(uow, request) if request else None,
        }

    def signature_valid(
        self,
        uow: UnitOfWork,
        review: ReleaseReview,
        *,
        stored_telemetry: str | None = None,
        batch: BatchRecord | None = None,
        sig: Signature | None = None,
    ) -> bool | None:
        """Whether the QP's signature still matches the batch record (None before a decision).

        `stored_telemetry`: the record's telemetry as the database stores it, read by the
        caller with the record and left undecoded (verification): while the record has not
        loaded its telemetry, the content is first hashed with that text's SHA-256 standing
        for the readings' hash (`BatchRecord.content`). A match means the stored text is byte
        for byte the canonical JSON of the readings the QP signed; anything else (a record
        stored before its telemetry was stored canonically, a changed record) is checked
        again the full way, so the answer is the full check's.

        `batch`, `sig`: the review's batch record and signature as the caller read them in
        this transaction, as plain values (verification reads them as columns with the pack,
        not as ORM entities; the record without its telemetry): used for the comparison with
        the stored telemetry's hash only; a mismatch is checked again the full way on the
        record the session loads from the database."""
        if not review.signature_id:
            return None
        given = batch if batch is not None and batch.id == review.batch_id else None
        batch = given if given is not None else self._production.get(uow, review.batch_id)
        # the review names its signature (verification has read it with the pack)
        if sig is None or sig.id != review.signature_id:
            sig = signature(uow.session, review.signature_id)
        if sig is None or sig.record_type != "batch" or sig.record_id != batch.id:
            return False
        rows = signed_rows(uow.session, batch.id)  # steps, deviations, request, results
        request = rows.exceptional
        if request is not None and request.qp_signature_id != review.signature_id:
            request = None  # not the release this signature completed (as exceptional_for)
        text = batch.stored_telemetry(stored_telemetry)
        if text is not None and batch.telemetry_unloaded():
            stored = batch.content(stored_telemetry=text)
            content = self._signed_content(
                uow,
                batch,
                review,
                review.decision,
                review.reason,
                request,
                rows=rows,
                batch_content=stored,
            )
            if self._signatures.is_valid(sig, content):
                return True
        if given is not None:  # the full check reads the record the database holds
            batch = self._production.get(uow, review.batch_id)
        content = self._signed_content(
            uow, batch, review, review.decision, review.reason, request, rows=rows
        )
        return self._signatures.is_valid(sig, content)

    def shown_hash(self, uow: UnitOfWork, batch: BatchRecord, review: ReleaseReview) -> str:
        """Hash of what a QP is shown before deciding (record, proposal, deviations): a decision
        sent back with it signs only that."""
        request = self.exceptional.for_batch(uow, batch.id)
        shown = request if request is not None and request.status == REQUESTED else None
        return hash_of_record(self._signed_content(uow, batch, review, None, None, shown))

    def _signed_content(
        self,
        uow: UnitOfWork,
        batch: BatchRecord,
        review: ReleaseReview,
        decision: str | None,
        reason: str | None,
        exceptional: ExceptionalRelease | SignedRequest | None = None,
        *,
        rows: SignedRows | None = None,
        batch_content: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What a QP decision is bound to: the batch record, the RTRT proposal, the deviations
        raised on it (not the investigations a result failing after release opens), the
        decision and its reason, and for an exceptional release the physician's request.
        `rows`: the batch's sign-offs, deviations and results when the caller read them;
        `batch_content`: the record's content when the caller built it (`signature_valid`)."""
        rows = rows if rows is not None else signed_rows(uow.session, batch.id)
        steps = self.records.signed_steps(rows.steps)
        lab = self.lab_results.signed_part(uow, batch.id, rows.results)
        return {
            "batch": batch.content() if batch_content is None else batch_content,
            # the manual steps and their signatures, for master files that list any
            **({"record_steps": steps} if steps else {}),
            # the laboratory's results in force and the analysts' signatures, where entered
            **({"lab_results": lab} if lab else {}),
            "proposal": review.proposal,
            "deviations": [
                {
                    "id": d.id,
                    "kind": d.kind,
                    "description": d.description,
                    **({"step": d.step_code} if d.step_code else {}),
                }
                for d in rows.deviations
                if d.kind != FAILED_KIND
            ],
            "decision": decision,
            "reason": reason,
            **(
                {"exceptional": self.exceptional.signed_part(exceptional)}
                if exceptional is not None
                else {}
            ),
        }

    def check_titles(self) -> dict[str, str]:
        """Check name -> title shown to people: every registered family's release tests, then
        quality's own checks."""
        titles: dict[str, str] = {}
        for family in self._families:
            titles.update(release_kit(self._families, family.name).tests)
        return {**titles, **STATUS_CHECKS}

    def review_for(self, uow: UnitOfWork, batch_id: str) -> ReleaseReview | None:
        return uow.session.scalar(select(ReleaseReview).where(ReleaseReview.batch_id == batch_id))

    def get_review(self, uow: UnitOfWork, batch_id: str) -> ReleaseReview:
        review = self.review_for(uow, batch_id)
        if review is None:
            raise NotFound(f"no release review for batch {batch_id!r}", field="batch_id")
        return review

    def pending(self, uow: UnitOfWork) -> list[ReleaseReview]:
        return list(
            uow.session.scalars(
                select(ReleaseReview)
                .where(ReleaseReview.status == ReviewStatus.PENDING.value)
                .order_by(ReleaseReview.created_at)
            )
        )

    def deviations(self, uow: UnitOfWork, batch_id: str) -> list[Deviation]:
        return list(
            uow.session.scalars(
                select(Deviation)
                .where(Deviation.batch_id == batch_id)
                .order_by(Deviation.opened_at, Deviation.id)
            )
        )
