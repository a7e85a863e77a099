"""Pharmacovigilance pages in a real browser (Debian Chromium through Playwright): the GSTT-PH
clinician scans the pack a patient took and reports what happened (an empty account and an
unknown pack refused naming the field, nothing recorded); the control site's QP reads the
trace: the pack's batch, machine and site, and every pack made from the same material lot with
the other patient exposed, the packs counted here from the batch records (independently of the
EPCIS-based trace), and downloads the CSV. Attacks through the web: another site's clinician
is told the pack is unknown, another site's pharmacist gets the trace and its file as records
that do not exist, and roles without the permission (operator, auditor, the clinician for the
trace) get a styled 403 page, never JSON. Screenshots go to the test's tmp_path."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.custody import SerialUnit
from nearfab.production import BatchRecord
from nearfab.vigilance import AdverseEvent

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
flushed_verification_log = ch.flushed_verification_log
pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("seeded", ["sqlite"], indirect=True),
]


def _arrange(app: App) -> tuple[SerialUnit, SerialUnit]:
    """Two released batches; one pack of each dispensed to its patient."""
    _first, packs1 = ch.released_batch(app)
    _second, packs2 = ch.released_batch(app)
    ch.dispense(app, packs1[0])
    ch.dispense(app, packs2[0])
    return packs1[0], packs2[0]


def _same_lot(app: App, lot: str) -> set[str]:
    """The serial of every pack of every batch made from `lot`, from the batch records."""
    with app.uow() as uow:
        batches = uow.session.scalars(
            select(BatchRecord.id).where(BatchRecord.material_lot_number == lot)
        ).all()
        return set(
            uow.session.scalars(select(SerialUnit.serial).where(SerialUnit.batch_id.in_(batches)))
        )


def _events(app: App) -> int:
    with app.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(AdverseEvent)) or 0


def _report(page: Page, scan: str, what: str) -> None:
    form = page.locator("#adverse-event-form")
    form.get_by_label("Pack").fill(scan)
    form.get_by_label("What happened").fill(what)
    form.get_by_label("Seriousness").select_option("serious")
    form.get_by_role("button", name="Report").click()


def test_a_clinician_reports_and_the_qp_reads_the_trace(
    page: Page, seeded: App, tmp_path: Path
) -> None:
    app = seeded
    taken, other = _arrange(app)
    batch = fh.batch(app, taken.batch_id)
    lot_packs = _same_lot(app, batch.material_lot_number)
    assert other.serial in lot_packs, "the seed makes both batches from one lot"

    login(page, "clinician")  # GSTT-PH, where both orders were prescribed
    page.goto("/adverse-events/new")
    _report(page, ch.scan(taken), "   ")  # blanks: nothing said
    expect(page.locator("#vigilance-error")).to_contain_text("description: say what happened")
    _report(page, "no-such-pack", "rash on both arms")
    expect(page.locator("#vigilance-error")).to_contain_text("'no-such-pack'")
    assert _events(app) == 0
    _report(page, ch.scan(taken), "rash on both arms two hours after the morning dose")
    # the clinician does not read traces: the QP of the network does
    expect(page.locator("#vigilance-flash")).to_contain_text("recorded; the QP traces it")
    with app.uow() as uow:
        [event] = uow.session.scalars(select(AdverseEvent))
        assert (event.unit_id, event.batch_id, event.seriousness, event.source) == (
            taken.id,
            taken.batch_id,
            "serious",
            "form",
        )
        event_id = event.id
    page.screenshot(path=str(tmp_path / "adverse-event-reported.png"), full_page=True)

    page.context.clear_cookies()
    login(page, "qp")
    page.goto(f"/adverse-events/{event_id}")
    source = page.locator("#adverse-event-source")
    expect(source).to_contain_text(taken.serial)
    expect(source).to_contain_text(batch.batch_number)
    expect(source).to_contain_text(fh.machine(app, batch.machine_id).name)
    expect(source).to_contain_text(batch.material_lot_number)
    expect(page.locator("#other-patients-exposed")).to_have_text(ch.patient_ref(app, other))
    rows = page.locator("#adverse-event-exposed tbody tr")
    expect(rows).to_have_count(len(lot_packs))
    serials = {rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())}
    assert serials == lot_packs
    page.screenshot(path=str(tmp_path / "adverse-event-trace.png"), full_page=True)
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    assert download.value.suggested_filename == f"adverse-event-{event_id}.csv"
    text = Path(download.value.path()).read_text(encoding="utf-8")
    exported = list(csv.DictReader(io.StringIO(text)))
    assert {r["serial"] for r in exported} == lot_packs
    assert [r["relation"] for r in exported if r["serial"] == taken.serial] == ["reported pack"]


def test_another_site_and_roles_without_the_permission_are_refused(
    page: Page, seeded: App, tmp_path: Path
) -> None:
    app = seeded
    taken, _other = _arrange(app)
    with app.uow() as uow:
        event_id = app.vigilance.report(
            uow, fh.actor(app, "pharmacist"), {"scan": taken.id, "description": "rash"}
        ).id
    site_user(app, "clin-man", "clinician", "MAN-PH")
    site_user(app, "pharm-man", "pharmacist", "MAN-PH")
    before = _events(app)

    # another site's clinician: the pack is answered exactly as a pack that does not exist
    login(page, "clin-man")
    page.goto("/adverse-events/new")
    _report(page, taken.id, "rash")
    shown = page.locator("#vigilance-error").inner_text()
    _report(page, "pack_does_not_exist", "rash")
    unknown = page.locator("#vigilance-error").inner_text()
    assert shown.replace(taken.id, "X") == unknown.replace("pack_does_not_exist", "X")
    assert "no such record" in shown
    assert _events(app) == before

    # another site's pharmacist: the trace and its files are records that do not exist
    page.context.clear_cookies()
    login(page, "pharm-man")
    response = page.goto(f"/adverse-events/{event_id}")
    assert_refusal_page(page, response, 404, "Not found")
    response = page.goto(f"/adverse-events/{event_id}/trace.csv")
    assert_refusal_page(page, response, 404, "Not found")
    page.screenshot(path=str(tmp_path / "other-site-trace.png"), full_page=True)

    # the clinician reports but does not read traces
    page.context.clear_cookies()
    login(page, "clinician")
    response = page.goto(f"/adverse-events/{event_id}")
    assert_refusal_page(page, response, 403, "Not allowed")

    # an operator neither reports nor reads; a forged report is refused as a page
    page.context.clear_cookies()
    login(page, "operator")
    response = page.goto("/adverse-events/new")
    assert_refusal_page(page, response, 403, "Not allowed")
    answer = forge(page, "/adverse-events/new", {"scan": taken.id, "description": "rash"})
    assert_refusal_page(page, answer, 403, "Not allowed")

    # the auditor reads the trace but reports nothing
    page.context.clear_cookies()
    login(page, "auditor")
    page.goto(f"/adverse-events/{event_id}")
    expect(page.locator("#adverse-event-source")).to_contain_text(taken.serial)
    answer = forge(page, "/adverse-events/new", {"scan": taken.id, "description": "rash"})
    assert_refusal_page(page, answer, 403, "Not allowed")
    expect(page.locator("#error")).to_contain_text("adverse event: report")
    page.screenshot(path=str(tmp_path / "auditor-refused.png"), full_page=True)
    assert _events(app) == before
