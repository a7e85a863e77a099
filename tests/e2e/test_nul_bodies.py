"""A NUL character in a request body is bad input named by its field, never a server error:
PostgreSQL text cannot hold NUL (Schemathesis found a 500 on POST /material-lots), so the body
is checked before any route reads it (api/limits.py)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from nearfab.api.limits import nul_field
from nearfab.bootstrap import App


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"site_id": "GSTT\\u0000"}', "site_id"),
        (b'{"items": [{"name": "a"}, {"name": "b\\u0000c"}]}', "items.1.name"),
        (b'{"a\\u0000b": 1}', "ab"),
        (b"name=a%00b&reason=ok", "name"),  # a form body
        (b'"a\\u0000"', "$"),  # a bare JSON string
        # a password is hashed, never stored: the identity service refuses it by its own rule
        (b'{"username": "qp", "password": "x\\u0000"}', None),
        (b"current_password=x%00&new_password=y%00", None),
        (b'{"note": "100%00 sure"}', None),  # "%00" inside JSON text is no NUL
        (b'{"site_id": "GSTT"}', None),
    ],
)
def test_where_the_nul_is(body: bytes, field: str | None) -> None:
    assert nul_field(body) == field


def test_the_api_refuses_a_nul_in_a_body_naming_the_field(seeded: App) -> None:
    from nearfab.web.server import create_web_app

    client = TestClient(create_web_app(seeded))
    answer = client.post(
        "/api/v1/auth/token",
        content=b'{"username": "qp\\u0000", "password": "x"}',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 422
    assert answer.json()["error"] == {
        "code": "validation_failed",
        "field": "username",
        "message": "text cannot hold a NUL character",
    }
