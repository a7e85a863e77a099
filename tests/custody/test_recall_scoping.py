"""Issue 12, item 6 (network-wide leaks): a recall report names only the reader's patients.

A recall of a material lot reaches packs at several sites. Its report (the web page, its CSV
and PDF downloads, and the API's CSV and PDF) lists affected packs with their patient
reference and serial. Scope is per role grant (identity/permissions.py): a QP or
administrator of a site sees the rows of the packs their site made, ordered or dispensed, and
the network's totals, never another site's patient reference or serial; control-site staff
and the auditor grant read the whole network. A pharmacist holds no recall-report grant at
all (the matrix) and is refused. Through the API and the web routes, on SQLite and
PostgreSQL.

The recall below affects packs of two sites: two batches are made at GSTT-PH from its lot and
recalled; the second batch (and its order) is then recorded as MAN-PH's, as if MAN-PH had made
it from a shared lot: the report is read per site from these rows.
"""

from __future__ import annotations

import base64
import csv
import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.custody import CustodyChain
from nearfab.orders import Order
from nearfab.production import BatchRecord
from nearfab.web.server import create_web_app

flushed_verification_log = ch.flushed_verification_log
SITE_A, SITE_B = "GSTT-PH", "MAN-PH"
# readers holding the recall-report grant at one site only (made legitimately below)
READERS_A = {"gstt-qp": "qp", "gstt-admin": "admin"}
READER_B = "man-qp"
NETWORK_READERS = ("qp", "auditor")  # control-site QP, the auditor grant


@dataclass
class Recalled:
    app: App
    recall_id: str
    refs: dict[str, set[str]] = field(default_factory=dict)  # site code -> patient refs
    serials: dict[str, set[str]] = field(default_factory=dict)  # site code -> serials


def pdf_text(pdf: bytes) -> str:
    """The text drawn by a reportlab PDF: its content streams, decoded (ASCII85 + Flate)."""
    assert pdf.startswith(b"%PDF"), pdf[:20]
    out = []
    pattern = rb"/Filter \[?([^\]>]*?)\]? /Length \d+\s*>>\s*stream\r?\n(.*?)endstream"
    for m in re.finditer(pattern, pdf, re.S):
        filters, data = m.group(1), m.group(2)
        if b"/ASCII85Decode" in filters:
            data = base64.a85decode(data.strip().removesuffix(b"~>"), ignorechars=b" \t\r\n")
        if b"/FlateDecode" in filters:
            data = zlib.decompress(data)
        out.append(data.decode("latin-1"))
    return "\n".join(out)


def _build_recalled(seeded: App) -> dict[str, object]:
    """Two released batches of one lot, the second (and its order) MAN-PH's; the lot recalled;
    readers at one site. Built once per backend; each test gets its own copy
    (tests/flow_helpers.py)."""
    chain: CustodyChain = ch.chain(seeded)
    batch_a, packs_a = ch.released_batch(seeded)
    batch_b, packs_b = ch.released_batch(seeded)
    lot = fh.batch(seeded, batch_a).material_lot_number
    assert fh.batch(seeded, batch_b).material_lot_number == lot
    with seeded.uow() as uow:
        recall = chain.recalls.create(uow, fh.actor(seeded, "qp"), lot=lot, reason="assay OOS")
    # the second batch and its order are MAN-PH's
    man = fh.site_id(seeded, SITE_B)
    fh.edit(seeded, BatchRecord, batch_b, site_id=man)
    fh.edit(seeded, Order, packs_b[0].order_id, site_id=man)
    world = Recalled(seeded, recall.id)
    world.refs = {
        SITE_A: {ch.patient_ref(seeded, u) for u in packs_a},
        SITE_B: {ch.patient_ref(seeded, u) for u in packs_b},
    }
    world.serials = {SITE_A: {u.serial for u in packs_a}, SITE_B: {u.serial for u in packs_b}}
    assert not world.refs[SITE_A] & world.refs[SITE_B]
    for username, role, site in [
        *((u, r, SITE_A) for u, r in READERS_A.items()),
        (READER_B, "qp", SITE_B),
    ]:
        with seeded.uow() as uow:
            user = seeded.users.create_user(
                uow,
                fh.actor(seeded, "admin"),
                username=username,
                full_name=f"{role} of {site}",
                roles=[role],
                password=fh.TEST_PASSWORD,
                home_site_id=fh.site_id(seeded, site),
                temporary=False,
            )
        fh.approve_pending(seeded, user.id)  # qp and admin: a second administrator approves
    return {"recall_id": world.recall_id, "refs": world.refs, "serials": world.serials}


built_recalled = fh.world_fixture(_build_recalled)


@pytest.fixture
def seeded(built_recalled: fh.Built) -> App:
    """The test's copy of `_build_recalled`'s network."""
    app: App = built_recalled.app
    ch.chain(app)
    return app


@pytest.fixture
def recalled(seeded: App, built_recalled: fh.Built) -> Recalled:
    data = built_recalled.data
    return Recalled(seeded, data["recall_id"], data["refs"], data["serials"])


@pytest.fixture
def api(recalled: Recalled) -> Iterator[TestClient]:
    with TestClient(create_web_app(recalled.app)) as client:
        yield client


def _token(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _reports(world: Recalled, api: TestClient, username: str) -> dict[str, str]:
    """Every way the reader gets the report, as text: API CSV and PDF, web page, CSV, PDF."""
    headers = _token(api, username)
    url = f"/api/v1/recalls/{world.recall_id}/report"
    got: dict[str, str] = {}
    r = api.get(url, params={"format": "csv"}, headers=headers)
    assert r.status_code == 200, r.text
    got["api csv"] = r.text
    r = api.get(url, params={"format": "pdf"}, headers=headers)
    assert r.status_code == 200, r.text
    got["api pdf"] = pdf_text(r.content)
    with fh.web_login(world.app, username) as browser:
        r = browser.get(f"/recalls/{world.recall_id}")
        assert r.status_code == 200, r.text
        got["web page"] = r.text
        r = browser.get(f"/recalls/{world.recall_id}/report.csv")
        assert r.status_code == 200, r.text
        got["web csv"] = r.text
        r = browser.get(f"/recalls/{world.recall_id}/report.pdf")
        assert r.status_code == 200, r.text
        got["web pdf"] = pdf_text(r.content)
    return got


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("username", sorted(READERS_A))
def test_a_site_reader_sees_only_their_sites_patients(
    recalled: Recalled, api: TestClient, username: str
) -> None:
    mine, theirs = SITE_A, SITE_B
    reports = _reports(recalled, api, username)
    for how, text in reports.items():
        for ref in recalled.refs[mine] | recalled.serials[mine]:
            assert ref in text, f"{username} via {how}: own site's {ref} missing"
        for ref in recalled.refs[theirs] | recalled.serials[theirs]:
            assert ref not in text, f"{username} via {how}: another site's {ref} shown"
    csv_rows = _csv_rows(reports["api csv"])
    assert {r["serial"] for r in csv_rows} == recalled.serials[mine]


def test_the_other_site_sees_only_its_own_rows(recalled: Recalled, api: TestClient) -> None:
    reports = _reports(recalled, api, READER_B)
    for how, text in reports.items():
        for ref in recalled.refs[SITE_B] | recalled.serials[SITE_B]:
            assert ref in text, f"{READER_B} via {how}: own site's {ref} missing"
        for ref in recalled.refs[SITE_A] | recalled.serials[SITE_A]:
            assert ref not in text, f"{READER_B} via {how}: another site's {ref} shown"
    assert {r["serial"] for r in _csv_rows(reports["web csv"])} == recalled.serials[SITE_B]


def test_the_totals_are_the_networks_without_naming_anyone(
    recalled: Recalled, api: TestClient
) -> None:
    total = len(recalled.serials[SITE_A]) + len(recalled.serials[SITE_B])
    page = _reports(recalled, api, "gstt-qp")["web page"]
    summary = re.search(r'<p id="summary">(.*?)</p>', page, re.S)
    assert summary, page
    assert f"{total} pack(s) at 2 site(s) in the network" in summary.group(1)
    assert f"the {len(recalled.serials[SITE_A])} pack(s) of the sites you serve" in (
        summary.group(1)
    )


@pytest.mark.parametrize("username", NETWORK_READERS)
def test_control_site_staff_and_auditors_see_the_whole_network(
    recalled: Recalled, api: TestClient, username: str
) -> None:
    everyone = set().union(*recalled.refs.values(), *recalled.serials.values())
    for how, text in _reports(recalled, api, username).items():
        for ref in everyone:
            assert ref in text, f"{username} via {how}: {ref} missing"


def test_a_pharmacist_holds_no_recall_report_grant(recalled: Recalled, api: TestClient) -> None:
    headers = _token(api, "pharmacist")  # GSTT-PH
    for fmt in ("csv", "pdf"):
        r = api.get(
            f"/api/v1/recalls/{recalled.recall_id}/report",
            params={"format": fmt},
            headers=headers,
        )
        assert r.status_code == 403, r.text
        assert not {*recalled.refs[SITE_A], *recalled.refs[SITE_B]} & set(
            re.findall(r"PT-\w+", r.text)
        )
    with fh.web_login(recalled.app, "pharmacist") as browser:
        for url in ("", "/report.csv", "/report.pdf"):
            r = browser.get(f"/recalls/{recalled.recall_id}{url}")
            assert r.status_code == 403, (url, r.status_code)
            for ref in recalled.refs[SITE_A] | recalled.refs[SITE_B]:
                assert ref not in r.text
