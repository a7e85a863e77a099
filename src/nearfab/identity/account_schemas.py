"""Response schemas of accounts: users, approval requests, security alerts, sessions, TOTP
enrolment (identity/schemas.py holds the signature and audit-row contracts)."""

from __future__ import annotations

from pydantic import ConfigDict

from nearfab.common.schemas import Out, Timestamp


class ApprovalOut(Out):
    """A request a second administrator approves or refuses (separation of duties)."""

    model_config = ConfigDict(extra="forbid")
    id: str
    kind: str
    status: str
    subject_user_id: str
    role: str | None
    master_file_code: str | None
    site_id: str | None
    reason: str
    requested_by: str
    requested_by_name: str
    requested_at: Timestamp
    decided_by: str | None
    decided_by_name: str | None
    decided_at: Timestamp | None
    decision_reason: str | None


class UserOut(Out):
    """What the API shows of an account (never a hash or a secret)."""

    model_config = ConfigDict(extra="forbid")
    id: str
    username: str
    full_name: str
    roles: list[str]
    home_site_id: str | None
    active: bool
    locked: bool
    locked_at: Timestamp | None
    failed_attempts: int
    created_at: Timestamp
    password_changed_at: Timestamp
    password_expires_at: Timestamp
    must_change_password: bool
    totp_enabled: bool
    pending_approvals: list[ApprovalOut]


class SecurityAlertOut(Out):
    model_config = ConfigDict(extra="forbid")
    id: int
    raised_at: Timestamp
    kind: str
    user_id: str | None
    username: str
    site_id: str | None
    message: str


class LogoutOut(Out):
    model_config = ConfigDict(extra="forbid")
    session_id: str
    ended_at: Timestamp | None


class TotpEnrolmentOut(Out):
    model_config = ConfigDict(extra="forbid")
    secret: str
    otpauth_uri: str


class MeOut(Out):
    """Who the bearer token belongs to."""

    model_config = ConfigDict(extra="forbid")
    user_id: str
    username: str
    name: str
    roles: list[str]
    site_id: str | None
