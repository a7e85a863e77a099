"""The worklist (issue 13 item 3, docs/production.md "Worklist"): what a person has to do now on
the open batches of the sites they work for, read from the batch-record services and shared by
the API, the web page and the CLI.

Read-only. Each item is what the service that signs it would accept now, asked of that service
(`check_step_signable`, `check_step_verifiable`, `release_blockers`), so the list never offers
what a signature would be refused for; the signing itself goes through the batch page's forms
and `quality.records` (`sign_step`, `verify_step`, `review_audit_trail`) and the release queue.

- steps: per open batch, the next manual step due now, in the master file's order, with its
  entry fields; a step before the master file's machine step is done "before the machine
  starts", the others "after the run"; while the batch is not yet handed to its machine, a
  step before it is marked "due now: the machine waits for this" (`machine_waits`): the
  machine does not start until those steps are signed and their critical entries verified
  (production.services.steps.BatchSteps.check_ready_to_run);
- waiting: open batches with a manual step still to do but none due now, and why;
- verifications: critical entries waiting for a second person, for everyone who may verify them
  except the one who performed them;
- reviews and certify (a QP): batches whose record is complete and whose audit trail waits for
  a (fresh) review, and batches nothing keeps this QP from certifying (the release queue).

The worklist does not decide when a machine may start: the hand-over to the machine does."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from nearfab.bootstrap import App
from nearfab.common.canonical import to_jsonable
from nearfab.common.errors import DomainError
from nearfab.common.schemas import Out, Timestamp, shaped
from nearfab.identity import Actor, Permission, Role, authorize, can, is_network_wide
from nearfab.production import BatchRecord, BatchStatus, StepState
from nearfab.uow import UnitOfWork

BEFORE_RUN = "before the machine starts"
AFTER_RUN = "after the run"
NO_MACHINE = "manual"  # a master file without a machine step
MACHINE_WAITS = "due now: the machine waits for this"
# the release-blocker codes that mean the audit trail needs a (new) review
REVIEW_CODES = frozenset({"audit_trail_not_reviewed", "audit_trail_changed"})
OPEN = (BatchStatus.IN_PROGRESS.value, BatchStatus.COMPLETED.value)


class WorkBatchOut(Out):
    """The batch an item is about."""

    batch_id: str
    batch_number: str
    batch_status: str
    site: str = Field(description="The making site's code")
    site_name: str
    master_file: str = Field(description="code and version, e.g. 'HC-PRINT v1'")


class StepDueOut(WorkBatchOut):
    """A manual step the batch's site may sign now (POST /api/v1/batches/{id}/steps/{code}/sign
    or the batch page's form)."""

    position: int
    code: str
    title: str
    phase: str = Field(description="'before the machine starts' | 'after the run' | 'manual'")
    critical: bool = Field(description="A second person verifies its entry after it is signed")
    entry_fields: dict[str, str]
    deviation_id: str | None = Field(
        description="The open deviation that lets it be signed before an earlier step"
    )
    machine_waits: bool = Field(
        description="A step before the machine start of a batch not yet handed to its machine: "
        "the machine does not start until it is signed (and verified)"
    )


class WaitingOut(WorkBatchOut):
    """An open batch with a manual step still to do, none of them due now."""

    code: str = Field(description="The next manual step")
    title: str
    phase: str
    reason: str


class VerificationOut(WorkBatchOut):
    """A critical entry waiting for a second person's verification."""

    position: int
    code: str
    title: str
    entry: dict[str, Any] | None
    entry_fields: dict[str, str]
    performed_by: str
    performed_by_id: str
    performed_at: Timestamp
    machine_waits: bool = Field(
        description="The batch's machine does not start until this entry is verified"
    )


class QpItemOut(WorkBatchOut):
    """A batch waiting for the QP: its audit trail to review, or ready to certify."""

    reason: str
    evaluated_at: Timestamp


class WorklistOut(Out):
    """What the person has to do now on the open batches of the sites they work for."""

    user: str
    network: bool = Field(description="The list covers every site of the network")
    sites: list[str] = Field(description="The codes of the sites the list covers")
    may_sign: bool
    may_verify: bool
    may_review: bool
    steps: list[StepDueOut]
    waiting: list[WaitingOut]
    verifications: list[VerificationOut]
    reviews: list[QpItemOut]
    certify: list[QpItemOut]


def _phase(states: list[StepState], state: StepState) -> str:
    machine = [s.position for s in states if not s.manual]
    if not machine:
        return NO_MACHINE
    return BEFORE_RUN if state.position < min(machine) else AFTER_RUN


def _machine_waits(batch: BatchRecord, states: list[StepState], state: StepState) -> bool:
    """Whether `state` is a step the batch's machine waits for: before the machine step, and
    the batch started but not yet handed to its machine."""
    return (
        batch.status == BatchStatus.IN_PROGRESS.value
        and batch.handed_over_at is None
        and _phase(states, state) == BEFORE_RUN
    )


def _why_waiting(states: list[StepState], pending: StepState, excused: dict[str, str]) -> str:
    """Why `pending` (the batch's first unsigned manual step) may not be signed now."""
    for earlier in states[: pending.position - 1]:
        if earlier.status == "awaiting_verification":
            return (
                f"step {earlier.position} ({earlier.title}) waits for a second person to "
                "verify its entry"
            )
        if earlier.done or earlier.code in excused:
            continue
        if not earlier.manual:
            return f"waits for the machine: {earlier.title}"
        return f"waits for step {earlier.position} ({earlier.title})"
    return "not signable now"  # pragma: no cover - check_step_signable accepted nothing else


@shaped(WorklistOut)
def worklist_view(app: App, uow: UnitOfWork, actor: Actor) -> dict[str, Any]:
    """The actor's worklist (module docstring). Only batches of the sites the actor works for
    are read into it. A role that reads batch records but signs nothing in them (auditor,
    planner, administrator) gets an empty list; one that does not read them is refused."""
    authorize(actor, Permission.BATCH_READ)
    records = app.quality.records
    sites: dict[str, Any] = {}

    def site_of(batch: BatchRecord) -> Any:
        if batch.site_id not in sites:
            sites[batch.site_id] = app.network.get_site(uow, batch.site_id)
        return sites[batch.site_id]

    def about(batch: BatchRecord) -> dict[str, Any]:
        site = site_of(batch)
        return {
            "batch_id": batch.id,
            "batch_number": batch.batch_number,
            "batch_status": batch.status,
            "site": site.code,
            "site_name": site.name,
            "master_file": f"{batch.master_file_code} v{batch.master_file_version}",
        }

    steps: list[dict[str, Any]] = []
    waiting: list[dict[str, Any]] = []
    verifications: list[dict[str, Any]] = []
    open_batches = sorted(
        (b for status in OPEN for b in app.production.batches(uow, status=status)),
        key=lambda b: (b.started_at, b.batch_number),
    )
    for batch in open_batches:
        may_sign = can(actor, Permission.BATCH_STEP_SIGN, site_id=batch.site_id)
        may_verify = can(actor, Permission.BATCH_ENTRY_VERIFY, site_id=batch.site_id)
        if not (may_sign or may_verify):
            continue  # another site's batch: never read further, never shown
        states = app.production.step_states(uow, batch)
        if may_sign:
            excused = records.excused_steps(uow, batch.id)
            unsigned = [s for s in states if s.manual and s.signoff is None]
            due = None
            for state in unsigned:
                try:
                    _, deviation = app.production.check_step_signable(
                        uow, batch, state.code, excused
                    )
                except DomainError:
                    continue
                due = (state, deviation)
                break
            if due is not None:
                state, deviation = due
                steps.append(
                    {
                        **about(batch),
                        "position": state.position,
                        "code": state.code,
                        "title": state.title,
                        "phase": _phase(states, state),
                        "critical": state.critical,
                        "entry_fields": state.entry_fields,
                        "deviation_id": deviation,
                        "machine_waits": _machine_waits(batch, states, state),
                    }
                )
            elif unsigned:
                first = unsigned[0]
                waiting.append(
                    {
                        **about(batch),
                        "code": first.code,
                        "title": first.title,
                        "phase": _phase(states, first),
                        "reason": _why_waiting(states, first, excused),
                    }
                )
        if may_verify:
            for state in states:
                if state.status != "awaiting_verification" or state.signoff is None:
                    continue
                try:  # the service's own rule: never the performer, never twice
                    app.production.check_step_verifiable(uow, actor, batch, state.code)
                except DomainError:
                    continue
                signoff = state.signoff
                verifications.append(
                    {
                        **about(batch),
                        "position": state.position,
                        "code": state.code,
                        "title": state.title,
                        "entry": signoff.entry,
                        "entry_fields": state.entry_fields,
                        "performed_by": signoff.performed_by_name,
                        "performed_by_id": signoff.performed_by,
                        "performed_at": signoff.performed_at,
                        "machine_waits": _machine_waits(batch, states, state),
                    }
                )

    reviews: list[dict[str, Any]] = []
    certify: list[dict[str, Any]] = []
    if can(actor, Permission.AUDIT_TRAIL_REVIEW) or can(actor, Permission.RELEASE_DECIDE):
        queue = []
        for review in app.quality.pending(uow):
            batch = app.production.get(uow, review.batch_id)
            may_review = can(actor, Permission.AUDIT_TRAIL_REVIEW, site_id=batch.site_id)
            may_decide = can(actor, Permission.RELEASE_DECIDE, site_id=batch.site_id)
            if may_review or may_decide:
                queue.append((review, batch, may_review, may_decide))
        # the release checks of every batch in the queue, read together (one set of statements)
        checks = records.release_blockers_of(
            uow, [(b, actor, Role.QP.value) for _, b, _, _ in queue]
        )
        for review, batch, may_review, may_decide in queue:
            blockers = checks[batch.id]
            codes = {b.code for b in blockers}
            if "not_ready" in codes:
                continue  # its steps are on the site staff's worklists first
            item = {**about(batch), "evaluated_at": review.created_at}
            trail = [b for b in blockers if b.code in REVIEW_CODES]
            if trail and may_review:
                reviews.append({**item, "reason": trail[0].message})
            elif not blockers and may_decide:
                certify.append({**item, "reason": "batch record complete and audit trail reviewed"})

    mine = [
        s.code
        for s in app.network.list_sites(uow)
        if can(actor, Permission.BATCH_ENTRY_VERIFY, site_id=s.id)
    ]
    out: dict[str, Any] = to_jsonable(
        {
            "user": actor.full_name,
            "network": is_network_wide(actor, Permission.BATCH_ENTRY_VERIFY),
            "sites": mine,
            "may_sign": can(actor, Permission.BATCH_STEP_SIGN),
            "may_verify": can(actor, Permission.BATCH_ENTRY_VERIFY),
            "may_review": can(actor, Permission.AUDIT_TRAIL_REVIEW),
            "steps": steps,
            "waiting": waiting,
            "verifications": verifications,
            "reviews": reviews,
            "certify": certify,
        }
    )
    return out
