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
        (b'{"site_id": "GSTT\\u0000"}', "body.site_id"),
        (b'{"items": [{"name": "a"}, {"name": "b\\u0000c"}]}', "body.items.1.name"),
        (b'{"a\\u0000b": 1}', "body.ab"),
        (b"name=a%00b", "body"),  # a form body
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
        "field": "body.username",
        "message": "text cannot hold a NUL character",
    }
