"""Browser-test helpers for the forms of the quality, change-control and vigilance pages: log in
through the login form, and post a forged form from the page a person has open (what a user
without the button could still send with the browser's own cookies and the page's CSRF
token), answered as a styled page, never the API's JSON."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, expect
from tests import flow_helpers as fh

_SUBMIT = """([action, fields]) => {
  const form = document.createElement("form");
  form.method = "post";
  form.action = action;
  for (const [name, value] of Object.entries(fields)) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = value;
    form.appendChild(input);
  }
  document.body.appendChild(form);
  form.submit();
}"""


def login(page: Page, username: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(fh.TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def forge(page: Page, action: str, fields: dict[str, str], *, token: str | None = None) -> Any:
    """Post `fields` to `action` from the open page, with the page's own CSRF token (or
    `token`); returns the response the browser ends on (after any redirect)."""
    if token is None:
        token = page.locator('input[name="csrf_token"]').first.get_attribute("value") or ""
    with page.expect_navigation() as navigation:
        page.evaluate(_SUBMIT, [action, {"csrf_token": token, **fields}])
    return navigation.value


def assert_refusal_page(page: Page, response: Any, status: int, title: str) -> None:
    """The refusal is a page of the site (its stylesheet, menu and heading), not JSON."""
    assert response is not None and response.status == status, response and response.status
    assert response.headers.get("content-type", "").startswith("text/html")
    expect(page.locator("main h1")).to_have_text(title)
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator('link[rel="stylesheet"]')).to_have_count(1)
    assert not page.locator("body").inner_text().lstrip().startswith("{")


# the browser tests' accounts: one helper for every test (flow_helpers)
site_user = fh.site_user
