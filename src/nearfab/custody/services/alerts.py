"""Following up a custody alert: a pharmacist of the alert's site records what was done
(acknowledged, patient contacted, pack recovered or not recoverable, closed with its outcome),
each step with a note, who and when, its audit row in the same transaction
(docs/custody.md, "Following up an alert").

Who may act: `pack.dispense` (the pharmacist's permission: the follow-up of a pack handed to a
patient is the dispensing pharmacy's work) at the alert's site; a grant that reaches the
network (control-site staff holding the role) at any site's; an alert of no site only by such
a grant. Readers (`trace.read`: QPs, administrators, auditors, pharmacists) see the status and
the history on the list (`Packs.alerts`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from nearfab.common.errors import Conflict, Forbidden, NotFound, ValidationFailed
from nearfab.common.states import check_transition, parse_state
from nearfab.custody.enums import (
    ALERT_TRANSITIONS,
    AlertKind,
    AlertOutcome,
    AlertStatus,
)
from nearfab.custody.models import CustodyAlert, CustodyAlertAction
from nearfab.identity import Actor, AuditAction, Permission, audit, authorize, can, refuse
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.custody.services.packs import AlertRow

NOTE_MAX = 2000  # characters of a step's note
ACT = Permission.DISPENSE  # who follows an alert up (see the module's docstring)

# a status in the words of the page, the CLI and the API's `status_words`
STATUS_WORDS = {
    AlertStatus.OPEN.value: "Open: nobody has taken it on yet",
    AlertStatus.ACKNOWLEDGED.value: "Acknowledged",
    AlertStatus.PATIENT_CONTACTED.value: "Patient contacted",
    AlertStatus.PACK_RECOVERED.value: "Pack recovered",
    AlertStatus.PACK_NOT_RECOVERABLE.value: "Pack not recoverable",
    AlertStatus.CLOSED.value: "Closed",
}
OUTCOME_WORDS = {
    AlertOutcome.PACK_RECOVERED.value: "the pack was recovered",
    AlertOutcome.PACK_NOT_RECOVERABLE.value: "the pack could not be recovered",
    AlertOutcome.NO_ACTION_NEEDED.value: "nothing to recover",
}
# the verb a form's button shows for a step to a status (a closed alert's step is reopening)
ACTION_WORDS = {
    AlertStatus.ACKNOWLEDGED.value: "Acknowledge",
    AlertStatus.PATIENT_CONTACTED.value: "Patient contacted",
    AlertStatus.PACK_RECOVERED.value: "Pack recovered",
    AlertStatus.PACK_NOT_RECOVERABLE.value: "Pack not recoverable",
    AlertStatus.CLOSED.value: "Close",
}
# the list's filter: open means every status but closed
FILTERS = ("all", "open", "closed")


@dataclass(frozen=True)
class AlertStep:
    """One step of an alert's follow-up, as its history shows it."""

    from_status: str
    to_status: str
    outcome: str | None
    note: str
    acted_at: datetime
    acted_by: str
    acted_by_name: str

    @property
    def reopened(self) -> bool:
        return self.from_status == AlertStatus.CLOSED.value

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "reopened": self.reopened}


def next_statuses(status: str) -> list[str]:
    """The statuses an alert in `status` may move to, in the order of its follow-up."""
    allowed = ALERT_TRANSITIONS.get(AlertStatus(status), frozenset())
    return [s.value for s in AlertStatus if s in allowed]


def outcome_of(history: list[AlertStep]) -> str | None:
    """The outcome of the alert's last closing (None if it was reopened since, or never
    closed)."""
    if not history or history[-1].to_status != AlertStatus.CLOSED.value:
        return None
    return history[-1].outcome


def history_of(uow: UnitOfWork, alert_ids: Iterable[str]) -> dict[str, list[AlertStep]]:
    """Every step of the given alerts, oldest first (one statement)."""
    ids = sorted(set(alert_ids))
    out: dict[str, list[AlertStep]] = {a: [] for a in ids}
    if not ids:
        return out
    rows = uow.session.scalars(
        select(CustodyAlertAction)
        .where(CustodyAlertAction.alert_id.in_(ids))
        .order_by(CustodyAlertAction.acted_at, CustodyAlertAction.id)
    )
    for r in rows:
        out[r.alert_id].append(
            AlertStep(
                from_status=r.from_status,
                to_status=r.to_status,
                outcome=r.outcome,
                note=r.note,
                acted_at=r.acted_at,
                acted_by=r.acted_by,
                acted_by_name=r.acted_by_name,
            )
        )
    return out


def may_act(actor: Actor, alert_site_id: str | None) -> bool:
    """Whether `actor` may follow up an alert of that site (for showing the forms)."""
    return can(actor, ACT, site_id=alert_site_id)


def _at(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def alert_dict(row: AlertRow, actor: Actor) -> dict[str, Any]:
    """An alert as the API and `nearfab custody alerts --json` give it (`CustodyAlertOut`):
    times in ISO 8601, the status in words, the next steps `actor` may take."""
    out = row.to_dict()
    return {
        **out,
        "raised_at": _at(row.raised_at),
        "status_changed_at": _at(row.status_changed_at),
        "status_words": STATUS_WORDS.get(row.status, row.status),
        "next_statuses": next_statuses(row.status) if may_act(actor, row.site_id) else [],
        "history": [{**h, "acted_at": _at(h["acted_at"])} for h in out["history"]],
    }


class AlertActions:
    """The one use case that changes an alert's status (and reads one alert for it)."""

    def get(
        self,
        uow: UnitOfWork,
        actor: Actor,
        alert_id: str,
        permission: Permission = Permission.TRACE_READ,
    ) -> CustodyAlert:
        """One alert, for someone who holds `permission` at its site (a record of no site:
        only a grant reaching the network); `NotFound` for an unknown id, `Forbidden`
        (other_site) for another site's."""
        authorize(actor, permission)  # the role first: no hints to others
        alert = uow.session.get(CustodyAlert, (alert_id or "").strip())
        if alert is None:
            raise NotFound(f"no custody alert {alert_id!r}", field="alert_id")
        authorize(actor, permission, site_id=alert.site_id)
        return alert

    def update(
        self,
        uow: UnitOfWork,
        actor: Actor,
        alert_id: str,
        *,
        status: str,
        note: str | None = None,
        outcome: str | None = None,
        expected_status: str | None = None,
    ) -> CustodyAlert:
        """Move an alert to `status` (see `ALERT_TRANSITIONS`), with a note (required for
        every step but the first acknowledgement; the reason when reopening a closed alert)
        and, when closing, the `outcome`. `expected_status`: the status the person saw; if the
        alert has moved since, `Conflict` (alert_changed) and nothing is saved.

        Refused, naming the field: an unknown status or outcome, a step the transitions do not
        allow (`status`), a missing or too long note (`note`), an outcome when not closing, or
        one that contradicts what was recorded (`outcome`). Another site's pharmacist is
        refused `other_site` (the refusal is on record, nothing changed). In one transaction:
        the alert's status with who and when, its history step, and the audit row."""
        try:
            alert = self.get(uow, actor, alert_id, ACT)
        except Forbidden as exc:
            if exc.code != "other_site":
                raise
            refuse(uow, actor, exc, "custody_alert", alert_id, site_id=actor.site_id)
        current = AlertStatus(alert.status)
        target = parse_state(AlertStatus, (status or "").strip(), field="status")
        if expected_status is not None and expected_status.strip() != current.value:
            raise Conflict(
                f"alert {alert.id} is now {current.value} ({_last_change(alert)}), not "
                f"{expected_status.strip()}: look again before acting",
                field="status",
                code="alert_changed",
            )
        if target == current:
            raise ValidationFailed(
                f"alert {alert.id} is already {current.value} ({_last_change(alert)})",
                field="status",
            )
        check_transition(f"alert {alert.id}", current, target, ALERT_TRANSITIONS)
        reopening = current == AlertStatus.CLOSED
        text = (note or "").strip()
        if len(text) > NOTE_MAX:
            raise ValidationFailed(
                f"the note is {len(text)} characters; at most {NOTE_MAX}", field="note"
            )
        if not text and (reopening or target != AlertStatus.ACKNOWLEDGED):
            raise ValidationFailed(
                "reopening a closed alert needs a note giving the reason"
                if reopening
                else f"{target.value.replace('_', ' ')} needs a note saying what was done",
                field="note",
            )
        closing = _closing_outcome(alert, current, target, outcome)
        now = uow.clock.now()
        alert.status = target.value
        alert.status_changed_at = now
        alert.status_changed_by = actor.user_id
        uow.session.add(
            CustodyAlertAction(
                alert_id=alert.id,
                from_status=current.value,
                to_status=target.value,
                outcome=closing,
                note=text,
                acted_at=now,
                acted_by=actor.user_id,
                acted_by_name=actor.full_name,
                site_id=actor.site_id,
            )
        )
        audit(
            uow,
            actor,
            AuditAction.TRANSITION,
            "custody_alert",
            alert.id,
            old={"status": current.value},
            new={
                "status": target.value,
                "outcome": closing,
                "note": text,
                "reopened": reopening,
                "kind": alert.kind,
                "unit_id": alert.unit_id,
            },
            reason=text or None,
            site_id=alert.site_id,
        )
        uow.commit()
        return alert


def _last_change(alert: CustodyAlert) -> str:
    if alert.status_changed_at is None:
        return "as raised"
    return f"changed by {alert.status_changed_by} at {alert.status_changed_at.isoformat()}"


def _closing_outcome(
    alert: CustodyAlert, current: AlertStatus, target: AlertStatus, outcome: str | None
) -> str | None:
    """The outcome to record: required when closing (and agreeing with what the follow-up
    recorded), refused on any other step."""
    given = (outcome or "").strip()
    if target != AlertStatus.CLOSED:
        if given:
            raise ValidationFailed(
                "an outcome is given only when closing the alert", field="outcome"
            )
        return None
    if not given:
        choices = ", ".join(o.value for o in AlertOutcome)
        raise ValidationFailed(
            f"closing an alert needs its outcome ({choices}) and a note", field="outcome"
        )
    found = parse_state(AlertOutcome, given, field="outcome")
    recorded = {
        AlertStatus.PACK_RECOVERED: AlertOutcome.PACK_RECOVERED,
        AlertStatus.PACK_NOT_RECOVERABLE: AlertOutcome.PACK_NOT_RECOVERABLE,
    }.get(current)
    if recorded is not None and found != recorded:
        raise ValidationFailed(
            f"the alert records the pack as {current.value.replace('_', ' ')}: close it with "
            f"the outcome {recorded.value}",
            field="outcome",
        )
    if (
        alert.kind == AlertKind.DISPENSED_THEN_RECALLED.value
        and found == AlertOutcome.NO_ACTION_NEEDED
    ):
        raise ValidationFailed(
            "a pack dispensed then recalled is with its patient: close the alert as "
            "pack_recovered or pack_not_recoverable",
            field="outcome",
        )
    return found.value
