"""A decision signed by a person (a QP's change-control decision, a clinician's dose decision):
the record's audited transition naming the signature, then who decided, when, why and under
which signature, stamped on the record's `decided_at`, `decided_by`, `decision_reason` and
`signature_id` columns. The caller signs first and commits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nearfab.common.states import S
from nearfab.identity.logic import Actor
from nearfab.identity.services.auditlog import audited_transition
from nearfab.uow import UnitOfWork


def record_signed_decision(
    uow: UnitOfWork,
    actor: Actor,
    record: Any,
    target: S,
    allowed: Mapping[S, frozenset[S]],
    *,
    entity_type: str,
    label: str,
    reason: str | None,
    signature_id: str,
    site_id: str | None = None,
) -> None:
    audited_transition(
        uow,
        actor,
        record,
        target,
        allowed,
        entity_type=entity_type,
        label=label,
        reason=reason,
        site_id=site_id,
        extra={"signature_id": signature_id},
    )
    record.decided_at, record.decided_by = uow.clock.now(), actor.user_id
    record.decision_reason, record.signature_id = reason, signature_id
