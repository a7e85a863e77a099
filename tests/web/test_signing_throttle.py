"""21 CFR 11.300(d) on the pages: every web form that carries an e-signature is held back after
repeated wrong passwords, as the login and the API are (api/security.throttled). The attack:
a logged-in person (or whoever sits at their session) guesses the signing password through a
page's form. With a throttle of 2, four wrong passwords reach the password check twice: the
user's `sign_failed` audit rows count the guesses that were checked, so the held-back ones
never were; the page answers the third in words."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.web.test_chain_pages import world

from nearfab.api.security import LoginThrottle
from nearfab.bootstrap import App
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import AuditEntry
from nearfab.web.server import create_web_app

WRONG = "not-the-password-1"
__all__ = ["world"]


def sign_failures(app: App, username: str) -> int:
    user_id = fh.actor(app, username).user_id
    with app.uow() as uow:
        return int(
            uow.session.scalar(
                select(func.count()).where(
                    AuditEntry.entity_type == "user",
                    AuditEntry.entity_id == user_id,
                    AuditEntry.action == "sign_failed",
                )
            )
            or 0
        )


def guess(
    app: App, username: str, page: str, action: str, fields: dict[str, str]
) -> tuple[TestClient, list[str]]:
    """Four wrong-password posts of one form; the pages they end on."""
    web = create_web_app(app)
    web.state.login_throttle = LoginThrottle(limit=2, window_s=300)
    browser = fh.web_login(web, username)
    answers = []
    for _ in range(4):
        token = fh.csrf(browser.get(page).text)
        form = {"csrf_token": token, "password": WRONG, "username": username, **fields}
        answers.append(html.unescape(browser.post(action, data=form).text))
    return browser, answers


def check(app: App, username: str, attempt: Callable[[], list[str]]) -> None:
    before = sign_failures(app, username)
    answers = attempt()
    assert sign_failures(app, username) - before == 2  # two checked, two held back
    assert "too many" in answers[2].lower(), answers[2][-600:]


def test_a_batch_record_step_signature_is_throttled(seeded: App) -> None:
    batch_id = fh.make_batch(seeded, ready=False)  # its steps wait for signatures
    operator = fh.operator_for_job(seeded, fh.batch(seeded, batch_id).job_id).username
    page = f"/batches/{batch_id}"
    check(
        seeded,
        operator,
        lambda: guess(
            seeded,
            operator,
            page,
            f"{page}/steps/line_clearance/sign",
            {},
        )[1],
    )


def test_a_master_file_approval_is_throttled(seeded: App) -> None:
    qp = fh.actor(seeded, "qp")
    with seeded.uow() as uow:
        data = seeded.master_files.effective_for_code(uow, HYDROCORTISONE).content()
    data.pop("version")
    with seeded.uow() as uow:
        draft = seeded.master_files.draft(uow, qp, data).id
    page = f"/master-files/{draft}"
    check(seeded, "qp", lambda: guess(seeded, "qp", page, f"{page}/approve", {})[1])
    with seeded.uow() as uow:
        assert seeded.master_files.get(uow, draft).status == "draft"  # nothing approved


def test_an_exceptional_release_request_is_throttled(world: Any) -> None:
    """The treating physician's signed request (found by the review: checked outside the
    throttle, four guesses reached the password check)."""
    app, batch = world.app, world.data["oos_batch"]
    page = f"/batches/{batch}/exceptional-release"
    check(
        app,
        "clinician",
        lambda: guess(app, "clinician", page, page, {"circumstances": "no alternative"})[1],
    )
