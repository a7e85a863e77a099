"""The demo's cell therapy story as a person opening the demo sees it, in a real browser (Debian
Chromium through Playwright), SQLite only: the story (nearfab.demo_cell) built once on the
seeded demo network, then served; each page screenshotted into the test's tmp_path.

- the clinician: the notice of patient A's failed sterility on Notices, and patient B's new
  collection booked on its collection page, waiting for eligibility and consent;
- the QP: patient A's batch released with its failed sterility follow-up and investigation,
  patient B's first batch rejected with the autopilot's reason;
- the pharmacist: patient A's bag's chain of identity, three hand-overs, the last at the bedside.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from tests import flow_helpers as fh
from tests.test_demo_cell import _build_story

from nearfab.bootstrap import App

try:
    from playwright.sync_api import Page, expect
except ImportError:  # a user clone without the dev extras; CI must have it
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(
        "Playwright for Python is not installed (pip install -e '.[dev]')", allow_module_level=True
    )

pytestmark = [pytest.mark.browser]
world = fh.world_fixture(_build_story)


@pytest.fixture
def seeded(world: fh.Built) -> App:
    """What the live server serves: the story's world."""
    return world.app


def _login(page: Page, username: str) -> None:
    page.context.clear_cookies()
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(fh.TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def _shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


# SQLite only: the story's services are read on both backends in tests/test_demo_cell.py
@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_the_demo_opens_on_the_cell_story(
    page: Page, world: fh.Built, seeded: App, tmp_path: Path
) -> None:
    story: dict[str, Any] = world.data
    with seeded.uow() as uow:
        number_a = seeded.production.get(uow, story["batch_a"]).batch_number
        number_b = seeded.production.get(uow, story["batch_b"]).batch_number

    _login(page, "clinician")
    page.locator("header nav").get_by_role("link", name="Notices").click()
    body = page.locator("main")
    expect(body).to_contain_text(number_a)
    expect(body).to_contain_text("FAILED")
    _shot(page, tmp_path, "1-clinician-notices")
    page.goto(f"/orders/{story['order_b_again']}/collection")
    expect(page.locator("#collection-status")).to_have_text("booked")
    expect(page.locator("#pre-collection-form")).to_be_visible()  # left for the clinician
    _shot(page, tmp_path, "2-clinician-new-collection")

    _login(page, "qp")
    page.goto(f"/batches/{story['batch_a']}")
    expect(page.locator("main")).to_contain_text("released")
    expect(page.locator("main")).to_contain_text("QP autopilot (demo only, not a person)")
    expect(page.locator("main")).to_contain_text("investigation")
    _shot(page, tmp_path, "3-qp-batch-a")
    page.goto(f"/batches/{story['batch_b']}")
    expect(page.locator("main")).to_contain_text(number_b)
    expect(page.locator("main")).to_contain_text("harvested short")
    _shot(page, tmp_path, "4-qp-batch-b-rejected")

    _login(page, "pharmacist")
    page.goto(f"/packs/{story['unit_a']}/chain")
    hand_overs = page.locator("#hand-overs")
    expect(hand_overs).to_contain_text("cryostore → infusion")
    expect(hand_overs).to_contain_text("patient checked")
    expect(hand_overs).to_contain_text("Demo pharmacist (automated)")
    _shot(page, tmp_path, "5-pharmacist-chain")
