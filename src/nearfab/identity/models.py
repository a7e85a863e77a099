"""Users, sessions (web and API), audit entries and electronic signatures."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class User(Base):
    """An account. Never deleted: ids and usernames are never reused (deactivate instead)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[Any]]
    home_site_id: Mapped[str | None] = mapped_column(String(32))
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    # password ageing: set at every change; an admin-set password must be changed at login
    password_changed_at: Mapped[datetime | None]
    must_change_password: Mapped[bool] = mapped_column(default=False, server_default=false())
    # consecutive failed logins or signatures; locked_at set at the threshold, cleared by unlock
    failed_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    locked_at: Mapped[datetime | None]
    # TOTP (RFC 6238): the secret encrypted (Fernet); enabled once confirmed with a code
    totp_secret: Mapped[str | None] = mapped_column(String(300))
    totp_enabled_at: Mapped[datetime | None]
    totp_last_step: Mapped[int | None]  # the last accepted time step: a code works once

    def has_role(self, role: str) -> bool:
        return role in self.roles


class UserSession(Base):
    """A web session or an API token: revocable, with an idle timeout and an absolute lifetime.
    Only the SHA-256 of the secret (cookie value or bearer token) is stored."""

    __tablename__ = "user_sessions"
    __table_args__ = (Index("ix_user_sessions_user", "user_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # "web" | "api"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    # "totp": the password was right, the second factor is still awaited
    pending: Mapped[str | None] = mapped_column(String(16))
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(32))
    # the first e-signature of this continuous session (both components were given then)
    first_signed_at: Mapped[datetime | None]
    client: Mapped[str | None] = mapped_column(String(64))


class PasswordHistory(Base):
    """Hashes of a user's passwords, newest last: a new password may not repeat the last N."""

    __tablename__ = "password_history"
    __table_args__ = (Index("ix_password_history_user", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    password_hash: Mapped[str] = mapped_column(String(200))
    set_at: Mapped[datetime]


class SecurityAlert(Base):
    """Something security staff must look at (an account locked after failed attempts)."""

    __tablename__ = "security_alerts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    raised_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(32))
    username: Mapped[str] = mapped_column(String(64))
    site_id: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)


class AuditEntry(Base):
    """Who did what, when, old and new values and why; written in the changing transaction.

    Append-only and hash-chained (docs/audit-trail.md): `seq` numbers the trail without gaps,
    `row_hash` is the SHA-256 of the row's content and `prev_hash` (the previous row's
    `row_hash`); database triggers refuse UPDATE and DELETE."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entity", "entity_type", "entity_id"),
        Index("ux_audit_entries_seq", "seq", unique=True),
        Index("ix_audit_entries_site_at", "site_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger)
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
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))
    # HMAC-SHA256 of the row's content with the data folder's audit key (keys/audit_chain.key,
    # never in the database): plain SQL access cannot write a row that verifies (0014)
    row_mac: Mapped[str | None] = mapped_column(String(64), default=None)


class AuditChainHead(Base):
    """The one row saying where the audit chain ends (its last `seq` and `row_hash`). Every
    transaction that appends audit rows locks it first, so rows are numbered one writer at a
    time; a trigger lets it move only forward, onto the last row."""

    __tablename__ = "audit_chain_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed checkpoint of the audit chain's head (and of every custody ledger head): the
    canonical JSON `body` signed with the control site's Ed25519 key; append-only (0014,
    docs/audit-trail.md)."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    body: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)


class Signature(Base):
    """An e-signature: printed name, meaning, time (UTC), bound to the hash of the signed record;
    `signature_hash` binds the signature's own fields to that record (21 CFR 11.70)."""

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
    signature_hash: Mapped[str | None] = mapped_column(String(64))
    # what the signer gave: "user_id+password", "password", each "+totp" when asked
    components: Mapped[str | None] = mapped_column(String(64))
    session_id: Mapped[str | None] = mapped_column(String(32))


class PlatformKey(Base):
    """Fingerprints of the keys every worker must share (ticket signing, patient identity)."""

    __tablename__ = "platform_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class ApprovalRequest(Base):
    """A change that needs a second person (separation of duties): granting `qp` or `admin`
    to an account, or naming a QP to certify a master file's batches. Requested by one
    administrator, approved or refused by another administrator of the control site (never
    the requester, never the account it is about); each step is audited in its transaction."""

    __tablename__ = "approval_requests"
    __table_args__ = (
        Index("ix_approval_requests_status", "status"),
        Index("ix_approval_requests_subject", "subject_user_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # "role_grant" | "master_file_qp"
    status: Mapped[str] = mapped_column(String(16))  # pending | approved | refused
    subject_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    role: Mapped[str | None] = mapped_column(String(32))
    master_file_code: Mapped[str | None] = mapped_column(String(64))
    site_id: Mapped[str | None] = mapped_column(String(32))  # the subject's home site
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_by_name: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime]
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_by_name: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None]
    decision_reason: Mapped[str | None] = mapped_column(Text)
