"""The web pages in a real browser (Debian Chromium through Playwright).

Acceptance: a QP logs in, opens the release queue, signs a release and sees the status change.
Also: a wrong signature password is refused and changes nothing; a pharmacist dispenses a pack
by its GS1 element string, once; and no page asks any host but the server (hospitals run
offline). Each page is screenshotted into the test's tmp_path for a person to look at.

Runs on SQLite only: the browser adds nothing the service tests on PostgreSQL do not cover.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.demo import prescription_bundle
from nearfab.identity import User, actor_of, system_actor

try:
    from playwright.sync_api import Page, expect
except ImportError:  # a user clone without the dev extras; CI must have it
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(
        "Playwright for Python is not installed (pip install -e '.[dev]')", allow_module_level=True
    )

TEST_PASSWORD = "correct-horse-42"  # the demo users' password in tests/conftest.py

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


# --- arrange through the services ----------------------------------------------------------
def _pending_batch(app: App, clock: ManualClock, seed: int = 1) -> tuple[str, str]:
    """One hydrocortisone prescription made into a batch that waits for the QP."""
    # 3 days at 3 a day: 9 tablets, too few for 2.9.40, so the QP must review and give a reason
    bundle = prescription_bundle(random.Random(seed), today=clock.now().date(), days=3)
    with app.uow() as uow:
        (order,) = app.orders.submit(uow, system_actor("test"), bundle, site_id="GSTT-PH")
        order_id = order.id
    # the steps the machine waits for are signed between passes, as the site staff would
    summary = fh.run(app)
    assert len(summary.batches_completed) == 1, summary.to_dict()
    with app.uow() as uow:
        (review,) = app.quality.pending(uow)
        assert review.order_id == order_id
        batch_id = review.batch_id
    # manual steps signed, critical entry verified, audit trail reviewed (test_browser_batch_steps)
    fh.prepare_release(app, batch_id)
    return order_id, batch_id


def _actor(app: App, username: str) -> Any:
    with app.uow() as uow:
        user = uow.session.scalar(select(User).where(User.username == username))
        assert user is not None
        return actor_of(user, uow.session)


def _released_batch(app: App, clock: ManualClock) -> tuple[str, str]:
    order_id, batch_id = _pending_batch(app, clock)
    with app.uow() as uow:
        app.quality.decide(
            uow,
            _actor(app, "qp"),
            batch_id,
            decision="release",
            password=TEST_PASSWORD,
            meaning="QP release",
            reason="2.9.40 not applicable to a 9-unit batch; masses reviewed",
        )
    return order_id, batch_id


def _review_status(app: App, batch_id: str) -> str:
    with app.uow() as uow:
        return str(app.quality.get_review(uow, batch_id).status)


# --- browser helpers ------------------------------------------------------------------------
def _login(page: Page, username: str, shots: Path | None = None) -> None:
    page.goto("/login")
    if shots is not None:
        _shot(page, shots, "login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))
    expect(page.locator("header .who")).to_contain_text("Log out")


def _shot(page: Page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# --- the acceptance test --------------------------------------------------------------------
def test_qp_signs_a_release_in_the_browser(
    page: Page, seeded: App, clock: ManualClock, tmp_path: Path
) -> None:
    order_id, batch_id = _pending_batch(seeded, clock)

    _login(page, "qp", tmp_path)
    page.get_by_role("link", name="Release queue").click()
    expect(page).to_have_url(re.compile(r"/release$"))
    row = page.locator(f'#queue tr[data-batch="{batch_id}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("needs QP review")
    expect(row).to_contain_text("2.9.40 not applicable")
    _shot(page, tmp_path, "release-queue")

    row.get_by_role("button", name="Sign…").click()
    dialog = page.locator(f"#sign-{batch_id}")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Quentin Parr (QP)")
    dialog.get_by_label("Decision").select_option("release")
    dialog.get_by_label("Meaning").fill("QP release: batch record reviewed")
    dialog.get_by_label("Reason").fill("9-unit batch: 2.9.40 not applicable, every mass in spec")
    dialog.get_by_label("User ID").fill("qp")  # first signature of the session: both components
    dialog.get_by_label("Password").fill(TEST_PASSWORD)
    # the form carries the hash of what the QP sees; the signature binds only to that
    with seeded.uow() as uow:
        batch = seeded.production.get(uow, batch_id)
        review = seeded.quality.review_for(uow, batch_id)
        assert review is not None
        shown = seeded.quality.shown_hash(uow, batch, review)
    expect(dialog.locator('input[name="record_hash"]')).to_have_value(shown)
    _shot(page, tmp_path, "release-sign-dialog")
    dialog.get_by_role("button", name="Sign", exact=True).click()

    message = page.get_by_role("status")
    expect(message).to_contain_text("released")
    expect(page.locator(f'#queue tr[data-batch="{batch_id}"]')).to_have_count(0)
    expect(page.locator("#queue")).to_contain_text("Nothing waits for a QP")
    _shot(page, tmp_path, "release-after")
    assert _review_status(seeded, batch_id) == "released"

    page.goto(f"/batches/{batch_id}")
    expect(page.locator("#batch-status")).to_have_text("released")
    signature = page.locator(".signature")
    expect(signature).to_have_count(1)
    expect(signature).to_contain_text("Quentin Parr (QP)")
    expect(signature).to_contain_text("QP release: batch record reviewed")
    expect(signature).to_contain_text("signature valid")
    expect(page.locator("svg.chart")).to_be_visible()
    expect(page.locator("#telemetry")).to_contain_text("nozzle_temperature_c")
    _shot(page, tmp_path, "batch-released")

    page.goto(f"/orders/{order_id}")
    expect(page.locator("#order-status")).to_have_text("released")
    _shot(page, tmp_path, "order-released")


def test_wrong_signature_password_is_refused_and_the_batch_stays_pending(
    page: Page, seeded: App, clock: ManualClock, tmp_path: Path
) -> None:
    _order_id, batch_id = _pending_batch(seeded, clock)

    _login(page, "qp")
    page.goto("/release")
    page.locator(f'#queue tr[data-batch="{batch_id}"]').get_by_role("button", name="Sign…").click()
    dialog = page.locator(f"#sign-{batch_id}")
    dialog.get_by_label("Meaning").fill("QP release")
    dialog.get_by_label("Reason").fill("masses reviewed")
    dialog.get_by_label("User ID").fill("qp")
    dialog.get_by_label("Password").fill("not-my-password")
    dialog.get_by_role("button", name="Sign", exact=True).click()

    error = page.get_by_role("alert")
    expect(error).to_be_visible()
    expect(error).to_contain_text(re.compile("password", re.I))
    expect(page.locator(f'#queue tr[data-batch="{batch_id}"]')).to_be_visible()
    _shot(page, tmp_path, "release-wrong-password")
    assert _review_status(seeded, batch_id) == "pending"

    page.goto(f"/batches/{batch_id}")
    expect(page.locator("#batch-status")).to_have_text("completed")
    expect(page.locator(".signature")).to_have_count(0)


def test_pharmacist_dispenses_a_pack_once(
    page: Page, seeded: App, clock: ManualClock, tmp_path: Path
) -> None:
    order_id, _batch_id = _released_batch(seeded, clock)

    _login(page, "pharmacist")
    page.goto(f"/orders/{order_id}")
    expect(page.locator("#order-status")).to_have_text("released")
    scan = page.locator("code.scan").first.inner_text().strip()
    assert scan.startswith("(01)")
    patient_ref = page.locator("#patient-ref").inner_text().strip()
    assert patient_ref.startswith("PT-")
    _shot(page, tmp_path, "order-before-dispense")

    page.get_by_role("link", name="Dispense").click()
    page.get_by_label("Scan").fill(scan)
    page.get_by_label("Patient reference").fill(patient_ref)
    page.get_by_role("button", name="Check and dispense").click()
    result = page.get_by_role("status")
    expect(result).to_contain_text("Dispensed pack")
    expect(result).to_contain_text("the order is complete")
    expect(page.get_by_role("alert")).to_have_count(0)
    _shot(page, tmp_path, "dispense-ok")

    page.get_by_label("Scan").fill(scan)
    page.get_by_label("Patient reference").fill(patient_ref)
    page.get_by_role("button", name="Check and dispense").click()
    error = page.get_by_role("alert")
    expect(error).to_contain_text("already dispensed")
    expect(page.get_by_role("status")).to_have_count(0)
    _shot(page, tmp_path, "dispense-twice")

    page.goto(f"/orders/{order_id}")
    expect(page.locator("#order-status")).to_have_text("dispensed")


def test_pages_ask_no_other_host(
    page: Page, seeded: App, clock: ManualClock, live_server: str, tmp_path: Path
) -> None:
    """Hospitals run offline: every request a page makes goes to the nearfab server."""
    order_id, batch_id = _released_batch(seeded, clock)
    _pending_batch(seeded, clock, seed=2)  # and one still in the queue
    requests: list[str] = []
    failures: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on(
        "response", lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )

    _login(page, "qp")
    for name, path in [
        ("overview", "/"),
        ("orders", "/orders"),
        ("order", f"/orders/{order_id}"),
        ("batch", f"/batches/{batch_id}"),
        ("release", "/release"),
        ("dispense", "/dispense"),
        ("api reference", "/api/docs"),
    ]:
        page.goto(path)
        page.wait_for_load_state("networkidle")
        expect(page.locator("main h1")).to_be_visible()
        _shot(page, tmp_path, f"offline-{name}")

    assert len(requests) > 8
    assert [u for u in requests if not u.startswith(live_server + "/")] == []
    assert any(u.endswith("/static/app.css") for u in requests)
    assert failures == []

    # a stale link gets a page a person can read, not the API's JSON
    response = page.goto("/orders/ord_DOESNOTEXIST")
    assert response is not None and response.status == 404
    expect(page.locator("main h1")).to_have_text("Not found")
    expect(page.get_by_role("alert")).to_contain_text("ord_DOESNOTEXIST")
