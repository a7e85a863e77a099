"""Bad input at the door (issue 12 items 11 and 15): bodies over their path's limit are refused
with 413 before anything parses them, whether they declare their length, lie about it or are
sent chunked; and every error the framework answers itself (unknown path, wrong method,
malformed JSON, wrong content type, invalid fields, JSON nested too deeply) has the one
documented shape `{"error": {"code", "field", "message"}}`. API and web forms, SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nearfab.api.limits import BodyLimit, BodyLimitMiddleware
from nearfab.bootstrap import App
from nearfab.orders import Order
from nearfab.web.server import create_web_app

from .. import flow_helpers as fh

seeded = fh.seeded

MB = 1024 * 1024


def error_of(r: Any) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "field", "message"}, body
    error: dict[str, Any] = body["error"]
    return error


@pytest.fixture
def client(seeded: App) -> TestClient:
    return TestClient(create_web_app(seeded), raise_server_exceptions=False)


def token(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body sent chunked (no Content-Length), made as it is sent."""
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b" " * n


def orders(app: App) -> int:
    with app.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(Order)) or 0


# --- the middleware alone: what it reads from the stream --------------------------------------
class Stream:
    """An ASGI receive that makes a 50 MB body as it is read, and counts what was read."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.read = total, chunk, 0

    async def __call__(self) -> dict[str, Any]:
        n = min(self.chunk, self.total - self.read)
        self.read += n
        return {"type": "http.request", "body": b"x" * n, "more_body": self.read < self.total}


def run(
    middleware: BodyLimitMiddleware, headers: list[tuple[bytes, bytes]], receive: Any
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/v1/auth/token", "headers": headers}
    asyncio.run(middleware(scope, receive, send))
    return sent


def test_the_middleware_stops_reading_at_the_limit_and_never_calls_the_app() -> None:
    called: list[bool] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        called.append(True)

    limit = 8 * 1024
    middleware = BodyLimitMiddleware(
        inner, limits=[BodyLimit(r"/api/v1/auth/.*", limit)], default=MB
    )
    # chunked, 50 MB: read up to the limit (plus the chunk that passed it), then 413
    stream = Stream(50 * MB)
    sent = run(middleware, [], stream)
    assert sent[0]["status"] == 413 and not called
    assert stream.read <= limit + stream.chunk
    assert b'"body_too_large"' in sent[1]["body"]
    # a lying Content-Length (10 bytes declared, 50 MB sent) is not trusted
    stream = Stream(50 * MB)
    sent = run(middleware, [(b"content-length", b"10")], stream)
    assert sent[0]["status"] == 413 and not called and stream.read <= limit + stream.chunk
    # a declared length over the limit is refused before one byte is read
    stream = Stream(50 * MB)
    sent = run(middleware, [(b"content-length", str(50 * MB).encode())], stream)
    assert sent[0]["status"] == 413 and stream.read == 0 and not called
    # within the limit, the app gets the whole body, once
    got: list[bytes] = []

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        got.append((await receive())["body"])

    small = BodyLimitMiddleware(echo, limits=[BodyLimit(r"/api/v1/auth/.*", limit)], default=MB)
    run(small, [], Stream(limit, chunk=1000))
    assert got == [b"x" * limit]


# --- through the application ----------------------------------------------------------------
def test_a_large_body_to_the_login_is_refused_before_any_login(client: TestClient) -> None:
    """50 MB to /auth/token without logging in was parsed: now 413 from the first 8 KiB."""
    r = client.post(
        "/api/v1/auth/token",
        content=b'{"username": "' + b"a" * (20 * 1024) + b'", "password": "x"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413, r.text
    assert error_of(r)["code"] == "body_too_large" and error_of(r)["field"] == "$"
    r = client.post(
        "/api/v1/auth/token",
        content=chunks(2 * MB),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and error_of(r)["code"] == "body_too_large"
    # and a normal login still works
    token(client, "clinician")


def test_an_oversized_prescription_is_refused_and_stores_nothing(
    seeded: App, client: TestClient
) -> None:
    h = token(client, "clinician")
    before = orders(seeded)
    limit = seeded.settings.prescription_max_body_bytes
    doc = fh.bundle(seeded)
    doc["entry"][1]["resource"]["note"] = [{"text": "x" * (limit + 1)}]
    r = client.post("/api/v1/orders", json=doc, headers=h)
    assert r.status_code == 413, r.text
    assert "prescription" in error_of(r)["message"] and str(limit) in error_of(r)["message"]
    r = client.post(
        "/api/v1/orders",
        content=chunks(3 * MB),
        headers={**h, "content-type": "application/fhir+json"},
    )
    assert r.status_code == 413, r.text
    assert orders(seeded) == before
    # without a token the body is refused by size too: nothing is read past the limit
    r = client.post("/api/v1/orders", content=chunks(3 * MB))
    assert r.status_code == 413


def test_web_form_posts_are_limited(seeded: App, client: TestClient) -> None:
    page = client.get("/login").text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found
    r = client.post(
        "/login",
        data={"username": "a" * (20 * 1024), "password": "x", "csrf_token": found.group(1)},
        follow_redirects=False,
    )
    assert r.status_code == 413 and error_of(r)["code"] == "body_too_large"
    # any other form: the default limit
    r = client.post(
        "/dispense",
        content=chunks(seeded.settings.max_body_bytes + 1),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413 and error_of(r)["code"] == "body_too_large"


# --- one error shape -------------------------------------------------------------------------
def test_every_framework_error_has_the_documented_shape(client: TestClient) -> None:
    h = token(client, "clinician")
    cases = [
        ("GET", "/api/v1/no-such-thing", {}, 404, None),
        ("DELETE", "/api/v1/auth/token", {}, 405, None),
        (
            "POST",
            "/api/v1/auth/token",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
            "$",
        ),
        (
            "POST",
            "/api/v1/auth/token",
            {"content": b"username=a", "headers": {"content-type": "text/plain"}},
            422,
            "$",
        ),
        ("POST", "/api/v1/auth/token", {"json": {"username": 1, "password": "x"}}, 422, "username"),
        (
            "POST",
            "/api/v1/orders",
            {"content": b"[" * 100_000, "headers": {**h, "content-type": "application/json"}},
            400,
            "$",
        ),
        ("GET", "/no-such-page", {}, 404, None),
    ]
    for method, path, kwargs, status, field in cases:
        r = client.request(method, path, **kwargs)
        assert r.status_code == status, (method, path, r.text)
        error = error_of(r)
        assert "detail" not in r.json()
        assert error["field"] == field, (method, path, error)
        assert error["message"], (method, path)
