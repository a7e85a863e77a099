"""Request body limits, per path, enforced before anything parses the body (issue 12 item 11).

An ASGI middleware, outermost: a declared Content-Length above the path's limit is answered
413 at once, without reading; otherwise the body is read from the stream with a running count
(chunked bodies and lying Content-Length headers included) and refused with 413 the moment it
passes the limit. Only a body within its limit is handed on, so no route ever holds more than
its limit in memory. The answer has the documented error shape
`{"error": {"code": "body_too_large", "field": "$", "message": ...}}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from nearfab.api.errors import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class BodyLimit:
    """Bodies sent to paths matching `pattern` (a full-match regular expression) may hold at
    most `max_bytes` bytes."""

    pattern: str
    max_bytes: int
    what: str = "the request body"


def body_limits(settings: Any) -> list[BodyLimit]:
    """The product's limits, first match wins (docs/prescriptions.md, docs/security.md)."""
    credentials = settings.credentials_max_body_bytes
    return [
        # credentials: nothing legitimate is longer; parsed before any login is known
        BodyLimit(r"/api/v1/auth/.*", credentials, "a login or password request"),
        BodyLimit(r"/api/v1/me/(password|totp.*)", credentials, "a password or TOTP request"),
        BodyLimit(r"/(login|login/totp|logout|password/change)", credentials, "a login form"),
        BodyLimit(r"/account/.*", credentials, "an account form"),
        BodyLimit(r"/api/v1/orders", settings.prescription_max_body_bytes, "a prescription"),
        BodyLimit(r"/(api/v1/)?epcis/capture", settings.bulk_max_body_bytes, "an EPCIS document"),
    ]


def too_large(limit: int, what: str) -> dict[str, Any]:
    return error_body(
        "body_too_large", "$", f"{what} may hold at most {limit} bytes; this one is larger"
    )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, limits: Sequence[BodyLimit], default: int) -> None:
        self.app = app
        self.limits = [(re.compile(rule.pattern), rule) for rule in limits]
        self.default = default

    def _limit_for(self, path: str) -> tuple[int, str]:
        for pattern, rule in self.limits:
            if pattern.fullmatch(path):
                return rule.max_bytes, rule.what
        return self.default, "the request body"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, what = self._limit_for(scope.get("path", ""))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, limit, what)
            return
        # read the body here, counting as it comes: never more than `limit` bytes are held
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                chunks.clear()
                await _refuse(send, limit, what)
                return
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        nul = nul_field(body) if _is_text_body(scope) else None
        if nul is not None:
            # PostgreSQL text cannot hold NUL: refused as bad input naming where, not a 500 later
            await _send_json(
                send, 422, error_body("validation_failed", nul, "text cannot hold a NUL character")
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only a disconnect can come

        await self.app(scope, replay, send)


# secrets are hashed or compared, never stored as text: the identity service judges them
# itself (a NUL in a password is its `password_bad_character`, issue 12)
SECRET_KEYS = frozenset({"password", "current_password", "new_password", "confirm_password"})


def nul_field(body: bytes) -> str | None:
    """Where a JSON or form body holds a NUL character (raw, JSON-escaped or form-encoded), as
    the field a refusal names (`site_id`, `items.2.name`; `$` when it cannot tell); None when
    it holds none outside the secrets (`SECRET_KEYS`)."""
    # JSON writes the escape with a lower-case u only (an upper-case one is not JSON): no
    # lower-cased copy of every body is needed
    if b"\x00" not in body and b"\\u0000" not in body and b"%00" not in body:
        return None
    try:
        document: Any = json.loads(body)
    except ValueError:
        try:
            document = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            return "$"

    def walk(value: Any, path: str) -> str | None:
        if isinstance(value, str):
            return path or "$" if "\x00" in value else None
        items: Any = ()
        if isinstance(value, dict):
            for key in value:
                if "\x00" in key:
                    return ".".join(filter(None, (path, key.replace(chr(0), ""))))
            items = ((k, v) for k, v in value.items() if k not in SECRET_KEYS)
        elif isinstance(value, list):
            items = enumerate(value)
        for key, item in items:
            found = walk(item, ".".join(filter(None, (path, str(key)))))
            if found is not None:
                return found
        return None

    return walk(document, "")


def _is_text_body(scope: Scope) -> bool:
    """JSON and form bodies: what ends up in text columns (a file upload may hold any byte)."""
    for name, value in scope.get("headers") or []:
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind in (b"application/json", b"application/x-www-form-urlencoded")
    return True


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # counted from the stream instead
    return None


async def _refuse(send: Send, limit: int, what: str) -> None:
    await _send_json(send, 413, too_large(limit, what))


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
