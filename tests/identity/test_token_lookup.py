"""The bearer-token look-up every API request makes (identity/services/sessions.py): one
statement, nothing cached, so what an administrator or the user does to a session or an
account is refused on the very next request, in the process that made the change and in every
other server process. Attacked through the real HTTP app, several requests each, with two
apps on one database standing in for two server worker processes ("worker 1" makes the
change, "worker 2" serves the token before and after); both databases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.identity import User, UserSession
from nearfab.web.server import create_web_app

ME = "/api/v1/me"
ADMIN_REASON = {"reason": "left the pharmacy (ticket 4711)"}


@pytest.fixture
def workers(seeded: App, clock: ManualClock) -> Iterator[tuple[TestClient, TestClient, App]]:
    """Two web apps on the seeded database, each with its own App (engine, pool, caches), as
    two uvicorn worker processes would have; and the second App."""
    url = seeded.engine.url.render_as_string(hide_password=False)
    other = fh._build(url, seeded.settings.data_dir, clock)
    try:
        with (
            TestClient(create_web_app(seeded)) as one,
            TestClient(create_web_app(other)) as two,
        ):
            yield one, two, other
    finally:
        other.engine.dispose()


def bearer(client: TestClient, username: str) -> dict[str, str]:
    answer = client.post(
        "/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def user_id(client: TestClient, headers: dict[str, str]) -> str:
    answer = client.get(ME, headers=headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["user_id"])


def code(answer: Any) -> str:
    return str(answer.json()["error"]["code"])


def test_a_token_logged_out_on_one_worker_is_refused_by_the_other_at_once(
    workers: tuple[TestClient, TestClient, App],
) -> None:
    one, two, _ = workers
    token = bearer(one, "pharmacist")
    for _ in range(3):  # served by both workers, again and again
        assert two.get(ME, headers=token).status_code == 200
        assert one.get(ME, headers=token).status_code == 200
    assert one.post("/api/v1/auth/logout", headers=token).status_code == 200
    refused = two.get(ME, headers=token)
    assert refused.status_code == 401 and code(refused) == "session_invalid"
    assert refused.headers["www-authenticate"] == "Bearer"
    assert one.get(ME, headers=token).status_code == 401
    # the other session of the same user is untouched
    other = bearer(two, "pharmacist")
    assert two.get(ME, headers=other).status_code == 200


def test_a_deactivated_account_is_refused_on_its_next_request(
    workers: tuple[TestClient, TestClient, App],
) -> None:
    one, two, other = workers
    token = bearer(two, "pharmacist")
    victim = user_id(two, token)
    admin = bearer(one, "admin")
    answer = one.post(f"/api/v1/users/{victim}/deactivate", json=ADMIN_REASON, headers=admin)
    assert answer.status_code == 200, answer.text
    refused = two.get(ME, headers=token)
    assert refused.status_code == 401 and code(refused) == "session_invalid"
    # deactivation also ended the session; with only the account's flag set (a session
    # that did not end: direct SQL, or a race), the token is refused all the same
    reactivated = one.post(f"/api/v1/users/{victim}/reactivate", json=ADMIN_REASON, headers=admin)
    assert reactivated.status_code == 200, reactivated.text
    fresh = bearer(two, "pharmacist")
    assert two.get(ME, headers=fresh).status_code == 200
    with other.uow() as uow:  # the flag alone, as a writer other than the service would
        uow.session.get(User, victim).active = False  # type: ignore[union-attr]
        uow.commit()
    assert two.get(ME, headers=fresh).status_code == 401
    assert one.get(ME, headers=fresh).status_code == 401


def test_a_removed_grant_is_refused_on_the_next_request(
    workers: tuple[TestClient, TestClient, App],
) -> None:
    one, two, _ = workers
    token = bearer(two, "pharmacist")
    victim = user_id(two, token)
    scan = {"scan": "not a pack's code"}
    # allowed to verify: the route runs, and the service names what is wrong with the scan
    allowed = two.post("/api/v1/verify", json=scan, headers=token)
    assert allowed.status_code == 422 and allowed.json()["error"]["field"] == "scan", allowed.text
    admin = bearer(one, "admin")
    change = {"grant": ["clinician"], "revoke": ["pharmacist"], "reason": "moved to the ward"}
    answer = one.post(f"/api/v1/users/{victim}/roles", json=change, headers=admin)
    assert answer.status_code == 200, answer.text
    # the very next request on the other worker acts with the new roles: verification is a
    # pharmacist's, so it is refused before the route runs (403, not the scan's 422); the
    # token itself still works
    refused = two.post("/api/v1/verify", json=scan, headers=token)
    assert refused.status_code == 403, refused.text
    me = two.get(ME, headers=token)
    assert me.status_code == 200 and me.json()["roles"] == ["clinician"]


def test_a_locked_account_and_an_ended_session_are_refused_at_once(
    workers: tuple[TestClient, TestClient, App], seeded: App
) -> None:
    one, two, other = workers
    token = bearer(two, "pharmacist")
    victim = user_id(two, token)
    with seeded.uow() as uow:  # locked (by failed attempts elsewhere): the lockout's own mark
        seeded.users.get(uow, victim).locked_at = uow.clock.now()
        uow.commit()
    refused = two.get(ME, headers=token)
    assert refused.status_code == 401 and code(refused) == "account_locked"
    admin = bearer(one, "admin")
    answer = one.post(f"/api/v1/users/{victim}/unlock", json=ADMIN_REASON, headers=admin)
    assert answer.status_code == 200, answer.text
    assert two.get(ME, headers=token).status_code == 200
    # a session ended by any writer (here: directly, as an administrator's tool might)
    with other.uow() as uow:
        row = uow.session.scalar(
            select(UserSession).where(UserSession.user_id == victim, UserSession.ended_at.is_(None))
        )
        assert row is not None
        row.ended_at, row.end_reason = uow.clock.now(), "revoked"
        uow.commit()
    refused = two.get(ME, headers=token)
    assert refused.status_code == 401 and code(refused) == "session_invalid"


def test_an_idle_session_expires_on_every_worker_and_the_expiry_is_audited(
    workers: tuple[TestClient, TestClient, App], seeded: App, clock: ManualClock
) -> None:
    one, two, other = workers
    token = bearer(one, "pharmacist")
    victim = user_id(two, token)
    idle = other.users._sessions.policy.idle_timeout
    clock.advance(idle.total_seconds() - 60)  # used just in time: still good on both
    assert two.get(ME, headers=token).status_code == 200
    clock.advance(idle.total_seconds() - 60)  # idle since the last use, not since the login
    assert one.get(ME, headers=token).status_code == 200
    clock.advance(idle.total_seconds() + 1)
    refused = two.get(ME, headers=token)
    assert refused.status_code == 401 and code(refused) == "session_expired"
    assert one.get(ME, headers=token).status_code == 401
    with seeded.uow() as uow:
        ended = uow.session.scalars(
            select(UserSession.end_reason).where(UserSession.user_id == victim)
        ).all()
    assert ended == ["idle_timeout"]


def test_a_request_reads_its_token_in_one_statement(seeded: App) -> None:
    """The look-up is one statement: the session row joined to its user (before: the
    session, then the user). A second statement would be a regression the benchmark sees
    on every request (docs/performance.md, fifth pass)."""
    with seeded.uow() as uow:
        token, _user = seeded.users.issue_token(uow, "pharmacist", fh.TEST_PASSWORD)
    with seeded.uow() as uow:  # the site's kind is read once per process (it never changes)
        seeded.users.actor_for_token(uow, token, kind="api")
    statements: list[str] = []
    event.listen(
        seeded.engine, "before_cursor_execute", lambda _c, _cur, sql, *_a: statements.append(sql)
    )
    for _ in range(3):
        with seeded.uow() as uow:
            actor = seeded.users.actor_for_token(uow, token, kind="api")
        assert actor.username == "pharmacist" and actor.roles == ("pharmacist",)
    assert len(statements) == 3, statements
    assert all("user_sessions" in s and "users" in s for s in statements)
