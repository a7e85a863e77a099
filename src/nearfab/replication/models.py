"""The outbox a node publishes from and the inbox it applies into (docs/replication.md)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class OutboxHead(Base):
    """Where a node's outbox ends (its seq and hash) and how far it has captured the source
    chains; locked by each capturing transaction so the outbox is numbered by one writer."""

    __tablename__ = "replication_outbox_head"

    site_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int]
    hash: Mapped[str] = mapped_column(String(64))
    audit_seq: Mapped[int]
    ledger_seq: Mapped[int]


class OutboxRecord(Base):
    """A record this node owns, waiting for (or acknowledged by) the broker."""

    __tablename__ = "replication_outbox"
    __table_args__ = (
        UniqueConstraint("origin_site", "seq", name="uq_replication_outbox_seq"),
        Index("ix_replication_outbox_pending", "published_at", "seq"),
    )

    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    origin_site: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16))
    source_ref: Mapped[str] = mapped_column(String(120))
    chain_hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    record_hash: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(default=0)


class InboxRecord(Base):
    """A record another node owns, as applied here (once: the id is the key)."""

    __tablename__ = "replication_inbox"
    __table_args__ = (
        UniqueConstraint("origin_site", "seq", name="uq_replication_inbox_seq"),
        # the control site's release dossiers, found by kind (replication/releases.py)
        Index("ix_replication_inbox_kind", "kind", "origin_site", "seq"),
        # the records about one thing (the sites' rows about the control's records, the
        # control's hand-overs and cancellations), found by `about` (0033)
        Index("ix_replication_inbox_about", "about", "origin_site", "seq"),
    )

    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    origin_site: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16))
    source_ref: Mapped[str] = mapped_column(String(120))
    chain_hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    record_hash: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    received_at: Mapped[datetime]
    # what the record is about, read from its payload as it is stored (`services.record_about`):
    # an audit row's `entity_type`, a ledger entry's `kind`; None for the other kinds
    about: Mapped[str | None] = mapped_column(String(64), default=None)


class InboxProblem(Base):
    """Something wrong with what arrived: a gap, a duplicate, a fork, an altered record."""

    __tablename__ = "replication_inbox_problems"
    __table_args__ = (Index("ix_replication_problems_origin", "origin_site", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    origin_site: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int | None]
    kind: Mapped[str] = mapped_column(String(16))
    record_id: Mapped[str | None] = mapped_column(String(160))
    record_hash: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    detected_at: Mapped[datetime]
