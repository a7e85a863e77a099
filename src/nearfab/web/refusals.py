"""Refusals as pages: a person in a browser never sees the API's raw JSON error.

The API keeps its one error shape (`{"error": {...}}`, api/errors.py). A request outside /api
from a browser (one that accepts text/html) gets the same refusal as a styled page in plain
words instead: what was refused, the field at fault and why, with the same status code (403,
404, 409, 422...). A script or test that does not ask for HTML keeps the JSON.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from nearfab.api.deps import domain_error_handler
from nearfab.api.errors import http_error_handler, validation_error_handler
from nearfab.common.errors import DomainError
from nearfab.web.pages import hidden, render, web_actor

TITLES = {
    400: "Not understood",
    401: "Log in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "Not done: it conflicts with the record",
    413: "Too large",
    422: "Not accepted",
    423: "Locked",
    429: "Too many attempts",
}


def wants_page(request: Request) -> bool:
    """A browser's request for a page (not the API, not a script asking for JSON)."""
    if request.url.path.startswith("/api/"):
        return False
    return "text/html" in request.headers.get("accept", "")


def _page(request: Request, status: int, message: str, field: str | None) -> Response:
    actor = None
    try:
        actor = web_actor(request)
    except Exception:
        actor = None
    words = f"{field.replace('_', ' ')}: {message}" if field and field not in message else message
    return render(
        request,
        "not_found.html",
        actor,
        title=TITLES.get(status, "Refused"),
        error=words,
        status_code=status,
    )


async def domain_error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    if not wants_page(request):
        return await domain_error_handler(request, exc)
    shown = hidden(exc)  # another site's record is answered as one that does not exist
    return _page(request, shown.http_status, shown.message, shown.field)


async def http_error_page(request: Request, exc: Any) -> Response:
    if not wants_page(request):
        return await http_error_handler(request, exc)
    status = int(getattr(exc, "status_code", 500))
    detail = getattr(exc, "detail", None)
    message = (
        detail
        if isinstance(detail, str) and status != 404
        else ("no such page" if status == 404 else TITLES.get(status, "refused"))
    )
    return _page(request, status, message, None)


async def validation_error_page(request: Request, exc: Exception) -> Response:
    if not wants_page(request):
        return await validation_error_handler(request, exc)
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    field = ".".join(loc) or None
    return _page(request, 422, str(first.get("msg", "invalid")), field)


def install_page_handlers(web: Any) -> None:
    """After `install_error_handlers`: the same refusals, as pages for browsers."""
    web.add_exception_handler(DomainError, domain_error_page)
    web.add_exception_handler(StarletteHTTPException, http_error_page)
    web.add_exception_handler(RequestValidationError, validation_error_page)
