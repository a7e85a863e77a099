"""Account pages: the TOTP step of a login, the forced password change, my account (password,
TOTP enrolment), user administration and security alerts (docs/accounts-and-signatures.md)."""

from __future__ import annotations

from typing import Annotated, Any

import segno
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from nearfab.api.accounts import alert_dict
from nearfab.api.deps import client_of, login_throttle
from nearfab.api.security import throttled
from nearfab.common.canonical import to_jsonable
from nearfab.common.errors import DomainError, NotFound, Unauthenticated, ValidationFailed
from nearfab.identity import Actor, Permission, Role, approval_dict, can
from nearfab.identity.services.approvals import is_network_admin
from nearfab.web.pages import (
    ActorOpt,
    _app,
    _check_csrf,
    _need_login,
    _safe_next,
    hidden,
    page,
    render,
)

router = APIRouter(include_in_schema=False)


def _qr_svg(uri: str) -> Markup:
    """The otpauth URI as an inline SVG QR code (no script, no remote image)."""
    svg = segno.make(uri, error="m").svg_inline(scale=4, dark="#000", light="#fff")
    return Markup(svg)


# --- the TOTP step of a login ----------------------------------------------------------------
@router.get("/login/totp", response_class=HTMLResponse)
def login_totp_page(request: Request) -> Response:
    if not request.session.get("sid"):
        return RedirectResponse("/login", status_code=303)
    return render(request, "login_totp.html", None, error=None)


@router.post("/login/totp")
def login_totp_submit(
    request: Request,
    code: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    application = _app(request)
    secret = str(request.session.get("sid") or "")
    try:
        _check_csrf(request, csrf_token)
        with application.uow() as uow:
            application.users.complete_totp(uow, secret, code)
    except DomainError as exc:
        if exc.code in ("session_expired", "account_locked"):
            request.session.clear()
            request.session["login_message"] = exc.message
            return RedirectResponse("/login", status_code=303)
        return render(
            request, "login_totp.html", None, error=exc.message, status_code=exc.http_status
        )
    target = _safe_next(str(request.session.pop("next", "/")))
    return RedirectResponse(target, status_code=303)


# --- password change without a session (expired or temporary password) -----------------------
def _change_password(
    request: Request,
    username: str,
    current_password: str,
    new_password: str,
    confirm_password: str,
    csrf_token: str,
    *,
    keep_session: str | None = None,
) -> None:
    """The password form, checked and applied; a wrong current password counts as a failed
    login, so it is throttled like one."""
    application = _app(request)
    _check_csrf(request, csrf_token)
    if new_password != confirm_password:
        raise ValidationFailed("the two new passwords differ", field="confirm_password")
    throttle = login_throttle(request)
    with throttled(throttle, username, client_of(request)), application.uow() as uow:
        application.users.change_password(
            uow, username, current_password, new_password, keep_session=keep_session
        )


@router.get("/password/change", response_class=HTMLResponse)
def password_change_page(request: Request, actor: ActorOpt) -> Response:
    return render(
        request,
        "password_change.html",
        actor,
        username=request.session.get("password_user", actor.username if actor else ""),
        message=request.session.pop("login_message", None),
        error=None,
    )


@router.post("/password/change")
def password_change_submit(
    request: Request,
    actor: ActorOpt,
    username: Annotated[str, Form()],
    current_password: Annotated[str, Form()],
    new_password: Annotated[str, Form()],
    confirm_password: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    try:
        _change_password(
            request, username, current_password, new_password, confirm_password, csrf_token
        )
    except DomainError as exc:
        return render(
            request,
            "password_change.html",
            actor,
            username=username,
            message=None,
            error=exc.message,
            status_code=exc.http_status,
        )
    request.session.clear()  # every session of the user ended with the change
    request.session["login_message"] = "Password changed. Log in with the new password."
    return RedirectResponse("/login", status_code=303)


# --- my account ------------------------------------------------------------------------------
def _account(request: Request, actor: Actor, **ctx: Any) -> HTMLResponse:
    application = _app(request)
    with application.uow() as uow:
        user = application.users.read_user(uow, actor, actor.user_id)
        account = application.users.describe(user, uow.clock.now())
    status_code = ctx.pop("status_code", 200)
    return render(
        request,
        "account.html",
        actor,
        account=account,
        message=request.session.pop("flash", None),
        status_code=status_code,
        **{"error": None, "enrolment": None, **ctx},
    )


@router.get("/account", response_class=HTMLResponse, dependencies=[page(Permission.PROFILE_READ)])
def account_page(request: Request, actor: ActorOpt) -> Response:
    if actor is None:
        return _need_login(request)
    return _account(request, actor)


@router.post("/account/password", dependencies=[page(Permission.PROFILE_READ)])
def account_password(
    request: Request,
    actor: ActorOpt,
    current_password: Annotated[str, Form()],
    new_password: Annotated[str, Form()],
    confirm_password: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    if actor is None:
        return _need_login(request)
    try:
        _change_password(
            request,
            actor.username,
            current_password,
            new_password,
            confirm_password,
            csrf_token,
            keep_session=actor.session_id,  # this session stays; the others end
        )
    except DomainError as exc:
        if isinstance(exc, Unauthenticated) and exc.code == "account_locked":
            request.session.clear()
            return RedirectResponse("/login", status_code=303)
        return _account(request, actor, error=exc.message, status_code=exc.http_status)
    request.session["flash"] = "Password changed; your other sessions have ended."
    return RedirectResponse("/account", status_code=303)


@router.post("/account/totp", dependencies=[page(Permission.PROFILE_READ)])
def account_totp_enrol(
    request: Request, actor: ActorOpt, csrf_token: Annotated[str, Form()] = ""
) -> Response:
    """Start enrolment: the secret is shown on this one answer only (never stored in the
    cookie, never shown again)."""
    if actor is None:
        return _need_login(request)
    application = _app(request)
    try:
        _check_csrf(request, csrf_token)
        with application.uow() as uow:
            secret, uri = application.users.enrol_totp(uow, actor)
    except DomainError as exc:
        return _account(request, actor, error=exc.message, status_code=exc.http_status)
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    return _account(request, actor, enrolment={"secret": grouped, "uri": uri, "qr": _qr_svg(uri)})


@router.post("/account/totp/confirm", dependencies=[page(Permission.PROFILE_READ)])
def account_totp_confirm(
    request: Request,
    actor: ActorOpt,
    code: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    if actor is None:
        return _need_login(request)
    application = _app(request)
    try:
        _check_csrf(request, csrf_token)
        with application.uow() as uow:
            application.users.confirm_totp(uow, actor, code)
    except DomainError as exc:
        return _account(
            request,
            actor,
            error=f"{exc.message}. Start the set-up again to see a new secret.",
            status_code=exc.http_status,
        )
    request.session["flash"] = "Authenticator enabled: log-ins now ask for its code."
    return RedirectResponse("/account", status_code=303)


# --- user administration ---------------------------------------------------------------------
def _forbidden(request: Request, actor: Actor, exc: DomainError) -> HTMLResponse:
    exc = hidden(exc)  # another site's account is answered as an unknown one
    return render(request, "not_found.html", actor, error=exc.message, status_code=exc.http_status)


def _admin_page(
    request: Request, name: str, actor: Actor, *, can_manage: bool, **ctx: Any
) -> HTMLResponse:
    """A user-administration page: the roles to pick from, whether the actor may change
    anything here, and the flash message left by the last action."""
    return render(
        request,
        name,
        actor,
        roles=[r.value for r in Role],
        can_manage=can_manage,
        message=request.session.pop("flash", None),
        error=None,
        **ctx,
    )


@router.get("/users", response_class=HTMLResponse, dependencies=[page(Permission.USERS_READ)])
def users_page(request: Request, actor: ActorOpt) -> Response:
    if actor is None:
        return _need_login(request)
    application = _app(request)
    try:
        with application.uow() as uow:
            now = uow.clock.now()
            found = application.users.list_users(uow, actor)
            users = [application.users.describe(u, now) for u in found]
            names = {u.id: u.username for u in found}
            requests = [
                {**approval_dict(r), "subject": names.get(r.subject_user_id, r.subject_user_id)}
                for r in application.users.requests(uow, actor, "pending")
            ]
            sites = application.network.list_sites(uow)
    except DomainError as exc:
        return _forbidden(request, actor, exc)
    return _admin_page(
        request,
        "users.html",
        actor,
        can_manage=can(actor, Permission.USERS_MANAGE),
        can_approve=is_network_admin(actor),
        users=users,
        requests=requests,
        site_names={s.id: f"{s.name} ({s.code})" for s in sites},
        # the new-account form offers only the sites this administrator may give an account to
        assignable=[s for s in sites if can(actor, Permission.USERS_MANAGE, site_id=s.id)],
        can_make_network=can(actor, Permission.USERS_MANAGE, site_id=None),
    )


@router.post("/users", dependencies=[page(Permission.USERS_MANAGE)])
def users_create(
    request: Request,
    actor: ActorOpt,
    username: Annotated[str, Form()],
    full_name: Annotated[str, Form()],
    password: Annotated[str, Form()],
    roles: Annotated[list[str], Form()],
    home_site_id: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    if actor is None:
        return _need_login(request)
    application = _app(request)
    try:
        _check_csrf(request, csrf_token)
        with application.uow() as uow:
            user = application.users.create_user(
                uow,
                actor,
                username=username.strip(),
                full_name=full_name,
                roles=roles,
                password=password,
                home_site_id=home_site_id or None,
            )
    except DomainError as exc:
        request.session["flash"] = f"Not created: {exc.message}"
        return RedirectResponse("/users", status_code=303)
    with application.uow() as uow:
        waiting = [r.role for r in application.users.pending_for(uow, user.id)]
    request.session["flash"] = (
        f"Account {user.username} created; the password is temporary (changed at first login)."
        + (
            f" Waiting for a second administrator's approval: {', '.join(map(str, waiting))}."
            if waiting
            else ""
        )
    )
    return RedirectResponse(f"/users/{user.id}", status_code=303)


@router.get(
    "/users/{user_id}", response_class=HTMLResponse, dependencies=[page(Permission.USERS_READ)]
)
def user_page(request: Request, user_id: str, actor: ActorOpt) -> Response:
    if actor is None:
        return _need_login(request)
    application = _app(request)
    try:
        with application.uow() as uow:
            user = application.users.read_user(uow, actor, user_id)
            account = application.users.describe(user, uow.clock.now())
            sessions = [
                to_jsonable(
                    {
                        "id": s.id,
                        "kind": s.kind,
                        "created_at": s.created_at,
                        "last_used_at": s.last_used_at,
                        "ended_at": s.ended_at,
                        "end_reason": s.end_reason,
                    }
                )
                for s in application.users.sessions(uow, actor, user_id)[:20]
            ]
            requests = [
                {**approval_dict(r), "subject": user.username}
                for r in application.users.pending_for(uow, user.id)
            ]
            home = (
                application.network.get_site(uow, user.home_site_id) if user.home_site_id else None
            )
    except (NotFound, DomainError) as exc:
        return _forbidden(request, actor, exc)
    return _admin_page(
        request,
        "user.html",
        actor,
        can_manage=can(actor, Permission.USERS_MANAGE, site_id=account["home_site_id"]),
        can_approve=is_network_admin(actor),
        account=account,
        home_site_name=f"{home.name} ({home.code})" if home else None,
        sessions=sessions,
        requests=requests,
    )


@router.post(
    "/users/approvals/{request_id}/{decision}", dependencies=[page(Permission.USERS_MANAGE)]
)
def approval_decision(
    request: Request,
    request_id: str,
    decision: str,
    actor: ActorOpt,
    reason: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """A second administrator of the control site approves or refuses a request."""
    if actor is None:
        return _need_login(request)
    if decision not in ("approve", "refuse"):
        return _forbidden(request, actor, NotFound(f"no decision {decision!r}", field="decision"))
    application = _app(request)
    try:
        _check_csrf(request, csrf_token)
        with application.uow() as uow:
            row = application.users.decide_request(
                uow, actor, request_id, approve=decision == "approve", reason=reason
            )
    except DomainError as exc:
        request.session["flash"] = f"Refused: {exc.message}"
        return RedirectResponse("/users", status_code=303)
    request.session["flash"] = f"Request {row.id} {row.status}."
    return RedirectResponse("/users", status_code=303)


_ACTIONS = {"deactivate", "reactivate", "unlock", "roles", "password", "totp-reset"}


@router.post("/users/{user_id}/{action}", dependencies=[page(Permission.USERS_MANAGE)])
def user_action(
    request: Request,
    user_id: str,
    action: str,
    actor: ActorOpt,
    reason: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    grant: Annotated[list[str] | None, Form()] = None,
    revoke: Annotated[list[str] | None, Form()] = None,
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    if actor is None:
        return _need_login(request)
    if action not in _ACTIONS:
        return _forbidden(request, actor, NotFound(f"no action {action!r}", field="action"))
    application = _app(request)
    users = application.users
    try:
        _check_csrf(request, csrf_token)
        with application.uow() as uow:
            if action == "deactivate":
                users.deactivate(uow, actor, user_id, reason=reason)
            elif action == "reactivate":
                users.reactivate(uow, actor, user_id, reason=reason)
            elif action == "unlock":
                users.unlock(uow, actor, user_id, reason=reason)
            elif action == "roles":
                users.change_roles(
                    uow, actor, user_id, grant=grant or [], revoke=revoke or [], reason=reason
                )
            elif action == "password":
                users.reset_password(uow, actor, user_id, password=password, reason=reason)
            else:
                users.reset_totp(uow, actor, user_id, reason=reason)
    except DomainError as exc:
        request.session["flash"] = f"Refused: {exc.message}"
        return RedirectResponse(f"/users/{user_id}", status_code=303)
    with application.uow() as uow:
        waiting = [str(r.role) for r in users.pending_for(uow, user_id) if r.role]
    request.session["flash"] = f"Done: {action.replace('-', ' ')}." + (
        f" Waiting for a second administrator's approval: {', '.join(waiting)}."
        if action == "roles" and waiting
        else ""
    )
    return RedirectResponse(f"/users/{user_id}", status_code=303)


@router.get(
    "/security/alerts", response_class=HTMLResponse, dependencies=[page(Permission.USERS_READ)]
)
def alerts_page(request: Request, actor: ActorOpt) -> Response:
    if actor is None:
        return _need_login(request)
    application = _app(request)
    try:
        with application.uow() as uow:
            alerts = [alert_dict(a) for a in application.users.alerts(uow, actor)]
    except DomainError as exc:
        return _forbidden(request, actor, exc)
    return render(request, "users_alerts.html", actor, alerts=alerts)
