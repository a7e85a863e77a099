"""Issue 13 item 3: the QP's queue shows the batches ready to certify, and apart from them the
others with why each waits (steps not signed, audit trail not reviewed); a waiting batch may
be rejected but is not offered for release."""

from __future__ import annotations

import re

from tests import flow_helpers as fh

from nearfab.bootstrap import App


def _section(page: str, table_id: str) -> str:
    found = re.search(rf'<table id="{table_id}".*?</table>', page, re.S)
    return found.group(0) if found else ""


def test_a_batch_waits_with_its_reasons_until_its_record_is_complete(seeded: App) -> None:
    batch_id = fh.make_batch(seeded, ready=False)
    number = fh.batch(seeded, batch_id).batch_number
    qp = fh.web_login(seeded, "qp")

    page = qp.get("/release").text
    ready, waiting = _section(page, "queue"), _section(page, "waiting")
    assert number not in ready and number in waiting
    # why: the demo master file's manual steps (docs: line clearance, filament loaded, visual
    # inspection) are unsigned and the audit trail is not reviewed
    codes = set(re.findall(r'<li data-code="([a-z_]+)">', waiting))
    assert codes == {"not_ready", "audit_trail_not_reviewed"}, codes
    assert "line_clearance" in waiting  # the first unsigned step, named
    assert "No batch is ready to certify" in ready
    # a waiting batch may be rejected, never released from here
    dialog = re.search(rf'<dialog id="sign-{batch_id}".*?</dialog>', waiting, re.S)
    assert dialog is not None
    assert '<option value="reject">' in dialog.group(0)
    assert '<option value="release">' not in dialog.group(0)
    assert "Reject…" in waiting and "Sign…" not in waiting

    fh.prepare_release(seeded, batch_id)
    page = qp.get("/release").text
    ready = _section(page, "queue")
    assert number in ready and _section(page, "waiting") == ""
    assert "Sign…" in ready and '<option value="release">' in ready
