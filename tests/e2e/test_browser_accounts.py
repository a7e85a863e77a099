"""Accounts in a real browser (Debian Chromium through Playwright), against the live server:
the forced change of a temporary password at first login (21 CFR 11.300(b)), and TOTP:
enrolment on "My account" (secret shown once, QR code inline), then a login that asks for the
code (wrong code refused, right code in). SQLite only, like the other browser tests."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyotp
import pytest

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.identity import UserSession, actor_of

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


def _shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _login_form(page: Page, username: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_11_300_b_forced_password_change_at_first_login_in_the_browser(
    page: Page, seeded: App, tmp_path: Path
) -> None:
    with seeded.uow() as uow:
        admin_user = seeded.users.by_username(uow, "admin")
        assert admin_user is not None
        admin = actor_of(admin_user, uow.session)
    with seeded.uow() as uow:  # set by a person: a temporary password
        seeded.users.create_user(
            uow,
            admin,
            username="newbie",
            full_name="Nina Newbie",
            roles=["pharmacist"],
            password="temporary-pass-1",
        )

    _login_form(page, "newbie", "temporary-pass-1")
    expect(page).to_have_url(re.compile(r"/password/change$"))
    expect(page.locator("#password-reason")).to_contain_text("set by an administrator")
    expect(page.get_by_label("Username")).to_have_value("newbie")
    _shot(page, tmp_path, "password-change-forced")
    # the policy is enforced on the page too
    page.get_by_label("Current password").fill("temporary-pass-1")
    page.get_by_label("New password", exact=True).fill("newbie-secret-1")
    page.get_by_label("New password again").fill("newbie-secret-1")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("alert")).to_contain_text("username")
    page.get_by_label("Current password").fill("temporary-pass-1")
    page.get_by_label("New password", exact=True).fill("my-own-secret-77")
    page.get_by_label("New password again").fill("my-own-secret-77")
    page.get_by_role("button", name="Change password").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator("#login-message")).to_contain_text("Password changed")

    _login_form(page, "newbie", "temporary-pass-1")  # the old one no longer works
    expect(page.get_by_role("alert")).to_contain_text("wrong username or password")
    _login_form(page, "newbie", "my-own-secret-77")
    expect(page).not_to_have_url(re.compile(r"/login|/password"))
    expect(page.locator("header .who")).to_contain_text("Nina Newbie")
    _shot(page, tmp_path, "password-changed-logged-in")


def test_totp_enrolment_and_login_with_totp_in_the_browser(
    page: Page, seeded: App, clock: ManualClock, tmp_path: Path
) -> None:
    _login_form(page, "pharmacist", TEST_PASSWORD)
    expect(page.locator("header .who")).to_contain_text("Log out")
    page.goto("/account")
    expect(page.locator("#totp-status")).to_have_text("not set up")
    page.get_by_role("button", name="Set up an authenticator").click()
    enrolment = page.locator("#totp-enrolment")
    expect(enrolment.locator("svg")).to_be_visible()  # the QR code, inline, no script
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    expect(page.locator("#totp-uri")).to_contain_text(f"secret={secret}")
    _shot(page, tmp_path, "totp-enrolment")
    page.get_by_label("Code shown by the app").fill(pyotp.TOTP(secret).at(clock.now()))
    page.get_by_role("button", name="Turn on").click()
    expect(page.locator("#account-message")).to_contain_text("Authenticator enabled")
    expect(page.locator("#totp-status")).to_have_text("enabled")
    expect(page.locator("#totp-secret")).to_have_count(0)  # never shown again

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    clock.advance(30)  # the code used to confirm is spent
    _login_form(page, "pharmacist", TEST_PASSWORD)
    expect(page).to_have_url(re.compile(r"/login/totp$"))
    # the half-logged-in session opens nothing
    page.goto("/orders")
    expect(page).to_have_url(re.compile(r"/login"))
    page.goto("/login/totp")
    page.get_by_label("Code").fill("000000")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_contain_text("does not match")
    _shot(page, tmp_path, "totp-wrong-code")
    page.get_by_label("Code").fill(pyotp.TOTP(secret).at(clock.now()))
    page.get_by_role("button", name="Continue").click()
    expect(page).not_to_have_url(re.compile(r"/login"))
    expect(page.locator("header .who")).to_contain_text("Log out")
    with seeded.uow() as uow:
        open_sessions = [s for s in uow.session.query(UserSession).all() if s.ended_at is None]
    assert [s.pending for s in open_sessions] == [None]
