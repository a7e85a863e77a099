"""Users, API tokens, audit entries and electronic signatures."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[Any]]
    home_site_id: Mapped[str | None] = mapped_column(String(32))
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]

    def has_role(self, role: str) -> bool:
        return role in self.roles


class ApiToken(Base):
    __tablename__ = "api_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class AuditEntry(Base):
    """Who did what, when, old and new values and why; written in the changing transaction."""

    __tablename__ = "audit_entries"
    __table_args__ = (Index("ix_audit_entity", "entity_type", "entity_id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor_id: Mapped[str] = mapped_column(String(64))
    actor_name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(64))
    old: Mapped[dict[str, Any] | None]
    new: Mapped[dict[str, Any] | None]
    reason: Mapped[str | None] = mapped_column(Text)
    site_id: Mapped[str | None] = mapped_column(String(32))


class Signature(Base):
    """An e-signature: printed name, meaning, time, bound to the hash of the signed record."""

    __tablename__ = "signatures"
    __table_args__ = (Index("ix_signature_record", "record_type", "record_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    signer_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    signer_name: Mapped[str] = mapped_column(String(200))
    meaning: Mapped[str] = mapped_column(String(200))
    signed_at: Mapped[datetime]
    record_type: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(String(64))
    record_hash: Mapped[str] = mapped_column(String(64))


class PlatformKey(Base):
    """Fingerprints of the keys every worker must share (ticket signing, patient identity)."""

    __tablename__ = "platform_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
