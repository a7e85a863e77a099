"""/api/v1 accounts: users, roles, passwords, TOTP, sessions and security alerts
(docs/accounts-and-signatures.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from nearfab.api.deps import AppDep, UowDep, allowed, bearer, client_of, login_throttle
from nearfab.api.security import throttled
from nearfab.common.canonical import to_jsonable
from nearfab.common.errors import Unauthenticated
from nearfab.identity import Actor, Permission, SecurityAlert, approval_dict
from nearfab.identity.account_schemas import (
    ApprovalOut,
    LogoutOut,
    SecurityAlertOut,
    TotpEnrolmentOut,
    UserOut,
)

router = APIRouter(prefix="/api/v1", tags=["accounts"])


class UserIn(BaseModel):
    username: str
    full_name: str
    roles: list[str]
    password: str = Field(description="temporary: the user must change it at first login")
    home_site_id: str | None = None


class ReasonBody(BaseModel):
    reason: str


class RolesIn(BaseModel):
    grant: list[str] = Field(default_factory=list)
    revoke: list[str] = Field(default_factory=list)
    reason: str


class ResetPasswordIn(BaseModel):
    password: str
    reason: str


class ChangePasswordIn(BaseModel):
    username: str
    current_password: str
    new_password: str


class MyPasswordIn(BaseModel):
    current_password: str
    new_password: str


class CodeIn(BaseModel):
    code: str


class GrantRequestIn(BaseModel):
    role: str = Field(description="qp or admin: granted when another network admin approves")
    reason: str


def _user(application: Any, uow: Any, user: Any) -> dict[str, Any]:
    data: dict[str, Any] = to_jsonable(application.users.describe(user, uow.clock.now()))
    # qp/admin grants waiting for a second administrator (separation of duties)
    data["pending_approvals"] = [
        to_jsonable(approval_dict(r)) for r in application.users.pending_for(uow, user.id)
    ]
    return data


def approval_out(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = to_jsonable(approval_dict(row))
    return out


def alert_dict(alert: SecurityAlert) -> dict[str, Any]:
    row: dict[str, Any] = to_jsonable(
        {
            "id": alert.id,
            "raised_at": alert.raised_at,
            "kind": alert.kind,
            "user_id": alert.user_id,
            "username": alert.username,
            "site_id": alert.site_id,
            "message": alert.message,
        }
    )
    return row


# --- sessions and own account ---------------------------------------------------------------
@router.post("/auth/logout", response_model=LogoutOut)
def logout(
    actor: Annotated[Actor, allowed(Permission.PROFILE_READ)],
    application: AppDep,
    uow: UowDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> dict[str, Any]:
    """Revoke the bearer token: it is refused from now on (audited `logout`)."""
    if credentials is None:  # pragma: no cover - the actor dependency needs the token first
        raise Unauthenticated("a bearer token is required (POST /api/v1/auth/token)")
    row = application.users.logout(uow, credentials.credentials)
    if row is None:
        raise Unauthenticated("bearer token unknown, expired or revoked", code="session_invalid")
    return {"session_id": row.id, "ended_at": to_jsonable(row.ended_at)}


@router.post("/auth/password", response_model=UserOut)
def change_password(
    body: ChangePasswordIn, request: Request, application: AppDep, uow: UowDep
) -> dict[str, Any]:
    """Change one's own password with the current one: the way out of `password_expired`
    (expired or temporary). No token needed; a wrong current password counts as a failed
    login."""
    with throttled(login_throttle(request), body.username, client_of(request)):
        user = application.users.change_password(
            uow, body.username, body.current_password, body.new_password
        )
    with application.uow() as fresh:
        return _user(application, fresh, application.users.get(fresh, user.id))


@router.post("/me/password", response_model=UserOut)
def change_my_password(
    body: MyPasswordIn,
    request: Request,
    actor: Annotated[Actor, allowed(Permission.PROFILE_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Change my password; my other sessions end, this one stays."""
    with throttled(login_throttle(request), actor.username, client_of(request)):
        user = application.users.change_password(
            uow,
            actor.username,
            body.current_password,
            body.new_password,
            keep_session=actor.session_id,
        )
    with application.uow() as fresh:
        return _user(application, fresh, application.users.get(fresh, user.id))


@router.get("/me/account", response_model=UserOut)
def my_account(
    actor: Annotated[Actor, allowed(Permission.PROFILE_READ)], application: AppDep, uow: UowDep
) -> dict[str, Any]:
    return _user(application, uow, application.users.read_user(uow, actor, actor.user_id))


@router.post("/me/totp", response_model=TotpEnrolmentOut)
def enrol_totp(
    actor: Annotated[Actor, allowed(Permission.PROFILE_READ)], application: AppDep, uow: UowDep
) -> dict[str, Any]:
    """Start TOTP enrolment: the secret and otpauth URI are shown this once; confirm with a
    code (POST /me/totp/confirm) to turn it on."""
    secret, uri = application.users.enrol_totp(uow, actor)
    return {"secret": secret, "otpauth_uri": uri}


@router.post("/me/totp/confirm", response_model=UserOut)
def confirm_totp(
    body: CodeIn,
    actor: Annotated[Actor, allowed(Permission.PROFILE_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    user = application.users.confirm_totp(uow, actor, body.code)
    with application.uow() as fresh:
        return _user(application, fresh, application.users.get(fresh, user.id))


# --- user administration --------------------------------------------------------------------
@router.get("/users", response_model=list[UserOut])
def list_users(
    actor: Annotated[Actor, allowed(Permission.USERS_READ)], application: AppDep, uow: UowDep
) -> list[dict[str, Any]]:
    return [_user(application, uow, u) for u in application.users.list_users(uow, actor)]


@router.post("/users", status_code=201, response_model=UserOut)
def create_user(
    body: UserIn,
    actor: Annotated[Actor, allowed(Permission.USERS_MANAGE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    user = application.users.create_user(
        uow,
        actor,
        username=body.username,
        full_name=body.full_name,
        roles=body.roles,
        password=body.password,
        home_site_id=body.home_site_id,
    )
    with application.uow() as fresh:
        return _user(application, fresh, application.users.get(fresh, user.id))


@router.get("/users/{user_id}", response_model=UserOut)
def get_user(
    user_id: str,
    actor: Annotated[Actor, allowed(Permission.USERS_READ)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return _user(application, uow, application.users.read_user(uow, actor, user_id))


def _manage(application: Any, uow: Any, user_id: str, step: Any) -> dict[str, Any]:
    step()
    with application.uow() as fresh:
        return _user(application, fresh, application.users.get(fresh, user_id))


@router.post("/users/{user_id}/deactivate", response_model=UserOut)
def deactivate(
    user_id: str,
    body: ReasonBody,
    actor: Annotated[Actor, allowed(Permission.USERS_MANAGE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """The account can no longer log in, use a token or sign; nothing is deleted."""
    return _manage(
        application,
        uow,
        user_id,
        lambda: application.users.deactivate(uow, actor, user_id, reason=body.reason),
    )


@router.post("/users/{user_id}/reactivate", response_model=UserOut)
def reactivate(
    user_id: str,
    body: ReasonBody,
    actor: Annotated[Actor, allowed(Permission.USERS_MANAGE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return _manage(
        application,
        uow,
        user_id,
        lambda: application.users.reactivate(uow, actor, user_id, reason=body.reason),
    )


@router.post("/users/{user_id}/unlock", response_model=UserOut)
def unlock(
    user_id: str,
    body: ReasonBody,
    actor: Annotated[Actor, allowed(Permission.USERS_MANAGE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return _manage(
        application,
        uow,
        user_id,
        lambda: application.users.unlock(uow, actor, user_id, reason=body.reason),
    )


@router.post("/users/{user_id}/roles", response_model=UserOut)
def change_roles(
    user_id: str,
    body: RolesIn,
    actor: Annotated[Actor, allowed(Permission.USERS_MANAGE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Grant and/or revoke roles, with a reason; audited with the old and new role lists."""
    return _manage(
        application,
        uow,
        user_id,
        lambda: application.users.change_roles(
            uow, actor, user_id, grant=body.grant, revoke=body.revoke, reason=body.reason
        ),
    )


@router.post("/users/{user_id}/password", response_model=UserOut)
def reset_password(
    user_id: str,
    body: ResetPasswordIn,
    actor: Annotated[Actor, allowed(Permission.USERS_MANAGE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Set a temporary password (the user must change it at the next login)."""
    return _manage(
        application,
        uow,
        user_id,
        lambda: application.users.reset_password(
            uow, actor, user_id, password=body.password, reason=body.reason
        ),
    )


@router.post("/users/{user_id}/totp/reset", response_model=UserOut)
def reset_totp(
    user_id: str,
    body: ReasonBody,
    actor: Annotated[Actor, allowed(Permission.USERS_MANAGE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    return _manage(
        application,
        uow,
        user_id,
        lambda: application.users.reset_totp(uow, actor, user_id, reason=body.reason),
    )


@router.get("/security/alerts", response_model=list[SecurityAlertOut])
def security_alerts(
    actor: Annotated[Actor, allowed(Permission.USERS_READ)], application: AppDep, uow: UowDep
) -> list[dict[str, Any]]:
    """Security alerts (accounts locked after failed attempts), newest first."""
    return [alert_dict(a) for a in application.users.alerts(uow, actor)]


# --- separation of duties: requests a second administrator approves ---------------------------
@router.post("/users/{user_id}/grant-requests", status_code=201, response_model=ApprovalOut)
def request_grant(
    user_id: str,
    body: GrantRequestIn,
    actor: Annotated[Actor, allowed(Permission.USERS_MANAGE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """Ask for qp or admin to be granted; it applies when another administrator of the
    control site approves (POST /approvals/{id}/approve)."""
    row = application.users.request_grant(uow, actor, user_id, role=body.role, reason=body.reason)
    with application.uow() as fresh:
        return approval_out(application.users.requests_get(fresh, row.id))


@router.get("/approvals", response_model=list[ApprovalOut])
def list_approvals(
    actor: Annotated[Actor, allowed(Permission.USERS_READ)],
    application: AppDep,
    uow: UowDep,
    status: Annotated[str, Query(max_length=16)] = "pending",
) -> list[dict[str, Any]]:
    """Approval requests (qp/admin grants, QPs named to master files), newest first;
    `status`: pending (default), approved, refused or all."""
    wanted = None if status == "all" else status
    return [approval_out(r) for r in application.users.requests(uow, actor, wanted)]


def _decide(
    application: Any, uow: Any, actor: Actor, request_id: str, approve: bool, reason: str
) -> dict[str, Any]:
    row = application.users.decide_request(uow, actor, request_id, approve=approve, reason=reason)
    with application.uow() as fresh:
        return approval_out(application.users.requests_get(fresh, row.id))


@router.post("/approvals/{request_id}/approve", response_model=ApprovalOut)
def approve_request(
    request_id: str,
    body: ReasonBody,
    actor: Annotated[Actor, allowed(Permission.USERS_MANAGE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """A second administrator of the control site approves: the change applies now, in the
    same transaction (audited). Refused for the requester and the account it is about."""
    return _decide(application, uow, actor, request_id, True, body.reason)


@router.post("/approvals/{request_id}/refuse", response_model=ApprovalOut)
def refuse_request(
    request_id: str,
    body: ReasonBody,
    actor: Annotated[Actor, allowed(Permission.USERS_MANAGE)],
    application: AppDep,
    uow: UowDep,
) -> dict[str, Any]:
    """A second administrator of the control site refuses; nothing changes (audited)."""
    return _decide(application, uow, actor, request_id, False, body.reason)
