"""The master file's batch-record steps of one batch: their sequence, who performed (and for a
critical entry, verified) each, and what keeps the record from being complete. The sign-off use
cases (signatures, deviations) are quality's (quality.records); these are the rules and rows."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from nearfab.common.errors import Conflict, NotFound, Refused, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.identity import Actor, AuditAction, audit
from nearfab.masterfiles import MasterFileService
from nearfab.production.enums import BatchStatus
from nearfab.production.models import BatchRecord, StepSignoff
from nearfab.production.services import records
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.identity import Signature

# batches whose manual steps may still be signed: being made, or made and awaiting the QP
SIGNABLE = frozenset({BatchStatus.IN_PROGRESS.value, BatchStatus.COMPLETED.value})


@dataclass
class StepState:
    """One master-file step of one batch: the definition and what has happened to it."""

    position: int
    code: str
    title: str
    manual: bool
    critical: bool
    entry_fields: dict[str, str]
    recorded_at: datetime | None  # a machine step: when the platform recorded it
    signoff: StepSignoff | None  # a manual step: who performed (and verified) it

    @property
    def done(self) -> bool:
        return self.recorded_at is not None or self.signoff is not None

    @property
    def status(self) -> str:
        if not self.manual:
            return "recorded" if self.recorded_at else "pending"
        if self.signoff is None:
            return "pending"
        if self.critical and self.signoff.verified_by is None:
            return "awaiting_verification"
        return "verified" if self.critical else "performed"


def check_entry(fields: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of a step's entry fields: every field given, nothing else, numbers as numbers."""
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValidationFailed(
            f"step has no entry field {unknown[0]!r} (fields: {', '.join(fields) or 'none'})",
            field=f"entry.{unknown[0]}",
        )
    clean: dict[str, Any] = {}
    for name, kind in fields.items():
        value = values.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValidationFailed(f"entry {name} is required", field=f"entry.{name}")
        if kind == "text":
            text = str(value).strip()
            if len(text) > 200:
                raise ValidationFailed(
                    f"entry {name} has more than 200 characters", field=f"entry.{name}"
                )
            clean[name] = text
            continue
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise ValidationFailed(
                f"entry {name} must be a number in {kind}, not {value!r}", field=f"entry.{name}"
            ) from None
        if number != number or number in (float("inf"), float("-inf")) or number < 0:
            raise ValidationFailed(
                f"entry {name} must be a finite number >= 0", field=f"entry.{name}"
            )
        if kind == "count":
            if number != int(number):
                raise ValidationFailed(
                    f"entry {name} is a count: a whole number, not {value!r}",
                    field=f"entry.{name}",
                )
            clean[name] = int(number)
            continue
        clean[name] = number
    return clean


def waiting_for(missing: list[StepState]) -> str:
    """The steps before the machine start still to do, in words: 'line_clearance (Line
    clearance) not signed; material_loaded (Material loaded) not verified by a second person'."""
    return "; ".join(
        f"{s.code} ({s.title}) "
        + (
            "not verified by a second person"
            if s.status == "awaiting_verification"
            else "not signed"
        )
        for s in missing
    )


class BatchSteps:
    def __init__(self, master_files: MasterFileService) -> None:
        self._master_files = master_files

    def step_states(self, uow: UnitOfWork, batch: BatchRecord) -> list[StepState]:
        """The batch's master-file steps in order, each with what has happened to it."""
        return self.step_states_of(uow, [batch])[batch.id]

    def step_states_of(
        self, uow: UnitOfWork, batches: Sequence[BatchRecord]
    ) -> dict[str, list[StepState]]:
        """`step_states` of each batch (by id), their sign-offs and machine steps read in one
        statement each, whatever the number of batches (a release queue asks for all)."""
        signoffs = self.signoffs_of(uow, [b.id for b in batches])
        recorded: dict[str, dict[str, datetime]] = {b.id: {} for b in batches}
        for step in records.steps_of(uow, list(recorded)):
            recorded[step.batch_id].setdefault(step.name, step.at)
        out: dict[str, list[StepState]] = {}
        for batch in batches:
            mf = self._master_files.get(uow, batch.master_file_id)  # the version it started
            signed = {s.code: s for s in signoffs[batch.id]}
            states = []
            for i, spec in enumerate(mf.record_steps or [], start=1):
                manual = bool(spec.get("manual", True))
                states.append(
                    StepState(
                        position=i,
                        code=spec["code"],
                        title=spec["title"],
                        manual=manual,
                        critical=bool(spec.get("critical", False)),
                        entry_fields=dict(spec.get("entry") or {}),
                        recorded_at=None if manual else recorded[batch.id].get(spec["code"]),
                        signoff=signed.get(spec["code"]) if manual else None,
                    )
                )
            out[batch.id] = states
        return out

    def signoffs(self, uow: UnitOfWork, batch_id: str) -> list[StepSignoff]:
        return self.signoffs_of(uow, [batch_id])[batch_id]

    def signoffs_of(
        self, uow: UnitOfWork, batch_ids: Sequence[str]
    ) -> dict[str, list[StepSignoff]]:
        """The sign-offs of each batch (by id, each list by position), in one statement."""
        out: dict[str, list[StepSignoff]] = {batch_id: [] for batch_id in batch_ids}
        if not out:
            return out
        rows = uow.session.scalars(
            select(StepSignoff)
            .where(StepSignoff.batch_id.in_(list(out)))
            .order_by(StepSignoff.batch_id, StepSignoff.position)
        )
        for row in rows:
            out[row.batch_id].append(row)
        return out

    def check_step_signable(
        self,
        uow: UnitOfWork,
        batch: BatchRecord,
        code: str,
        excused: Mapping[str, str],
    ) -> tuple[StepState, str | None]:
        """Raise unless manual step `code` may be signed now: the batch is open, the step is
        the master file's and not signed yet, every earlier step is done (a critical entry
        also verified) or named by an open deviation (`excused`: step code -> deviation id).
        Returns the step and the deviation that allowed skipping, if one did."""
        if batch.status not in SIGNABLE:
            raise Refused(
                f"batch {batch.batch_number} is {batch.status}; its steps can no longer be signed",
                field="batch_id",
                code="batch_closed",
            )
        states = self.step_states(uow, batch)
        state = next((s for s in states if s.code == code), None)
        if state is None:
            known = ", ".join(s.code for s in states) or "none"
            raise NotFound(
                f"master file {batch.master_file_code} v{batch.master_file_version} has no step "
                f"{code!r} (steps: {known})",
                field="code",
            )
        if not state.manual:
            raise Refused(
                f"step {code} is a machine step; the platform records it",
                field="code",
                code="machine_step",
            )
        if state.signoff is not None:
            raise Conflict(
                f"step {code} was already performed by {state.signoff.performed_by_name}",
                field="code",
                code="already_performed",
            )
        deviation = None
        for earlier in states[: state.position - 1]:
            if earlier.status == "awaiting_verification":
                raise Refused(
                    f"step {earlier.code} ({earlier.title}) has a critical entry not yet "
                    f"verified by a second person; step {code} waits for it",
                    field="code",
                    code="unverified_entry",
                )
            if earlier.done:
                continue
            if earlier.code in excused:
                deviation = deviation or excused[earlier.code]
                continue
            raise Refused(
                f"step {code} cannot be signed before step {earlier.code} ({earlier.title}); "
                f"sign {earlier.code} first, or open a deviation naming it",
                field="code",
                code="out_of_sequence",
            )
        return state, deviation

    def record_signoff(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        state: StepState,
        signoff: StepSignoff,
        sig: Signature,
    ) -> StepSignoff:
        """Store a performed step with its signature and audit row (no commit)."""
        signoff.signature_id = sig.id
        uow.session.add(signoff)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "batch_step",
            signoff.id,
            new={
                "batch_id": batch.id,
                "code": state.code,
                "entry": signoff.entry,
                "signature_id": sig.id,
                "meaning": sig.meaning,
                "deviation_id": signoff.deviation_id,
            },
            site_id=batch.site_id,
        )
        records.add_step(
            uow,
            actor,
            batch,
            state.code,
            {"signoff_id": signoff.id, "signature_id": sig.id, "meaning": sig.meaning},
        )
        return signoff

    def check_step_verifiable(
        self, uow: UnitOfWork, actor: Actor, batch: BatchRecord, code: str
    ) -> StepSignoff:
        """Raise unless `actor` may verify the critical entry of step `code` now."""
        if batch.status not in SIGNABLE:
            raise Refused(
                f"batch {batch.batch_number} is {batch.status}; its steps can no longer be signed",
                field="batch_id",
                code="batch_closed",
            )
        state = next((s for s in self.step_states(uow, batch) if s.code == code), None)
        if state is None:
            raise NotFound(
                f"master file {batch.master_file_code} has no step {code!r}", field="code"
            )
        if not state.critical:
            raise Refused(
                f"step {code} has no critical entry to verify", field="code", code="not_critical"
            )
        signoff = state.signoff
        if signoff is None:
            raise Refused(
                f"step {code} has not been performed yet; there is nothing to verify",
                field="code",
                code="not_performed",
            )
        if signoff.verified_by is not None:
            raise Conflict(
                f"step {code} was already verified by {signoff.verified_by_name}",
                field="code",
                code="already_verified",
            )
        if signoff.performed_by == actor.user_id:
            raise Refused(
                f"step {code} was performed by {signoff.performed_by_name}; a second person "
                "must verify it",
                field="code",
                code="same_person",
            )
        return signoff

    def record_verification(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        signoff: StepSignoff,
        sig: Signature,
    ) -> StepSignoff:
        """Store a second person's verification with its signature and audit row (no commit)."""
        signoff.verified_by, signoff.verified_by_name = actor.user_id, sig.signer_name
        signoff.verified_at, signoff.verified_meaning = sig.signed_at, sig.meaning
        signoff.verify_signature_id = sig.id
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            "batch_step",
            signoff.id,
            old={"verified_by": None},
            new={"verified_by": actor.user_id, "signature_id": sig.id, "meaning": sig.meaning},
            site_id=batch.site_id,
        )
        records.add_step(
            uow,
            actor,
            batch,
            f"{signoff.code}_verified",
            {"signoff_id": signoff.id, "signature_id": sig.id, "meaning": sig.meaning},
        )
        return signoff

    def new_signoff(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch: BatchRecord,
        state: StepState,
        entry: dict[str, Any],
        meaning: str,
        deviation_id: str | None,
    ) -> StepSignoff:
        """The row a performer signs (not yet added: the signature comes first)."""
        return StepSignoff(
            id=new_id("stp"),
            batch_id=batch.id,
            code=state.code,
            position=state.position,
            title=state.title,
            critical=state.critical,
            entry=entry or None,
            performed_by=actor.user_id,
            performed_by_name=actor.full_name,
            performed_at=uow.clock.now(),
            performed_meaning=meaning.strip(),
            signature_id="",
            deviation_id=deviation_id,
            verified_by=None,
            verified_by_name=None,
            verified_at=None,
            verified_meaning=None,
            verify_signature_id=None,
        )

    def before_start(self, uow: UnitOfWork, batch: BatchRecord) -> list[StepState]:
        """The manual steps due before the machine starts (those before the master file's first
        machine step, the worklist's "before the machine starts") not yet done: not signed, or
        a critical entry not yet verified by a second person. Empty when the machine may
        start, and always for a master file without a machine step. A deviation does not stand
        in for them: it lets later steps be signed out of order, never the machine run without
        its line clearance or verified material loading."""
        states = self.step_states(uow, batch)
        machine = [s.position for s in states if not s.manual]
        if not machine:
            return []
        first = min(machine)
        return [
            s
            for s in states
            if s.manual and s.position < first and s.status in ("pending", "awaiting_verification")
        ]

    def check_ready_to_run(self, uow: UnitOfWork, batch: BatchRecord) -> None:
        """Raise Refused (`steps_before_start_unsigned`, field `steps.<first step's code>`)
        naming every step before the machine start still to sign or verify."""
        missing = self.before_start(uow, batch)
        if missing:
            raise Refused(
                f"batch {batch.batch_number}: the machine does not start until the steps before "
                f"it are signed: {waiting_for(missing)}",
                field=f"steps.{missing[0].code}",
                code="steps_before_start_unsigned",
            )

    def record_gaps(
        self, uow: UnitOfWork, batch: BatchRecord, excused: Collection[str] = ()
    ) -> list[str]:
        """Why the batch record is not complete: manual steps not performed (unless a deviation
        names them, `excused`), critical entries not verified; empty when complete. Release is
        refused while any is left."""
        return self.record_gaps_of(uow, [batch], {batch.id: excused})[batch.id]

    def record_gaps_of(
        self,
        uow: UnitOfWork,
        batches: Sequence[BatchRecord],
        excused: Mapping[str, Collection[str]],
    ) -> dict[str, list[str]]:
        """`record_gaps` of each batch (by id; `excused`: batch id -> its excused step codes),
        with the reads of `step_states_of`."""
        out: dict[str, list[str]] = {}
        for batch_id, states in self.step_states_of(uow, batches).items():
            skip = excused.get(batch_id, ())
            gaps = []
            for state in states:
                if state.manual and state.signoff is None and state.code not in skip:
                    gaps.append(f"step {state.code} ({state.title}) not performed")
                elif state.status == "awaiting_verification":
                    gaps.append(f"step {state.code} ({state.title}): entry not verified")
            out[batch_id] = gaps
        return out
