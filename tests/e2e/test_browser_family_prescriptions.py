"""A bioprint and a device prescription entered in the browser's prescription form (issue 16),
in a real browser (Debian Chromium through Playwright): choosing the islet product shows the
donor DIN field and the body weight, hides the flowmeter's fit; a DIN with a wrong check
character is refused at its field; the right one makes the order, carrying the donor's DIN.
Choosing the flowmeter shows its maximum flow and the size options of its master file, hides
the DIN and the body weight; a maximum flow outside the envelope is refused at its field; a
flow inside it makes the designed order. Screenshots in the test's folder."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from tests import flow_helpers as fh
from tests.e2e.conftest import BROWSER_WAIT_MS, running
from tests.families import form_world
from tests.families.bioprint import world as bp
from tests.families.device import network as net

try:
    from playwright.sync_api import Page, expect
except ImportError:  # a user clone without the dev extras; CI must have it
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(
        "Playwright for Python is not installed (pip install -e '.[dev]')", allow_module_level=True
    )

world = fh.world_fixture(form_world.build)
pytestmark = [pytest.mark.browser]
DIN_LABEL = "Donor DIN (ISBT 128, with its check character)"


def _patient(page: Page) -> None:
    page.get_by_label("NHS number").fill("943 476 5919")
    page.get_by_label("Date of birth").fill("1960-05-04")


def _refused_at(page: Page, field: str, words: str) -> None:
    expect(page.get_by_role("alert")).to_contain_text("Not received")
    expect(page.get_by_role("alert")).to_contain_text(words)
    expect(page.locator("#error-field")).to_have_attribute("data-field", field)
    expect(page.locator(f'[name="{field}"]')).to_have_attribute("aria-invalid", "true")


def _design(app: Any, order_id: str) -> tuple[str, dict[str, Any]]:
    with app.uow() as uow:
        order = app.orders.get(uow, order_id)
        return order.status, dict(order.design or {})


def test_a_bioprint_and_a_device_prescription_in_the_form(
    browser: Any, world: fh.Built, tmp_path: Path
) -> None:
    app = world.app
    with running(app) as url:
        context = browser.new_context(
            base_url=url, viewport={"width": 1280, "height": 1000}, locale="en-GB"
        )
        context.set_default_timeout(BROWSER_WAIT_MS)
        page = context.new_page()
        try:
            page.goto("/login")
            page.get_by_label("Username").fill("clinician")
            page.get_by_label("Password").fill(fh.TEST_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page).not_to_have_url(re.compile(r"/login"))

            # islet micro-tissues: the donor's DIN and the recipient's weight are asked for
            page.goto("/orders/new")
            page.get_by_label("Medicine").select_option(bp.CODE)
            din = page.get_by_label(DIN_LABEL)
            expect(din).to_be_visible()
            expect(page.get_by_label("Body weight (kg)")).to_be_visible()
            expect(page.get_by_label("Maximum flow Qmax (mL/s)")).to_be_hidden()
            expect(page.get_by_label("Doses a day")).to_be_hidden()
            _patient(page)
            page.get_by_label("Body weight (kg)").fill("70")
            page.get_by_label("Dose", exact=True).fill("6000")
            # ST-001 Appendix A: G1234 17 654321 has check character A, not B
            din.fill("G1234 17 654321 [B]")
            page.get_by_role("button", name="Send prescription").click()
            _refused_at(page, "donor_din", "check character")
            page.screenshot(path=str(tmp_path / "islets-din-refused.png"), full_page=True)
            din = page.get_by_label(DIN_LABEL)
            expect(din).to_have_value("G1234 17 654321 [B]")  # kept as typed
            din.fill(bp.DIN_TYPED)
            page.get_by_role("button", name="Send prescription").click()
            expect(page).to_have_url(re.compile(r"/orders/ord_"))
            status, design = _design(app, page.url.rsplit("/", 1)[1])
            assert (status, design["din"]) == ("designed", bp.DIN)
            page.screenshot(path=str(tmp_path / "islets-received.png"), full_page=True)

            # the flowmeter: its fit, not the DIN nor a body weight
            page.goto("/orders/new")
            page.get_by_label("Medicine").select_option(net.PRODUCT)
            qmax = page.get_by_label("Maximum flow Qmax (mL/s)")
            expect(qmax).to_be_visible()
            expect(page.get_by_label("Size option")).to_be_visible()
            expect(
                page.get_by_label("Donor DIN (ISBT 128, with its check character)")
            ).to_be_hidden()
            expect(page.get_by_label("Body weight (kg)")).to_be_hidden()
            _patient(page)
            page.get_by_label("Dose", exact=True).fill("1")
            page.get_by_label("Size option").select_option("S")
            qmax.fill("80")  # the envelope takes 10-50 mL/s
            page.get_by_role("button", name="Send prescription").click()
            _refused_at(page, "qmax_ml_s", "outside the validated envelope (10-50 mL/s)")
            page.screenshot(path=str(tmp_path / "flowmeter-qmax-refused.png"), full_page=True)
            page.get_by_label("Maximum flow Qmax (mL/s)").fill("20")
            page.get_by_role("button", name="Send prescription").click()
            expect(page).to_have_url(re.compile(r"/orders/ord_"))
            status, design = _design(app, page.url.rsplit("/", 1)[1])
            assert (status, design["qmax_ml_s"], design["size"]) == ("designed", 20.0, "S")
            page.screenshot(path=str(tmp_path / "flowmeter-received.png"), full_page=True)
        finally:
            context.close()
