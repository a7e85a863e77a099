"""Master files on the web (issue 19, part 3): every role reads the versions; a control-site QP
approves a draft with an e-signature on its page, the same use case as the API; a site's QP,
a pharmacist or an auditor is not offered it and a forged post is refused with nothing signed;
a wrong password signs nothing and is on record."""

from __future__ import annotations

import re

from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.identity import AuditEntry


def _draft_next_version(app: App, code: str = "MF-HC-PRINTLET") -> str:
    qp = fh.actor(app, "qp")
    with app.uow() as uow:
        data = app.master_files.effective_for_code(uow, code).content()
    data.pop("version")
    with app.uow() as uow:
        return app.master_files.draft(uow, qp, data).id


def _status(app: App, mf_id: str) -> str:
    with app.uow() as uow:
        return app.master_files.get(uow, mf_id).status


def _post(client, path: str, **form: str):  # type: ignore[no-untyped-def]
    token = fh.csrf(client.get("/master-files").text)
    return client.post(path, data={"csrf_token": token, **form}, follow_redirects=True)


def test_the_qp_approves_a_draft_on_its_page(seeded: App) -> None:
    mf_id = _draft_next_version(seeded)
    qp = fh.web_login(seeded, "qp")
    listing = qp.get("/master-files").text
    assert f'<tr data-id="{mf_id}">' in listing and "draft" in listing.lower()
    page = qp.get(f"/master-files/{mf_id}").text
    assert 'id="master-file-approve-form"' in page
    assert "GSTT-PH" in page  # sites by code, not by id

    # a wrong password signs nothing, and the attempt is on the master file's trail
    wrong = _post(qp, f"/master-files/{mf_id}/approve", username="qp", password="not-it")
    assert "Refused" in wrong.text and _status(seeded, mf_id) == "draft"
    with seeded.uow() as uow:
        refusals = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_type == "master_file",
                AuditEntry.entity_id == mf_id,
                AuditEntry.action == "refuse",
            )
        ).all()
    assert len(refusals) == 1

    done = _post(qp, f"/master-files/{mf_id}/approve", username="qp", password=fh.TEST_PASSWORD)
    assert _status(seeded, mf_id) == "approved"
    assert re.search(r"approved \(signature sig_\w+\)", done.text), done.text
    assert 'id="master-file-approve-form"' not in done.text  # nothing left to approve
    assert "valid" in done.text and "INVALID" not in done.text


def test_others_are_not_offered_the_approval_and_a_forged_post_signs_nothing(
    seeded: App,
) -> None:
    mf_id = _draft_next_version(seeded)
    # (a site's QP, who holds the role but not for the network: the route matrix's
    # network_only row for POST /master-files/{mf_id}/approve)
    for username in ("pharmacist", "auditor", "operator", "clinician"):
        client = fh.web_login(seeded, username)
        page = client.get(f"/master-files/{mf_id}")
        assert page.status_code == 200, username  # every role reads master files
        assert 'id="master-file-approve-form"' not in page.text, username
        forged = client.post(
            f"/master-files/{mf_id}/approve",
            data={"csrf_token": fh.csrf(page.text), "password": fh.TEST_PASSWORD},
            follow_redirects=True,
        )
        assert forged.status_code == 403, username  # the styled refusal page
        assert forged.text.lstrip().lower().startswith("<!doctype html"), username
        assert _status(seeded, mf_id) == "draft", username


def test_an_unknown_master_file_is_the_not_found_page(seeded: App) -> None:
    client = fh.web_login(seeded, "pharmacist")
    missing = client.get("/master-files/mf_nope", headers={"accept": "text/html"})
    assert missing.status_code == 404
    assert missing.text.lstrip().lower().startswith("<!doctype html")
