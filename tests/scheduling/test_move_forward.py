"""Moving an order forward (issue 13 item 8): one service the web page, the API and the CLI
share. The order becomes urgent and the network is replanned with the urgent-order trigger,
in one transaction, with the reason on the priority's audit row and on the plan version; a
refusal (no reason, a role that may not plan, another site's planner) leaves neither."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import DomainError, Forbidden, ValidationFailed
from nearfab.identity import AuditEntry
from nearfab.scheduling import PlanVersion


def _priority_rows(app: App, order_id: str) -> list[AuditEntry]:
    with app.uow() as uow:
        return list(
            uow.session.scalars(
                select(AuditEntry).where(
                    AuditEntry.entity_type == "order_planning", AuditEntry.entity_id == order_id
                )
            )
        )


def _versions(app: App) -> int:
    with app.uow() as uow:
        return len(list(uow.session.scalars(select(PlanVersion.id))))


def test_an_order_moved_forward_is_urgent_and_replanned_with_the_reason(seeded: App) -> None:
    order = fh.submit(seeded)
    planner = fh.actor(seeded, "planner")
    with seeded.uow() as uow:
        version = seeded.scheduling.move_forward(
            uow, planner, order, reason="patient admitted early"
        )
    assert version.trigger == "urgent_order" and version.reason == "patient admitted early"
    (placed,) = [a for a in version.assignments if a["order_id"] == order]
    assert placed["priority"] == "urgent"
    (row,) = _priority_rows(seeded, order)
    assert row.reason == "patient admitted early"
    assert row.new is not None and row.new["priority"] == "urgent"


@pytest.mark.parametrize(
    ("username", "reason", "refusal"),
    [
        ("planner", "  ", ValidationFailed),  # no reason
        ("clinician", "urgent", Forbidden),  # may set a priority, may not replan the network
        ("operator", "urgent", Forbidden),
    ],
)
def test_a_refused_move_leaves_no_priority_and_no_plan(
    seeded: App, username: str, reason: str, refusal: type[DomainError]
) -> None:
    order = fh.submit(seeded)
    before = _versions(seeded)
    with pytest.raises(refusal), seeded.uow() as uow:
        seeded.scheduling.move_forward(uow, fh.actor(seeded, username), order, reason=reason)
    assert _priority_rows(seeded, order) == []
    assert _versions(seeded) == before
