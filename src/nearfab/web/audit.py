"""Audit-trail review pages: rows per site (filters, pages), one record's trail with its
signatures and exports, and the hash-chain check."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from nearfab.api.deps import attachment
from nearfab.common.errors import DomainError, ValidationFailed
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    can,
    can_network,
    search_audit,
    verify_audit_chain,
    visible_sites,
)
from nearfab.network import Site
from nearfab.recordexport import entry_dict, export_record, record_view
from nearfab.web.pages import _app, hidden, human, page, render

router = APIRouter(include_in_schema=False)
PAGE = 50

# --- an audit row for people: its action in words, its before/after as a compact diff ------
# every AuditAction in words, in one place (the filter's list and the table's column)
ACTION_WORDS: dict[str, str] = {
    AuditAction.CREATE: "created",
    AuditAction.UPDATE: "updated",
    AuditAction.TRANSITION: "status changed",
    AuditAction.REFUSE: "refused",
    AuditAction.SIGN: "signed",
    AuditAction.LOGIN: "logged in",
    AuditAction.LOGIN_FAILED: "log-in failed",
    AuditAction.LOGOUT: "logged out",
    AuditAction.SESSION_EXPIRED: "session expired",
    AuditAction.DEACTIVATE: "account deactivated",
    AuditAction.REACTIVATE: "account reactivated",
    AuditAction.LOCK: "account locked",
    AuditAction.UNLOCK: "account unlocked",
    AuditAction.ROLES_CHANGE: "roles changed",
    AuditAction.PASSWORD_CHANGE: "password changed",
    AuditAction.PASSWORD_RESET: "password reset",
    AuditAction.TOTP_ENROL: "authenticator set up",
    AuditAction.TOTP_ENABLE: "authenticator enabled",
    AuditAction.TOTP_RESET: "authenticator reset",
    AuditAction.SIGN_FAILED: "signature failed",
}
ABSENT = "—"  # a key the row did not have before (or no longer has after)
LONGEST = 120  # a value longer than this is cut (the record page and exports keep it whole)


def action_words(action: str, entity_type: str, new: dict[str, Any] | None) -> str:
    """`transition` of a batch to `released` -> "Batch released"; `create` of a master file
    -> "Master file created"; an action nobody named is shown as words."""
    thing = human(entity_type).strip() or "Record"
    thing = thing[:1].upper() + thing[1:]
    status = (new or {}).get("status")
    if action == AuditAction.TRANSITION and isinstance(status, str) and status:
        return f"{thing} {human(status)}"
    return f"{thing} {ACTION_WORDS.get(action, human(action))}"


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= LONGEST else text[: LONGEST - 1] + "…"


def field_diff(
    old: dict[str, Any] | None, new: dict[str, Any] | None, prefix: str = ""
) -> list[tuple[str, str, str]]:
    """The changed keys only, as (key, before, after) strings: nested objects are followed
    (`lab_results.ph`), lists and values compared whole; a key missing on one side is
    `ABSENT`. Keys in the order the row gives them (before's, then the new ones)."""
    old, new = old or {}, new or {}
    out: list[tuple[str, str, str]] = []
    for key in [*old, *(k for k in new if k not in old)]:
        name = f"{prefix}{key}"
        before, after = old.get(key, ABSENT), new.get(key, ABSENT)
        if key in old and key in new and before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            out.extend(field_diff(before, after, f"{name}."))
            continue
        out.append(
            (
                name,
                ABSENT if key not in old else _shown(before),
                ABSENT if key not in new else _shown(after),
            )
        )
    return out


def _readable(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "action_words": action_words(row["action"], row["entity_type"], row.get("new")),
        "changes": [
            (k, _status_words(k, before), _status_words(k, after))
            for k, before, after in field_diff(row.get("old"), row.get("new"))
        ],
    }


def _status_words(key: str, value: str) -> str:
    """A status is shown as words (`on_hold` -> `on hold`); other values as recorded."""
    return human(value) if key.split(".")[-1].endswith("status") and value != ABSENT else value


def _moment(value: str, field: str) -> datetime | None:
    """A time typed in the form (datetime-local: UTC, as the page says) or ISO with a zone."""
    if not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(f"{field}: not a date and time ({value!r})", field=field) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    actor: Annotated[Actor, page(Permission.AUDIT_READ)],
    site_id: str = "",
    since: str = "",
    until: str = "",
    who: str = "",
    action: str = "",
    entity_type: str = "",
    entity_id: str = "",
    page: int = 1,
) -> Response:
    application = _app(request)
    rows: list[dict[str, Any]] = []
    total, error, status = 0, None, 200
    page = max(page, 1)
    with application.uow() as uow:
        sites = list(uow.session.scalars(select(Site).order_by(Site.code)))
    seen = visible_sites(actor)
    if seen is not None:
        sites = [s for s in sites if s.id in seen]
    try:
        with application.uow() as uow:
            found, total = search_audit(
                uow,
                actor,
                site_id=site_id or None,
                since=_moment(since, "since"),
                until=_moment(until, "until"),
                who=who or None,
                action=action or None,
                entity_type=entity_type or None,
                entity_id=entity_id or None,
                limit=PAGE,
                offset=(page - 1) * PAGE,
            )
            rows = [_readable(entry_dict(r)) for r in found]
    except DomainError as exc:
        error, status = exc.message, exc.http_status
    query = {
        k: v
        for k, v in {
            "site_id": site_id,
            "since": since,
            "until": until,
            "who": who,
            "action": action,
            "entity_type": entity_type,
            "entity_id": entity_id,
        }.items()
        if v
    }
    pages = max(1, -(-total // PAGE))
    return render(
        request,
        "audit.html",
        actor,
        rows=rows,
        total=total,
        page=page,
        pages=pages,
        prev_url=f"/audit?{urlencode({**query, 'page': page - 1})}" if page > 1 else None,
        next_url=f"/audit?{urlencode({**query, 'page': page + 1})}" if page < pages else None,
        f=query,
        sites=sites,
        actions=ACTION_WORDS,
        site_names={s.id: s.code for s in sites},
        can_verify=can_network(actor, Permission.AUDIT_VERIFY),
        error=error,
        status_code=status,
    )


@router.get("/audit/verify", response_class=HTMLResponse)
def audit_verify_page(
    request: Request, actor: Annotated[Actor, page(Permission.AUDIT_VERIFY)]
) -> Response:
    application = _app(request)
    try:
        with application.uow() as uow:
            report = verify_audit_chain(uow, actor)
    except DomainError as exc:
        shown = hidden(exc)  # another site's record is answered as an unknown one
        return render(
            request, "not_found.html", actor, error=shown.message, status_code=shown.http_status
        )
    return render(request, "audit_verify.html", actor, report=report)


@router.get("/audit/records/{entity_type}/{entity_id}", response_class=HTMLResponse)
def audit_record_page(
    request: Request,
    entity_type: str,
    entity_id: str,
    actor: Annotated[Actor, page(Permission.AUDIT_READ)],
) -> Response:
    application = _app(request)
    try:
        with application.uow() as uow:
            view = record_view(application, uow, actor, entity_type, entity_id)
    except DomainError as exc:
        shown = hidden(exc)  # another site's record is answered as an unknown one
        return render(
            request, "not_found.html", actor, error=shown.message, status_code=shown.http_status
        )
    view = {**view, "audit_trail": [_readable(r) for r in view["audit_trail"]]}
    return render(
        request,
        "audit_record.html",
        actor,
        view=view,
        can_export=can(actor, Permission.RECORD_EXPORT, site_id=view["site_id"]),
    )


@router.get("/audit/records/{entity_type}/{entity_id}/export")
def audit_record_export(
    request: Request,
    entity_type: str,
    entity_id: str,
    actor: Annotated[Actor, page(Permission.RECORD_EXPORT)],
    format: str = "pdf",
) -> Response:
    application = _app(request)
    try:
        with application.uow() as uow:
            body, media_type, name = export_record(
                application, uow, actor, entity_type, entity_id, format
            )
    except DomainError as exc:
        shown = hidden(exc)  # another site's record is answered as an unknown one
        return render(
            request, "not_found.html", actor, error=shown.message, status_code=shown.http_status
        )
    return Response(
        content=body,
        media_type=media_type,
        headers=attachment(name),
    )
