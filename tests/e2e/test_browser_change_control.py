"""Change control of a master file in a real browser (Debian Chromium through Playwright): the
control site's QP raises a change control for a drafted version 2 of the hydrocortisone master
file from the central QA page, reads its impact on every site, signs the approval (a wrong
password refused, nothing signed), and implements it once the version itself is QP-approved;
the new version is then the effective one. Attacks through the web: a site's QP, the network
administrator (may raise and implement, not decide), a site's pharmacist and an operator are
offered no button they may not use, and their forged posts get a styled refusal (403), never
JSON, with nothing changed. Screenshots go to the test's tmp_path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import Signature
from nearfab.masterfiles import ChangeControl

try:
    from playwright.sync_api import Page, expect
except ImportError:  # a user clone without the dev extras; CI must have it
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(
        "Playwright for Python is not installed (pip install -e '.[dev]')", allow_module_level=True
    )

from tests.e2e.browser_forms import assert_refusal_page, forge, login, site_user

seeded = fh.seeded
pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("seeded", ["sqlite"], indirect=True),
]


def _draft_v2(app: App) -> str:
    """Version 2 of the hydrocortisone master file, no longer allowed at MOB-1 (a draft)."""
    with app.uow() as uow:
        data = app.master_files.effective_for_code(uow, HYDROCORTISONE).content()
    data.pop("version")
    data["allowed_site_ids"] = [fh.site_id(app, "GSTT-PH"), fh.site_id(app, "MAN-PH")]
    with app.uow() as uow:
        return app.master_files.draft(uow, fh.actor(app, "qp"), data).id


def _count(app: App, model: type[Any]) -> int:
    with app.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(model)) or 0


def _effective_version(app: App) -> int:
    with app.uow() as uow:
        return app.master_files.effective_for_code(uow, HYDROCORTISONE).version


def test_the_qp_raises_approves_and_implements_a_change(
    page: Page, seeded: App, tmp_path: Path
) -> None:
    app = seeded
    v2 = _draft_v2(app)
    fh.submit(app)  # one open order under version 1, prescribed at GSTT-PH
    login(page, "qp")
    page.goto("/qa")
    page.locator("#change-controls-link").click()
    expect(page.locator("main h1")).to_have_text("Change control of master files")
    form = page.locator("#change-raise-form")
    form.get_by_label("Proposed version").select_option(v2)
    expect(form.get_by_label("Proposed version")).to_contain_text(f"{HYDROCORTISONE} v2 (draft)")

    # a title of blanks is refused naming the field; nothing is written
    form.get_by_label("Title").fill("   ")
    form.get_by_label("What changes").fill("the mobile unit no longer makes it")
    form.get_by_label("Why").fill("the mobile unit's route ends")
    form.get_by_role("button", name="Raise and assess the impact").click()
    expect(page.locator("#change-flash")).to_contain_text("Refused: change_control.title")
    assert _count(app, ChangeControl) == 0

    form.get_by_label("Proposed version").select_option(v2)
    form.get_by_label("Title").fill("MOB-1 leaves the product")
    form.get_by_label("What changes").fill("the mobile unit no longer makes it")
    form.get_by_label("Why").fill("the mobile unit's route ends")
    form.get_by_role("button", name="Raise and assess the impact").click()
    expect(page.locator("#change-status")).to_have_text("raised")
    expect(page.locator("#change-what")).to_contain_text("by Quentin Parr (QP)")  # the seed's QP
    with app.uow() as uow:
        [cc] = uow.session.scalars(select(ChangeControl))
        change_id = cc.id
    # the impact, counted by hand from the demo seed (nearfab.demo): MF-HC allowed at GSTT-PH,
    # MAN-PH and MOB-1, version 2 drops MOB-1; machines qualified for it: GSTT printers A and
    # B, MAN printer A, the mobile printer; the one order above is open at GSTT-PH
    impact = page.locator("#change-impact")
    expected = {
        "GSTT-PH": ["stays", "GSTT printer A, GSTT printer B", "1", "0"],
        "MAN-PH": ["stays", "MAN printer A", "0", "0"],
        "MOB-1": ["leaves", "Mobile printer", "0", "0"],
    }
    expect(impact.locator("tbody tr")).to_have_count(3)
    for site, cells in expected.items():
        row = impact.locator(f'tr[data-site="{site}"] td')
        assert row.all_inner_texts() == [site, *cells]
    page.screenshot(path=str(tmp_path / "change-raised.png"), full_page=True)

    # the QP's decision: a wrong password is refused and signs nothing
    signatures = _count(app, Signature)
    decide = page.locator("#change-decide-form")
    decide.get_by_label("Decision").select_option("approve")
    decide.get_by_label("Reason").fill("impact accepted: MOB-1 has no open work")
    decide.get_by_label("User ID").fill("qp")
    decide.get_by_label("Password").fill("not-the-password")
    decide.get_by_role("button", name="Sign the decision").click()
    expect(page.locator("#change-flash")).to_contain_text("Refused:")
    expect(page.locator("#change-status")).to_have_text("raised")
    assert _count(app, Signature) == signatures
    decide = page.locator("#change-decide-form")
    decide.get_by_label("Decision").select_option("approve")
    decide.get_by_label("Reason").fill("impact accepted: MOB-1 has no open work")
    decide.get_by_label("User ID").fill("qp")
    decide.get_by_label("Password").fill(fh.TEST_PASSWORD)
    decide.get_by_role("button", name="Sign the decision").click()
    expect(page.locator("#change-status")).to_have_text("approved")
    expect(page.locator("#change-flash")).to_contain_text(f"Change control {change_id} approved")
    expect(page.locator("#change-decide-form")).to_have_count(0)
    with app.uow() as uow:
        row = app.change_controls.get(uow, change_id)
        signed = uow.session.get(Signature, row.signature_id)
        assert signed is not None and signed.meaning == "QP approval of change control"

    # implementing waits for the version's own QP approval; then v2 is the effective version
    page.get_by_role("button", name="Make v2 effective").click()
    expect(page.locator("#change-flash")).to_contain_text("Refused: master file")
    expect(page.locator("#change-status")).to_have_text("approved")
    assert _effective_version(app) == 1
    with app.uow() as uow:
        app.master_files.approve(uow, fh.actor(app, "qp"), v2, password=fh.TEST_PASSWORD)
    page.get_by_role("button", name="Make v2 effective").click()
    expect(page.locator("#change-status")).to_have_text("implemented")
    expect(page.locator("#change-flash")).to_contain_text(f"{HYDROCORTISONE} v2 is effective")
    assert _effective_version(app) == 2
    page.goto("/qa/change-controls")
    expect(page.locator(f'#change-controls tr[data-id="{change_id}"]')).to_contain_text(
        "implemented"
    )
    page.screenshot(path=str(tmp_path / "change-implemented.png"), full_page=True)


def _raised(app: App) -> str:
    v2 = _draft_v2(app)
    with app.uow() as uow:
        return app.change_controls.raise_change(
            uow,
            fh.actor(app, "qp"),
            {
                "proposed_master_file_id": v2,
                "title": "MOB-1 leaves the product",
                "description": "the mobile unit no longer makes it",
                "reason": "the mobile unit's route ends",
            },
        ).id


def test_who_may_not_act_gets_no_button_and_a_refusal_page(
    page: Page, seeded: App, tmp_path: Path
) -> None:
    app = seeded
    change_id = _raised(app)
    site_user(app, "qp-gstt", "qp", "GSTT-PH")
    signatures = _count(app, Signature)
    decision = {
        "decision": "approve",
        "reason": "approved at the site",
        "username": "qp-gstt",
        "password": fh.TEST_PASSWORD,
    }

    # a site's QP reads the change control but may not decide it (a network record)
    login(page, "qp-gstt")
    page.goto(f"/qa/change-controls/{change_id}")
    expect(page.locator("#change-impact")).to_be_visible()
    expect(page.locator("#change-decide-form")).to_have_count(0)
    answer = forge(page, f"/qa/change-controls/{change_id}/decide", decision)
    assert_refusal_page(page, answer, 403, "Not allowed")
    expect(page.locator("#error")).to_contain_text("belongs to the whole network")
    page.screenshot(path=str(tmp_path / "site-qp-refused.png"), full_page=True)
    page.goto("/qa/change-controls")
    expect(page.locator("#change-raise-form")).to_have_count(0)
    answer = forge(
        page,
        "/qa/change-controls",
        {"proposed_master_file_id": "x", "title": "t", "description": "d", "reason": "r"},
    )
    assert_refusal_page(page, answer, 403, "Not allowed")

    # the network administrator raises and implements, but the decision is a QP's
    page.context.clear_cookies()
    login(page, "admin")
    page.goto(f"/qa/change-controls/{change_id}")
    expect(page.locator("#change-decide-form")).to_have_count(0)
    answer = forge(
        page, f"/qa/change-controls/{change_id}/decide", decision | {"username": "admin"}
    )
    assert_refusal_page(page, answer, 403, "Not allowed")
    expect(page.locator("#error")).to_contain_text("needs one of the roles: qp")

    # a site's pharmacist reads QA; implementing is not theirs
    page.context.clear_cookies()
    login(page, "pharmacist")
    page.goto(f"/qa/change-controls/{change_id}")
    expect(page.locator("#change-implement-form")).to_have_count(0)
    answer = forge(page, f"/qa/change-controls/{change_id}/implement", {})
    assert_refusal_page(page, answer, 403, "Not allowed")

    # an operator reads no QA at all
    page.context.clear_cookies()
    login(page, "operator")
    response = page.goto("/qa/change-controls")
    assert_refusal_page(page, response, 403, "Not allowed")

    with app.uow() as uow:
        assert app.change_controls.get(uow, change_id).status == "raised"
    assert _count(app, Signature) == signatures
    assert _count(app, ChangeControl) == 1
    assert _effective_version(app) == 1
