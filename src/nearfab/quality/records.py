"""Batch-record controls a QP relies on before certifying: manual steps signed in master-file
order (or past a deviation naming the skipped step), critical entries verified by a second
person, and a signed "audit trail reviewed" bound to the batch's audit rows at that moment.

`QualityService.records` is the one instance; `QualityService.decide` asks it why a release is
blocked (quality-and-release.md, "Batch-record controls")."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from nearfab.common.errors import DomainError, Refused, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    Role,
    SignatureService,
    audit,
    authorize,
    record_hash,
    refuse,
)
from nearfab.identity.reads import audit_entries_on
from nearfab.masterfiles import MasterFileService
from nearfab.production import ProductionService, StepState, check_entry
from nearfab.quality.enums import DeviationStatus, ReviewStatus
from nearfab.quality.kit import signatory_title
from nearfab.quality.models import AuditTrailReview, Deviation, LabResult, ReleaseReview
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.identity import AuditEntry, Signature
    from nearfab.production import BatchRecord
    from nearfab.quality.signedrows import SignedStep

PERFORMED = "performed by"
VERIFIED = "verified by"
REVIEWED = "audit trail reviewed"
# audit actions that record an attempt, not a change to the record: they stay in the trail
# the next review covers, but do not make a review stale
ATTEMPTS = frozenset({"refuse", "sign_failed", "login_failed"})


@contextmanager
def refused_on_batch(
    uow: UnitOfWork, actor: Actor, batch_key: str, site_id: str | None
) -> Iterator[None]:
    """Around a signed change to a batch: a refusal is rolled back, audited against the batch
    and raised. So is a conflict (two people signing the same step at once, a QP decision that
    lost a race to another QP), met at the flush or during an autoflush. `batch_key` and
    `site_id` are read before: after a failed flush the session cannot load them again until
    rolled back."""
    try:
        yield
    except DomainError as exc:
        refuse(uow, actor, exc, "batch", batch_key, site_id=site_id)
    except Exception as exc:
        conflict = uow.as_conflict(exc)
        if conflict is None:
            raise
        refuse(uow, actor, conflict, "batch", batch_key, site_id=site_id)


def check_pending_review(
    review: ReleaseReview | None, batch: BatchRecord, why: str = ""
) -> ReleaseReview:
    """The batch's release review, which must be waiting for a QP decision; Refused
    (`not_pending`, field `batch_id`) otherwise, `why` added to the message."""
    if review is None or review.status != ReviewStatus.PENDING.value:
        raise Refused(
            f"batch {batch.batch_number} is not waiting for a QP decision{why}",
            field="batch_id",
            code="not_pending",
        )
    return review


def pending_review(uow: UnitOfWork, batch: BatchRecord, why: str = "") -> ReleaseReview:
    """The batch's release review, read and checked by `check_pending_review`."""
    review = uow.session.scalar(select(ReleaseReview).where(ReleaseReview.batch_id == batch.id))
    return check_pending_review(review, batch, why)


def sign_for_batch(
    signatures: SignatureService,
    master_files: MasterFileService,
    uow: UnitOfWork,
    actor: Actor,
    batch: BatchRecord,
    *,
    password: str,
    meaning: str,
    record_type: str,
    record_id: str,
    content: dict[str, Any],
    username: str | None,
    totp: str | None,
) -> Signature:
    """E-sign a record of `batch` under its signing policy: the batch's site and its master
    file can each ask for TOTP as a third component."""
    return signatures.sign(
        uow,
        actor,
        password=password,
        meaning=meaning,
        record_type=record_type,
        record_id=record_id,
        content=content,
        username=username,
        totp=totp,
        require_totp=master_files.get(uow, batch.master_file_id).totp_for_signing,
        site_id=batch.site_id,
    )


def add_deviation(
    uow: UnitOfWork,
    actor: Actor,
    batch: BatchRecord,
    *,
    kind: str,
    description: str,
    step: str | None = None,
    audited: dict[str, Any] | None = None,
) -> Deviation:
    """Add an open deviation to `batch` and audit it; `audited` is what else its audit row
    records."""
    dev = Deviation(
        id=new_id("dev"),
        batch_id=batch.id,
        kind=kind,
        description=description,
        status=DeviationStatus.OPEN.value,
        opened_at=uow.clock.now(),
        opened_by=actor.user_id,
        closed_at=None,
        closed_by=None,
        closure_note=None,
        step_code=step,
    )
    uow.session.add(dev)
    uow.flush()
    audit(
        uow,
        actor,
        AuditAction.CREATE,
        "deviation",
        dev.id,
        new={"batch_id": batch.id, "kind": kind, "description": description, **(audited or {})},
        site_id=batch.site_id,
    )
    return dev


@dataclass(frozen=True)
class ReviewState:
    """The latest audit-trail review of a batch and whether it still covers the trail."""

    review: AuditTrailReview | None
    rows_since: int  # audit rows about the batch added after it (refusals not counted)

    @property
    def current(self) -> bool:
        return self.review is not None and self.rows_since == 0


class RecordControls:
    def __init__(
        self,
        production: ProductionService,
        master_files: MasterFileService,
        signatures: SignatureService,
    ) -> None:
        self._production = production
        self._master_files = master_files
        self._signatures = signatures

    # --- steps -------------------------------------------------------------------------------
    def steps(self, uow: UnitOfWork, actor: Actor, batch_id: str) -> list[StepState]:
        batch = self._production.get(uow, batch_id)
        authorize(actor, Permission.BATCH_READ, site_id=batch.site_id)
        return self._production.step_states(uow, batch)

    def sign_step(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch_id: str,
        code: str,
        *,
        entry: dict[str, Any] | None = None,
        password: str,
        meaning: str = PERFORMED,
        username: str | None = None,
        totp: str | None = None,
    ) -> Any:
        """A person performs manual step `code` and e-signs it ("performed by") with the values
        of its entry fields. Refused (and audited) out of master-file order, unless an open
        deviation names the skipped step, and while an earlier critical entry is unverified."""
        batch = self._production.get(uow, batch_id)
        site_id = batch.site_id
        with refused_on_batch(uow, actor, batch.id, site_id):
            authorize(actor, Permission.BATCH_STEP_SIGN, site_id=site_id)
            state, deviation_id = self._production.check_step_signable(
                uow, batch, code, self.excused_steps(uow, batch.id)
            )
            values = check_entry(state.entry_fields, entry or {})
            signoff = self._production.new_signoff(
                uow, actor, batch, state, values, meaning or "", deviation_id
            )
            sig = sign_for_batch(
                self._signatures,
                self._master_files,
                uow,
                actor,
                batch,
                password=password,
                meaning=meaning,
                record_type="batch_step",
                record_id=signoff.id,
                content=signoff.content(),
                username=username,
                totp=totp,
            )
            self._production.record_signoff(uow, actor, batch, state, signoff, sig)
            uow.flush()
        uow.commit()
        return signoff

    def verify_step(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch_id: str,
        code: str,
        *,
        password: str,
        meaning: str = VERIFIED,
        username: str | None = None,
        totp: str | None = None,
    ) -> Any:
        """A second person verifies the critical entry of step `code` and e-signs it
        ("verified by"); the performer cannot (same_person)."""
        batch = self._production.get(uow, batch_id)
        site_id = batch.site_id
        with refused_on_batch(uow, actor, batch.id, site_id):
            authorize(actor, Permission.BATCH_ENTRY_VERIFY, site_id=site_id)
            signoff = self._production.check_step_verifiable(uow, actor, batch, code)
            sig = sign_for_batch(
                self._signatures,
                self._master_files,
                uow,
                actor,
                batch,
                password=password,
                meaning=meaning,
                record_type="batch_step",
                record_id=signoff.id,
                content=self.verified_content(signoff, actor.user_id),
                username=username,
                totp=totp,
            )
            self._production.record_verification(uow, actor, batch, signoff, sig)
            uow.flush()
        uow.commit()
        return signoff

    @staticmethod
    def verified_content(signoff: Any, verifier_id: str | None) -> dict[str, Any]:
        """What the verifier signs: the performed entry, its performer, and the verifier."""
        return {**signoff.content(), "verified_by": verifier_id}

    def signature_checks(self, uow: UnitOfWork, batch_id: str) -> dict[str, bool]:
        """For each step signature of the batch: does the step still hash to what was signed."""
        out: dict[str, bool] = {}
        for signoff in self._production.signoffs(uow, batch_id):
            for sig in self._signatures.signatures_for(uow, "batch_step", signoff.id):
                content = (
                    self.verified_content(signoff, signoff.verified_by)
                    if sig.id == signoff.verify_signature_id
                    else signoff.content()
                )
                out[sig.id] = self._signatures.is_valid(sig, content)
        return out

    # --- deviations ----------------------------------------------------------------------------
    def open_deviation(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch_id: str,
        *,
        description: str,
        step: str | None = None,
    ) -> Deviation:
        """Record a deviation on a batch; naming a master-file step (`step`) lets later steps
        be signed before it. The QP closes it with the batch's disposition."""
        batch = self._production.get(uow, batch_id)
        authorize(actor, Permission.DEVIATION_OPEN, site_id=batch.site_id)
        text = (description or "").strip()
        if not text:
            raise ValidationFailed("a deviation needs a description", field="description")
        if len(text) > 2000:
            raise ValidationFailed("description has more than 2000 characters", field="description")
        step = (step or "").strip() or None
        if step is not None and step not in {
            s.code for s in self._production.step_states(uow, batch)
        }:
            raise ValidationFailed(
                f"master file {batch.master_file_code} has no step {step!r}", field="step"
            )
        if batch.status not in ("in_progress", "completed"):
            raise Refused(
                f"batch {batch.batch_number} is {batch.status}; deviations are opened before "
                "its disposition",
                field="batch_id",
                code="batch_closed",
            )
        dev = add_deviation(
            uow,
            actor,
            batch,
            kind="step_sequence" if step else "reported",
            description=text,
            step=step,
            audited={"step": step},
        )
        uow.commit()
        return dev

    def excused_steps(self, uow: UnitOfWork, batch_id: str) -> dict[str, str]:
        """Steps named by an open deviation of the batch: step code -> deviation id."""
        return self.excused_steps_of(uow, [batch_id])[batch_id]

    def excused_steps_of(
        self, uow: UnitOfWork, batch_ids: Sequence[str]
    ) -> dict[str, dict[str, str]]:
        """`excused_steps` of each batch (by id), in one statement."""
        out: dict[str, dict[str, str]] = {batch_id: {} for batch_id in batch_ids}
        if not out:
            return out
        rows = uow.session.scalars(
            select(Deviation)
            .where(
                Deviation.batch_id.in_(list(out)),
                Deviation.status == DeviationStatus.OPEN.value,
                Deviation.step_code.is_not(None),
            )
            .order_by(Deviation.opened_at, Deviation.id)
        )
        for dev in rows:
            assert dev.step_code is not None
            out[dev.batch_id].setdefault(dev.step_code, dev.id)
        return out

    # --- audit-trail review --------------------------------------------------------------------
    def trail(self, uow: UnitOfWork, batch: BatchRecord) -> list[AuditEntry]:
        """Every audit row about the batch: the batch, its job and order, its release review,
        its manual steps, its deviations and its laboratory results; in order."""
        return self.trails_of(uow, [batch])[batch.id]

    def trails_of(
        self, uow: UnitOfWork, batches: Sequence[BatchRecord]
    ) -> dict[str, list[AuditEntry]]:
        """`trail` of each batch (by id), in five statements whatever the number of batches:
        the release reviews, sign-offs, deviations and results naming them, then the audit
        rows about all of these, each given to every batch it is about."""
        ids = [b.id for b in batches]
        out: dict[str, list[AuditEntry]] = {batch_id: [] for batch_id in ids}
        if not out:
            return out
        about: dict[tuple[str, str], list[str]] = {}  # (entity type, id) -> batch ids

        def name(entity_type: str, entity_id: str, batch_id: str) -> None:
            about.setdefault((entity_type, entity_id), []).append(batch_id)

        for b in batches:
            name("batch", b.id, b.id)
            name("job", b.job_id, b.id)
            name("order", b.order_id, b.id)
        reviews = uow.session.execute(
            select(ReleaseReview.id, ReleaseReview.batch_id).where(ReleaseReview.batch_id.in_(ids))
        )
        for review_id, batch_id in reviews:
            name("release_review", review_id, batch_id)
        for batch_id, signoffs in self._production.signoffs_of(uow, ids).items():
            for signoff in signoffs:
                name("batch_step", signoff.id, batch_id)
        for model, entity_type in ((Deviation, "deviation"), (LabResult, "lab_result")):
            rows = uow.session.execute(
                select(model.id, model.batch_id).where(model.batch_id.in_(ids))
            )
            for entity_id, batch_id in rows:
                name(entity_type, entity_id, batch_id)
        targets: dict[str, list[str]] = {}
        for entity_type, entity_id in about:
            targets.setdefault(entity_type, []).append(entity_id)
        for row in audit_entries_on(uow.session, targets):  # by id: each trail in order
            for batch_id in dict.fromkeys(about.get((row.entity_type, row.entity_id), ())):
                out[batch_id].append(row)
        return out

    @staticmethod
    def trail_hash(batch_id: str, rows: list[AuditEntry]) -> str:
        return record_hash(
            {
                "batch_id": batch_id,
                "rows": [
                    {
                        "id": r.id,
                        "at": r.at,
                        "actor_id": r.actor_id,
                        "action": r.action,
                        "entity_type": r.entity_type,
                        "entity_id": r.entity_id,
                        "old": r.old,
                        "new": r.new,
                        "reason": r.reason,
                    }
                    for r in rows
                ],
            }
        )

    def review_audit_trail(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch_id: str,
        *,
        password: str,
        meaning: str = REVIEWED,
        username: str | None = None,
        totp: str | None = None,
    ) -> AuditTrailReview:
        """A QP signs that they reviewed the batch's audit trail as it is now: the signature
        is bound to the hash of its rows. Needed before release (audit_trail_not_reviewed);
        a later row about the batch makes it stale (audit_trail_changed)."""
        batch = self._production.get(uow, batch_id)
        key, site_id = batch.id, batch.site_id
        try:
            authorize(actor, Permission.AUDIT_TRAIL_REVIEW, site_id=site_id)
            pending_review(uow, batch, "; its audit trail is reviewed before certification")
            rows = self.trail(uow, batch)
            review = AuditTrailReview(
                id=new_id("atr"),
                batch_id=batch.id,
                site_id=batch.site_id,
                reviewed_by=actor.user_id,
                reviewed_by_name=actor.full_name,
                reviewed_at=uow.clock.now(),
                last_audit_id=rows[-1].id if rows else 0,
                row_count=len(rows),
                trail_hash=self.trail_hash(batch.id, rows),
                signature_id="",
            )
            sig = sign_for_batch(
                self._signatures,
                self._master_files,
                uow,
                actor,
                batch,
                password=password,
                meaning=meaning,
                record_type="audit_trail_review",
                record_id=review.id,
                content=self.review_content(review),
                username=username,
                totp=totp,
            )
            review.signature_id = sig.id
            review.reviewed_by_name = sig.signer_name
            uow.session.add(review)
            uow.flush()
            audit(
                uow,
                actor,
                AuditAction.CREATE,
                "audit_trail_review",
                review.id,
                new={
                    "batch_id": batch.id,
                    "rows": review.row_count,
                    "last_audit_id": review.last_audit_id,
                    "trail_hash": review.trail_hash,
                    "signature_id": sig.id,
                },
                site_id=site_id,
            )
            self._production.add_step(
                uow,
                actor,
                batch,
                "audit_trail_reviewed",
                {"review_id": review.id, "signature_id": sig.id, "rows": review.row_count},
            )
        except DomainError as exc:
            refuse(uow, actor, exc, "batch", key, site_id=site_id)
        uow.commit()
        return review

    @staticmethod
    def review_content(review: AuditTrailReview) -> dict[str, Any]:
        return {
            "batch_id": review.batch_id,
            "last_audit_id": review.last_audit_id,
            "rows": review.row_count,
            "trail_hash": review.trail_hash,
        }

    def review_state(self, uow: UnitOfWork, batch: BatchRecord) -> ReviewState:
        """The latest review and how many rows about the batch came after it. A refused or
        failed attempt (ATTEMPTS) changes nothing in the record, so it does not make a review
        stale (it is in the trail the next review covers)."""
        return self.review_states_of(uow, [batch])[batch.id]

    def review_states_of(
        self, uow: UnitOfWork, batches: Sequence[BatchRecord]
    ) -> dict[str, ReviewState]:
        """`review_state` of each batch (by id): the reviews in one statement, the trails of
        the reviewed batches with `trails_of`."""
        out = {b.id: ReviewState(None, 0) for b in batches}
        if not out:
            return out
        latest: dict[str, AuditTrailReview] = {}
        for review in uow.session.scalars(
            select(AuditTrailReview)
            .where(AuditTrailReview.batch_id.in_(list(out)))
            .order_by(AuditTrailReview.reviewed_at.desc(), AuditTrailReview.last_audit_id.desc())
        ):
            latest.setdefault(review.batch_id, review)
        reviewed = [b for b in batches if b.id in latest]
        for batch_id, trail in self.trails_of(uow, reviewed).items():
            review = latest[batch_id]
            since = [r for r in trail if r.id > review.last_audit_id and r.action not in ATTEMPTS]
            out[batch_id] = ReviewState(review, len(since))
        return out

    def reviews(self, uow: UnitOfWork, batch_id: str) -> list[AuditTrailReview]:
        return list(
            uow.session.scalars(
                select(AuditTrailReview)
                .where(AuditTrailReview.batch_id == batch_id)
                .order_by(AuditTrailReview.reviewed_at, AuditTrailReview.id)
            )
        )

    # --- what blocks certification -------------------------------------------------------------
    def release_blockers(
        self,
        uow: UnitOfWork,
        actor: Actor | None,
        batch: BatchRecord,
        signatory: str = Role.QP.value,
    ) -> list[DomainError]:
        """Every reason a release of `batch` by `actor` would be refused by these controls, in
        the order `decide` checks them (empty: none). `signatory`: the role the product's
        family names to sign (quality.kit.release_signatory)."""
        return self.release_blockers_of(uow, [(batch, actor, signatory)])[batch.id]

    def release_blockers_of(
        self,
        uow: UnitOfWork,
        asked: Sequence[tuple[BatchRecord, Actor | None, str]],
    ) -> dict[str, list[DomainError]]:
        """`release_blockers` of each (batch, actor, signatory) asked, by batch id, with a
        constant number of statements whatever the number of batches (a release queue, a QP's
        worklist): the assignments, sign-offs, machine steps, deviations, reviews and audit
        rows of all of them are read together."""
        batches = [batch for batch, _, _ in asked]
        ids = [batch.id for batch in batches]
        assigned = self._master_files.assigned_signers(
            uow,
            [
                (batch.master_file_code, actor.user_id, signatory)
                for batch, actor, signatory in asked
                if actor is not None
            ],
        )
        excused = self.excused_steps_of(uow, ids)
        gaps = self._production.record_gaps_of(uow, batches, excused)
        states = self.review_states_of(uow, batches)
        out: dict[str, list[DomainError]] = {}
        for batch, actor, signatory in asked:
            found: list[DomainError] = []
            key = (batch.master_file_code, actor.user_id, signatory) if actor else None
            if actor is not None and key not in assigned:
                title = signatory_title(signatory)
                found.append(
                    Refused(
                        f"{actor.full_name} is not an active {title} assigned to master file "
                        f"{batch.master_file_code}; only an assigned {title} certifies its batches",
                        field="signer",
                        code="not_qp_for_master_file",
                    )
                )
            if gaps[batch.id]:
                found.append(
                    Refused(
                        f"the batch record of {batch.batch_number} is not complete: "
                        f"{'; '.join(gaps[batch.id])}",
                        field="record_steps",
                        code="not_ready",
                    )
                )
            state = states[batch.id]
            if state.review is None:
                found.append(
                    Refused(
                        f"nobody has signed that the audit trail of batch {batch.batch_number} "
                        "was reviewed; a QP reviews it before certifying",
                        field="audit_trail",
                        code="audit_trail_not_reviewed",
                    )
                )
            elif not state.current:
                found.append(
                    Refused(
                        f"{state.rows_since} audit row(s) about batch {batch.batch_number} were "
                        f"added after the audit-trail review of "
                        f"{state.review.reviewed_at:%Y-%m-%d %H:%M} UTC; review it again",
                        field="audit_trail",
                        code="audit_trail_changed",
                    )
                )
            out[batch.id] = found
        return out

    @staticmethod
    def signed_steps(rows: Iterable[SignedStep]) -> list[dict[str, Any]]:
        """The manual steps as a QP's release signature binds them (`rows`: the batch's
        sign-offs by position, as quality/signedrows.py reads them)."""
        return [
            {
                "code": s.code,
                "entry": s.entry,
                "performed_by": s.performed_by,
                "signature_id": s.signature_id,
                "deviation_id": s.deviation_id,
                "verified_by": s.verified_by,
                "verify_signature_id": s.verify_signature_id,
            }
            for s in rows
        ]
