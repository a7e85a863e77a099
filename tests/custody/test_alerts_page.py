"""The custody alerts page (/custody/alerts, issue 17): the deferred-verification alert raised by
the replication code itself (a pack dispensed at a site node on what it last received, recalled
by the control site meanwhile) is listed for the pharmacists of its site with the patient to
contact and the recall named; another site's pharmacist never sees it, whatever the query says;
the control site's network roles see every site's, by site name; a role without `trace.read`
gets the styled 403 page; the menu links the page only for the roles that may open it."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.custody import AlertKind, CustodyAlert, SerialUnit
from nearfab.identity import User, system_actor
from nearfab.replication import ReplicationService
from nearfab.replication.decisions import ControlDecisions, alerts_for_site
from nearfab.replication.node import node_capture

flushed_verification_log = ch.flushed_verification_log

GSTT = "GSTT-PH"  # the demo pharmacist's site, where the batch is ordered and dispensed
GSTT_NAME = "St Thomas' Hospital Pharmacy"  # demo.SITES
MAN = "MAN-PH"
MAN_NAME = "Manchester Children's Hospital Pharmacy"
ALLOWED = ("pharmacist", "pharmacist-man", "qp", "auditor", "admin")  # trace.read
REFUSED = ("operator", "clinician", "planner")  # no trace.read in the matrix


@dataclass(frozen=True)
class Alerted:
    alert_id: str
    other_alert_id: str  # raised at MAN-PH
    network_alert_id: str  # raised by an account of no site
    unit: SerialUnit
    patient_ref: str
    recall_id: str
    recall_reason: str
    raised_at_london: str


def _alerted(seeded: App) -> dict[str, str]:
    """GSTT-PH as a site node: its outbox begins, a pack is dispensed there, the control's QP
    recalls the lot it was made from, and the node's re-verification (ControlDecisions, the
    code the broker's arrivals drive) raises the alert naming the patient. Built once per
    backend and worker (flow_helpers.seeded_or_world); each test that asks for `alerted` gets
    its own copy of the database it leaves."""
    clock = seeded.clock
    assert isinstance(clock, ManualClock)
    gstt, man, control = (
        fh.site_id(seeded, GSTT),
        fh.site_id(seeded, MAN),
        fh.site_id(seeded, "CTRL"),
    )
    other_site_pharmacist(seeded)

    batch_id, packs = ch.released_batch(seeded)
    assert fh.batch(seeded, batch_id).site_id == gstt
    service = ReplicationService(node_capture(gstt, clock, control=False))
    with seeded.uow() as uow:
        assert service.capture_now(uow) > 0  # the node's outbox begins now
    clock.advance(60)
    unit = packs[0]
    patient_ref = ch.patient_ref(seeded, unit)
    ch.dispense(seeded, unit)  # dispensed on what the site had: the pack was released
    clock.advance(60)
    reason = "supplier assay out of specification"
    lot = fh.batch(seeded, batch_id).material_lot_number
    with seeded.uow() as uow:
        recall = seeded.custody_chain.recalls.create(
            uow, fh.actor(seeded, "qp"), lot=lot, reason=reason
        )
        recall_id = recall.id
    clock.advance(60)
    decisions = ControlDecisions(
        service, control, seeded.custody_chain.recalls, seeded.custody.packs
    )
    (alert_id,) = decisions.reverify(seeded.uow, clock.now(), clock.now())
    with seeded.uow() as uow:
        (alert,) = alerts_for_site(uow, gstt)
        assert alert.id == alert_id and alert.unit_id == unit.id
        raised = alert.raised_at.replace(tzinfo=alert.raised_at.tzinfo or UTC)

    # two later alerts through the custody service the replication code calls: one raised at
    # MAN-PH, one by an account of no site (the network's, never "everywhere")
    clock.advance(60)
    with seeded.uow() as uow:
        other = seeded.custody.packs.raise_alert(
            uow,
            replace(system_actor("replication"), site_id=man),
            AlertKind.SUSPECTED_FALSIFIED,
            "MAN-SCAN-0001",
            "a scan no pack of this network matches",
        )
        uow.commit()
        other_id = other.id
    clock.advance(60)
    with seeded.uow() as uow:
        network = seeded.custody.packs.raise_alert(
            uow,
            fh.actor(seeded, "admin"),
            AlertKind.INTEGRITY_FAILURE,
            "NET-SCAN-0002",
            "a pack's record differs from its signed release",
        )
        uow.commit()
        network_id = network.id
        assert uow.session.get(CustodyAlert, network_id).site_id is None  # type: ignore[union-attr]
    # `Alerted` without the pack, which `alerted` reads from the test's own copy (a built
    # world's data is plain data, no ORM rows)
    return dict(
        unit_id=unit.id,
        alert_id=alert_id,
        other_alert_id=other_id,
        network_alert_id=network_id,
        patient_ref=patient_ref,
        recall_id=recall_id,
        recall_reason=reason,
        # the demo's network zone (config.time_zone: Europe/London); January is GMT
        raised_at_london=raised.astimezone(ZoneInfo("Europe/London")).strftime(
            "%Y-%m-%d %H:%M GMT"
        ),
    )


# a copy of the seeded network; with `_alerted`'s world in it for a test that asks for `alerted`
seeded = fh.seeded_or_world({"alerted": _alerted})


@pytest.fixture
def alerted(seeded: App, request: pytest.FixtureRequest) -> Alerted:
    """The alerts `_alerted` raised, on the test's own copy of its world (`seeded`)."""
    made = dict(fh.built_data(request))
    with seeded.uow() as uow:
        unit = uow.session.get(SerialUnit, made.pop("unit_id"))
        assert unit is not None
        uow.session.expunge(unit)
    return Alerted(unit=unit, **made)


def other_site_pharmacist(app: App) -> None:
    """A pharmacist of MAN-PH (the demo has none), past their first password change."""
    made = fh.create_user(app, "pharmacist-man", ["pharmacist"], MAN)
    fh.edit(app, User, made.user_id, must_change_password=False)


def rows(page: str) -> dict[str, str]:
    """The alert rows of the page by alert id (each row's HTML, over several lines)."""
    row = r'<tr class="custody-alert" data-alert="([^"]+)"[^>]*>(.*?)</tr>'
    return dict(re.findall(row, page, re.S))


def get(client: TestClient, **params: str) -> str:
    answer = client.get("/custody/alerts", params=params)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["content-type"].startswith("text/html")
    return answer.text


def test_the_sites_pharmacist_sees_the_alert_with_the_patient_to_contact(
    seeded: App, alerted: Alerted
) -> None:
    page = get(fh.web_login(seeded, "pharmacist"))
    shown = rows(page)
    assert list(shown) == [alerted.alert_id]  # not MAN-PH's, not the network's
    row = shown[alerted.alert_id]
    assert alerted.unit.serial in row
    assert f"<b>{alerted.patient_ref}</b>" in row
    assert alerted.unit.batch_number in row
    assert "hydrocortisone" in row.lower()  # the product, in the family's words
    assert alerted.raised_at_london in row  # local time with its zone
    assert "Dispensed while offline, then found recalled or rejected" in row
    assert f"recalled by recall {alerted.recall_id}" in row
    assert escape(alerted.recall_reason) in row
    assert "<td>recalled</td>" in row  # the pack's status now
    assert 'class="site"' not in row  # one site: no site column
    assert str(escape(GSTT_NAME)) in page  # the page names whose alerts these are


def test_another_sites_pharmacist_sees_only_their_own_sites_alert_whatever_the_query(
    seeded: App, alerted: Alerted
) -> None:
    client = fh.web_login(seeded, "pharmacist-man")
    gstt = fh.site_id(seeded, GSTT)
    for params in ({}, {"site": gstt}, {"site_id": gstt}, {"site": GSTT}, {"all": "1"}):
        page = get(client, **params)
        assert list(rows(page)) == [alerted.other_alert_id], params
        assert alerted.patient_ref not in page and alerted.unit.serial not in page
        assert alerted.recall_id not in page
        assert "NET-SCAN-0002" not in page


def test_the_control_sites_network_roles_see_every_site_by_name_newest_first(
    seeded: App, alerted: Alerted
) -> None:
    gstt = fh.site_id(seeded, GSTT)
    for username in ("qp", "auditor", "admin"):
        page = get(fh.web_login(seeded, username))
        shown = rows(page)
        # newest first: the no-site alert, MAN-PH's, then the deferred-verification alert
        assert list(shown) == [alerted.network_alert_id, alerted.other_alert_id, alerted.alert_id]
        assert f'<td class="site">{escape(GSTT_NAME)}</td>' in shown[alerted.alert_id]
        assert f'<td class="site">{escape(MAN_NAME)}</td>' in shown[alerted.other_alert_id]
        assert "no site" in shown[alerted.network_alert_id]
        assert f"<b>{alerted.patient_ref}</b>" in shown[alerted.alert_id]
        assert gstt not in page  # site names, never ids
        assert "Suspected falsified pack" in shown[alerted.other_alert_id]


def test_roles_without_trace_read_get_the_styled_refusal_page(
    seeded: App, alerted: Alerted
) -> None:
    for username in REFUSED:
        answer = fh.web_login(seeded, username).get("/custody/alerts")
        assert answer.status_code == 403, username
        assert answer.headers["content-type"].startswith("text/html"), username
        assert "Not allowed" in answer.text and "<nav" in answer.text
        assert alerted.patient_ref not in answer.text


def test_the_menu_links_the_page_only_for_the_roles_that_may_open_it(seeded: App) -> None:
    other_site_pharmacist(seeded)
    for username in ALLOWED + REFUSED:
        page = fh.web_login(seeded, username).get("/account")
        assert page.status_code == 200, username
        linked = 'href="/custody/alerts"' in page.text
        assert linked == (username in ALLOWED), username


def test_an_empty_list_says_so_in_words(seeded: App) -> None:
    page = get(fh.web_login(seeded, "pharmacist"))
    assert not rows(page)
    assert 'id="no-alerts"' in page and "No custody alerts" in page
