"""FastAPI dependencies: the App, the unit of work, the authenticated actor; error mapping."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nearfab.api.security import LoginThrottle, client_address, parse_proxies
from nearfab.bootstrap import App
from nearfab.common.errors import DomainError, Unauthenticated
from nearfab.identity import Actor, Permission, authorize_declared
from nearfab.uow import UnitOfWork

bearer = HTTPBearer(auto_error=False)


async def get_app(request: Request) -> App:
    """The App (async: FastAPI runs a plain `def` dependency on a worker thread, a hop that
    costs more than this attribute read)."""
    application: App = request.app.state.nearfab
    return application


AppDep = Annotated[App, Depends(get_app)]


def get_uow(application: AppDep) -> Iterator[UnitOfWork]:
    with application.uow() as uow:
        yield uow


UowDep = Annotated[UnitOfWork, Depends(get_uow)]


def get_actor(
    application: AppDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    if credentials is None:
        raise Unauthenticated("a bearer token is required (POST /api/v1/auth/token)")
    with application.uow() as uow:
        return application.users.actor_for_token(uow, credentials.credentials, kind="api")


ActorDep = Annotated[Actor, Depends(get_actor)]


def allowed(permission: Permission, *, gate: bool = True) -> Any:
    """A route's declared permission: refuses a role the matrix does not allow (and, for a
    network-level permission, a grant that does not reach the network) before the request
    body is even read. The service checks again, with the record's site; the
    route-matrix test (tests/identity/test_route_matrix.py) reads this declaration.
    `gate=False` leaves the refusal to the service, for use cases whose refused attempts are
    themselves records (a QP decision: 21 CFR 11.300)."""

    async def dependency(actor: ActorDep) -> Actor:  # no I/O: no worker-thread hop
        if gate:
            authorize_declared(actor, permission)
        return actor

    dependency.permission = permission  # type: ignore[attr-defined]
    return Depends(dependency)


def _declared(web: Any, *, api: bool) -> list[tuple[str, str, Permission | None]]:
    """(method, path, declared permission) of the app's /api routes (`api`) or of its other
    routes, the web pages. FastAPI 0.16x keeps included routers as objects of their own; ours
    carry their prefix and are included without one. A permission is declared by a dependency
    that carries it: `allowed` for the API, `web.pages.page` for the pages."""

    def flat(routes: list[Any]) -> Iterator[Any]:
        for route in routes:
            inner = getattr(route, "original_router", None)
            yield from flat(inner.routes) if inner is not None else [route]

    def walk(dependant: Any) -> Iterator[Any]:
        for sub in dependant.dependencies:
            yield sub
            yield from walk(sub)

    found = []
    for route in flat(web.routes):
        if not isinstance(route, APIRoute) or route.path.startswith("/api/") is not api:
            continue
        declared = next(
            (p for d in walk(route.dependant) if (p := getattr(d.call, "permission", None))),
            None,
        )
        for method in sorted((route.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((method, route.path, declared))
    return found


def declared_permissions(web: Any) -> list[tuple[str, str, Permission | None]]:
    """(method, path, declared permission) of every /api route of a FastAPI app: what the
    route-matrix test and the Schemathesis run read."""
    return _declared(web, api=True)


def declared_pages(web: Any) -> list[tuple[str, str, Permission | None]]:
    """(method, path, declared permission) of every web page and form route (everything
    outside /api): what the route-matrix test reads for the pages."""
    return _declared(web, api=False)


async def domain_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
    return JSONResponse(
        status_code=exc.http_status, content={"error": exc.to_dict()}, headers=headers
    )


async def request_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Malformed request bodies answer in the same shape as every other error."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return JSONResponse(
            status_code=422,
            content={
                "error": {
                    "code": "validation_failed",
                    "field": "$",
                    "message": f"the request body is not valid JSON ({first.get('msg')})",
                }
            },
        )
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    field = ".".join(loc) or None
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    return JSONResponse(
        status_code=422,
        content={"error": {"code": "validation_failed", "field": field, "message": message}},
    )


async def overflow_handler(_request: Request, exc: Exception) -> JSONResponse:
    """A number too large for the database (or a C integer) is the caller's error: 422, not
    a server error. Bounds on each field catch it first; this is the net under them."""
    return JSONResponse(
        status_code=422,
        content={
            "error": {
                "code": "validation_failed",
                "field": None,
                "message": f"a number in the request is out of range ({exc})",
            }
        },
    )


def login_throttle(request: Request) -> LoginThrottle:
    """The app's throttle on password guessing (a fresh one if the app was built without)."""
    throttle = getattr(request.app.state, "login_throttle", None)
    if throttle is None:
        throttle = request.app.state.login_throttle = LoginThrottle()
    return throttle


def client_of(request: Request) -> str:
    """The client address the login throttle counts: X-Forwarded-For is believed only from a
    proxy named in NEARFAB_TRUSTED_PROXIES (api.security.client_address)."""
    proxies = getattr(request.app.state, "trusted_proxies", None)
    if proxies is None:
        application = getattr(request.app.state, "nearfab", None)
        setting = application.settings.trusted_proxies if application is not None else ""
        proxies = request.app.state.trusted_proxies = parse_proxies(setting)
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), proxies)


def attachment(name: str) -> dict[str, str]:
    """A download's Content-Disposition header. The name may come from a path or query
    parameter: only letters, digits, dot, dash and underscore survive (a header is latin-1,
    and quotes or line breaks must never reach it)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:120].strip("._") or "download"
    return {"Content-Disposition": f'attachment; filename="{safe}"'}
