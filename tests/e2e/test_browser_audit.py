"""The audit-trail review screens in a real browser (Debian Chromium through Playwright):
an auditor filters the trail, opens one record (old and new values side by side, the changed
field marked, its signatures), downloads its PDF export and checks the chain; a pharmacist
sees their own site's rows only. No console error (the strict CSP blocks inline code).

Runs on SQLite only, like the other browser tests."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from nearfab.bootstrap import App
from nearfab.identity import User, actor_of
from nearfab.masterfiles import MasterFile
from nearfab.materials import MaterialLot
from nearfab.network import Site

try:
    from playwright.sync_api import Page, expect
except ImportError:  # a user clone without the dev extras; CI must have it
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(
        "Playwright for Python is not installed (pip install -e '.[dev]')", allow_module_level=True
    )

TEST_PASSWORD = "correct-horse-42"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


def _login(page: Page, username: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def _lot_on_hold(app: App) -> str:
    with app.uow() as uow:
        qp = actor_of(uow.session.scalar(select(User).where(User.username == "qp")), uow.session)
        gstt = uow.session.scalar(select(Site).where(Site.code == "GSTT-PH"))
        assert gstt is not None
        lot = uow.session.scalars(
            select(MaterialLot)
            .where(MaterialLot.status == "approved", MaterialLot.site_id == gstt.id)
            .order_by(MaterialLot.id)
        ).first()
        assert lot is not None
        lot_id = lot.id
    with app.uow() as uow:
        app.materials.set_status(uow, qp, lot_id, "on_hold", reason="supplier complaint 42")
    return lot_id


def test_annex11_s9_auditor_reviews_a_record_and_exports_it(
    page: Page, seeded: App, tmp_path: Path
) -> None:
    lot_id = _lot_on_hold(seeded)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    _login(page, "auditor")

    page.get_by_role("link", name="Audit", exact=True).click()
    expect(page).to_have_url(re.compile(r"/audit$"))
    expect(page.locator("#audit-count")).to_contain_text("rows")
    page.get_by_label("Record type").fill("material_lot")
    page.get_by_label("Record id").fill(lot_id)
    page.get_by_role("button", name="Show").click()
    rows = page.locator("#audit-rows tbody tr")
    expect(rows.first).to_contain_text("supplier complaint 42")  # newest first
    expect(rows.first).to_contain_text("Quentin Parr (QP)")
    # the action in words and the change as one compact line, not one value per line
    expect(rows.first.locator("td.action")).to_have_text("Material lot on hold")
    expect(rows.first.locator("ul.diff li")).to_have_text(["status: approved → on hold"])
    page.screenshot(path=str(tmp_path / "audit.png"), full_page=True)

    rows.first.get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"/audit/records/material_lot/{lot_id}$"))
    changed = page.locator('#content tr.changed[data-field="status"]')
    expect(changed).to_contain_text("on_hold")
    expect(changed).to_contain_text("was approved")
    expect(changed).to_contain_text("supplier complaint 42")
    last = page.locator("#trail tbody tr").last
    expect(last).to_contain_text("approved")  # before
    expect(last).to_contain_text("on hold")  # after, as words, in a compact diff
    expect(last).to_contain_text("Material lot on hold")  # the action in words
    expect(last).to_contain_text("UTC")
    page.screenshot(path=str(tmp_path / "record.png"), full_page=True)

    with page.expect_download() as download:
        page.locator("#export-pdf").click()
    saved = tmp_path / "lot.pdf"
    download.value.save_as(str(saved))
    assert saved.read_bytes().startswith(b"%PDF-")
    assert download.value.suggested_filename == f"material_lot-{lot_id}.pdf"

    # a signed record shows its signatures
    with seeded.uow() as uow:
        mf = uow.session.scalars(select(MasterFile).where(MasterFile.status == "effective")).first()
        assert mf is not None
        mf_id = mf.id
    page.goto(f"/audit/records/master_file/{mf_id}")
    sigs = page.locator("#signatures tbody tr")
    expect(sigs.first).to_contain_text("Quentin Parr (QP)")
    expect(sigs.first).to_contain_text("valid")

    page.goto("/audit")
    page.locator("#verify-link").click()
    expect(page.locator("#verify-result")).to_contain_text("intact")
    page.screenshot(path=str(tmp_path / "verify.png"), full_page=True)
    assert not errors, errors


def test_annex11_s9_pharmacist_reviews_only_their_own_site(page: Page, seeded: App) -> None:
    _lot_on_hold(seeded)
    _login(page, "pharmacist")
    page.goto("/audit")
    expect(page.locator("#audit-rows")).to_be_visible()
    sites = page.locator("#audit-rows tbody tr td:last-child").all_inner_texts()
    assert sites and set(sites) == {"GSTT-PH"}
    expect(page.locator("#verify-link")).to_have_count(0)  # checking the chain: QP, admin, auditor
    options = page.locator("select[name=site_id] option").all_inner_texts()
    assert not any("MAN-PH" in o for o in options)
