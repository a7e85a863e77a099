"""What other domains may read of identity's tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, ScalarSelect, and_, or_, select
from sqlalchemy.orm import Session, aliased

from nearfab.identity.models import AuditChainHead, AuditEntry, Signature, User
from nearfab.identity.services.auditchain import entry_content


def signature(session: Session, signature_id: str) -> Signature | None:
    """The signature with this id, or None (from the session's identity map when loaded)."""
    return session.get(Signature, signature_id)


def audit_entries_on(session: Session, targets: Mapping[str, Iterable[str]]) -> list[AuditEntry]:
    """Every audit row about these entities (entity type -> ids), in one statement, by id."""
    conds = []
    for entity_type, ids in targets.items():
        wanted = list(dict.fromkeys(ids))
        if len(wanted) == 1:
            conds.append(
                and_(AuditEntry.entity_type == entity_type, AuditEntry.entity_id == wanted[0])
            )
        elif wanted:
            conds.append(
                and_(AuditEntry.entity_type == entity_type, AuditEntry.entity_id.in_(wanted))
            )
    if not conds:
        return []
    return list(session.scalars(select(AuditEntry).where(or_(*conds)).order_by(AuditEntry.id)))


def signature_entity_view() -> type[Signature]:
    """The e-signature as a joinable entity view, for a one-statement hot path that hands the
    loaded signature on (verification: the QP signature check finds it in the session). The
    caller reads it, never writes it."""
    return aliased(Signature, name="signature_view")


def users_by_id(session: Session, ids: Iterable[str]) -> dict[str, User]:
    """The accounts with these ids, in one statement; an unknown id is simply absent."""
    wanted = set(ids)
    if not wanted:
        return {}
    return {u.id: u for u in session.scalars(select(User).where(User.id.in_(wanted)))}


def user_by_username(session: Session, username: str) -> User | None:
    """The account with this username, or None."""
    return session.scalar(select(User).where(User.username == username))


def active_users_at(session: Session, site_id: str) -> list[User]:
    """The active accounts whose home is this site, in one statement, by username."""
    return list(
        session.scalars(
            select(User)
            .where(User.home_site_id == site_id, User.active.is_(True))
            .order_by(User.username)
        )
    )


def user(session: Session, user_id: str) -> User | None:
    """The account with this id, or None (from the session's identity map when loaded)."""
    return session.get(User, user_id)


def audit_head_view() -> ScalarSelect[int]:
    """The audit chain's last `seq` as a scalar subquery, for a one-statement check."""
    return select(AuditChainHead.seq).where(AuditChainHead.id == 1).scalar_subquery()


def audit_rows_after(connection: Connection, after_seq: int) -> list[dict[str, Any]]:
    """The audit rows after `after_seq`, in chain order, each as the content its hash covers
    plus `prev_hash` and `row_hash` (docs/audit-trail.md): what a node replicates."""
    rows = connection.execute(
        select(AuditEntry.__table__).where(AuditEntry.seq > after_seq).order_by(AuditEntry.seq)
    ).mappings()
    return [
        {**entry_content(dict(row)), "prev_hash": row["prev_hash"], "row_hash": row["row_hash"]}
        for row in rows
    ]
