"""Security headers on every answer, and the throttle on password guessing (web and API)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from tests import flow_helpers as fh

from nearfab.api.security import CSP, LoginThrottle
from nearfab.bootstrap import App
from nearfab.web.server import create_web_app

seeded = fh.seeded


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found
    return found.group(1)


def test_every_answer_carries_the_security_headers(seeded: App) -> None:
    client = TestClient(create_web_app(seeded))
    for path in ("/login", "/api/v1/openapi.json", "/api/v1/me", "/static/app.css"):
        response = client.get(path)
        assert response.headers["content-security-policy"] == CSP, path
        assert "script-src 'self';" in CSP and "connect-src 'self'" in CSP  # nothing off-site
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert client.get("/login").headers["cache-control"] == "no-store"
    assert client.get("/static/app.css").headers.get("cache-control") != "no-store"


def test_templates_have_no_inline_scripts() -> None:
    """The CSP forbids inline scripts; a template that had one would break in the browser."""
    from pathlib import Path

    import nearfab.web

    folder = Path(nearfab.web.__file__).parent / "templates"
    for template in folder.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), template.name
        assert not re.search(r"\son[a-z]+=", text), template.name


def login(client: TestClient, password: str) -> int:
    token = csrf_of(client.get("/login").text)
    return client.post(
        "/login",
        data={"username": "qp", "password": password, "csrf_token": token},
        follow_redirects=False,
    ).status_code


def test_repeated_failed_logins_are_held_back_then_allowed_again(seeded: App) -> None:
    web = create_web_app(seeded)
    now = [1000.0]  # the throttle's clock, moved by hand: the test does not race the machine
    web.state.login_throttle = LoginThrottle(limit=3, window_s=300, clock=lambda: now[0])
    client = TestClient(web)
    assert [login(client, "wrong") for _ in range(3)] == [401, 401, 401]
    now[0] += 299  # still inside the 300 s window
    assert login(client, fh.TEST_PASSWORD) == 429  # even the right password waits
    page = client.get("/login")  # the page says why (rendered on the refused post)
    assert page.status_code == 200
    now[0] += 2  # the first failure is now 301 s old, the window has passed
    assert login(client, fh.TEST_PASSWORD) == 303


def test_api_tokens_are_throttled_the_same_way(seeded: App) -> None:
    web = create_web_app(seeded)
    web.state.login_throttle = LoginThrottle(limit=2, window_s=60)
    client = TestClient(web)
    bad = {"username": "pharmacist", "password": "nope"}
    assert [client.post("/api/v1/auth/token", json=bad).status_code for _ in range(2)] == [
        401,
        401,
    ]
    refused = client.post(
        "/api/v1/auth/token", json={"username": "pharmacist", "password": fh.TEST_PASSWORD}
    )
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_attempts"
    # another user is not held back by someone else's failures
    other = client.post("/api/v1/auth/token", json={"username": "qp", "password": fh.TEST_PASSWORD})
    assert other.status_code == 200


def test_nul_characters_in_path_or_query_are_bad_input_not_a_server_error(seeded: App) -> None:
    """Found by Schemathesis: PostgreSQL text cannot hold NUL, and a huge offset overflowed
    SQLite's integers; both now answer 422 naming the field."""
    client = TestClient(create_web_app(seeded))
    token = client.post(
        "/api/v1/auth/token", json={"username": "auditor", "password": fh.TEST_PASSWORD}
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    for url in ("/api/v1/audit?site_id=%00x", "/api/v1/orders/ord%00x", "/login?next=%00"):
        r = client.get(url, headers=headers)
        assert r.status_code == 422, (url, r.status_code)
        assert r.json()["error"]["code"] == "validation_failed"
    r = client.get("/api/v1/audit", params={"offset": 10**30}, headers=headers)
    assert r.status_code == 422 and r.json()["error"]["field"] == "offset"
    assert client.get("/api/v1/audit", params={"offset": 5}, headers=headers).status_code == 200


def test_download_names_from_the_request_are_made_safe(seeded: App) -> None:
    """Found by Schemathesis: a machine id outside latin-1 went into the CSV's file name and
    the header could not be encoded (500). Names are now reduced to safe characters."""
    client = TestClient(create_web_app(seeded))
    token = client.post(
        "/api/v1/auth/token", json={"username": "qp", "password": fh.TEST_PASSWORD}
    ).json()["access_token"]
    r = client.get(
        "/api/v1/telemetry/export.csv",
        params={"machine_id": 'H\U00062285"\r\nX-Evil: 1'},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code < 500
    disposition = r.headers.get("content-disposition", "")
    assert "x-evil" not in {k.lower() for k in r.headers}
    assert re.fullmatch(r'attachment; filename="[A-Za-z0-9._-]+"', disposition) or not disposition


def test_numbers_out_of_range_are_bad_input(seeded: App) -> None:
    """Found by Schemathesis: huge path numbers overflowed SQLite's integers (500)."""
    client = TestClient(create_web_app(seeded))
    token = client.post(
        "/api/v1/auth/token", json={"username": "qp", "password": fh.TEST_PASSWORD}
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    for url in (
        "/api/v1/plan/-2426836912319303778304",
        "/api/v1/plan/99999999999999999999999",
        "/api/v1/trace/master-files/X/99999999999999999999999",
    ):
        r = client.get(url, headers=headers)
        assert r.status_code == 422, (url, r.status_code, r.text)
    body = {"older_than_days": 4273991872699653, "reason": "x"}
    r = client.post("/api/v1/telemetry/retention", json=body, headers=headers)
    assert r.status_code == 422 and r.json()["error"]["field"] == "older_than_days"
