"""End-to-end fixtures: the web app served by uvicorn on a free local port, and Chromium.

The browser is Debian's Chromium (`/usr/bin/chromium`), driven by Playwright's sync API; no
browser is downloaded. Without it the browser tests skip with the reason, except under CI=true,
where a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nearfab.bootstrap import App

CHROMIUM = Path(os.environ.get("NEARFAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UNDER_CI = os.environ.get("CI", "").lower() == "true"


def _skip_or_fail(why: str) -> None:
    if UNDER_CI:
        pytest.fail(f"CI=true but {why}")
    pytest.skip(why)


@pytest.fixture
def live_server(seeded: App) -> Iterator[str]:
    """`create_web_app(seeded)` served by uvicorn in a background thread; yields the base URL."""
    with running(seeded) as url:
        yield url


@contextlib.contextmanager
def running(application: App) -> Iterator[str]:
    """Serve `create_web_app(application)` with uvicorn in a background thread.

    The socket is bound before the server starts (port 0, so the OS picks a free port) and
    handed to uvicorn, so no other process can take the port in between.
    """
    import uvicorn

    from nearfab.web.server import create_web_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_web_app(application), log_level="warning", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    thread = threading.Thread(target=run, name="nearfab-live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if errors or not thread.is_alive():
            sock.close()
            pytest.fail(f"the live server did not start: {errors[0] if errors else 'exited'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            pytest.fail("the live server did not start within 15 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        if thread.is_alive():  # pragma: no cover - would leak a thread into later tests
            server.force_exit = True
            thread.join(timeout=5)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright (session scope: one browser process)."""
    if not CHROMIUM.exists():
        _skip_or_fail(
            f"Chromium is not installed at {CHROMIUM} (apt-get install chromium, "
            "or set NEARFAB_CHROMIUM); Playwright browser downloads are not used"
        )
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _skip_or_fail("Playwright for Python is not installed (pip install -e '.[dev]')")
    expect.set_options(timeout=BROWSER_WAIT_MS)  # the same ceiling for `expect(...)` checks
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# a navigation that took 10 s under a loaded CI run failed a test that was right (CI, 2026-12-07)
BROWSER_WAIT_MS = 30_000


@pytest.fixture
def page(browser: Any, live_server: str) -> Iterator[Any]:
    """A fresh browser context (own cookies) and page, with the live server as base URL, so
    `page.goto("/release")` works. The wait limit (`BROWSER_WAIT_MS`) is a ceiling, not a
    speed check: the live server shares 2 cores with the rest of the suite."""
    context = browser.new_context(
        base_url=live_server, viewport={"width": 1280, "height": 900}, locale="en-GB"
    )
    context.set_default_timeout(BROWSER_WAIT_MS)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()
