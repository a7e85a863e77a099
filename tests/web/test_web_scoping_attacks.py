"""Issue 12 items 5 and 6 (EPCIS): another site's records through the web pages and the API.

The attack: staff of site B (MAN-PH), each role, logged in to the web and holding an API token,
ask for site A's (GSTT-PH) pack label PNG, run chart page and its contributions JSON, machine
chart page, alarm page and EPCIS events. The rule (docs/security.md, identity/permissions.py):
staff act and read at their own site; control-site staff and auditors read the network; a role
the matrix does not give the permission is refused whatever the site.

Expected answers come from that rule, not from the code:
- web: a role without the permission gets 403; a role with it at another site gets the very
  answer an unknown id gets (404, same page with the id swapped), so a page never confirms
  that a record exists elsewhere;
- API: 403 `forbidden` by role, 403 `other_site` by site (the API's documented refusal), and
  never the record's content;
- own site and the control site: 200 with the record.
EPCIS: a site's staff see their own site's events only; events captured from partners (no
site) are seen by the control site and auditors only. SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.asgi_client import AsgiLoop, web_login

from nearfab.bootstrap import App
from nearfab.common.ids import new_id
from nearfab.custody import EpcisEvent
from nearfab.identity import MATRIX, Permission, Role, system_actor
from nearfab.monitoring import Alarm
from nearfab.web.server import create_web_app

SITE_A, SITE_B, CONTROL = "GSTT-PH", "MAN-PH", "CTRL"
WHERE = {"a": SITE_A, "b": SITE_B, "net": CONTROL}
PNG = b"\x89PNG\r\n\x1a\n"

PARTNER_DOC = fh.epcis_receiving_document("urn:epc:id:sgtin:0614141.107346.9001")


@dataclass
class World:
    app: App
    ids: dict[str, str]
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    sessions: dict[tuple[str, str], TestClient] = field(default_factory=dict)
    api_client: TestClient | None = None
    web_app: FastAPI | None = None

    def web(self, role: str, where: str) -> TestClient:
        """The user's browser session (logged in on first use), each with its own cookies, on
        one web application (building one per user costs more than the requests)."""
        if self.web_app is None:
            self.web_app = create_web_app(self.app)
        if (role, where) not in self.sessions:
            self.sessions[(role, where)] = fh.web_login(self.web_app, f"{role}-{where}")
        return self.sessions[(role, where)]

    def everyone(self) -> list[tuple[tuple[str, str], TestClient]]:
        return [(key, self.web(*key)) for key in sorted(self.tokens)]

    def api(self, role: str, where: str, url: str, **params: Any) -> Any:
        if self.api_client is None:  # one client, without cookies, for every token
            self.api_client = TestClient(self.web_app or create_web_app(self.app))
        client = self.api_client
        headers = {"Authorization": f"Bearer {self.tokens[(role, where)]}"}
        return client.get(url, headers=headers, params=params or None)


def _build_world(app: App) -> dict[str, Any]:
    """Site A makes and releases a batch, raises an alarm; EPCIS events at A, B and of no site;
    a user of every role at A, B and the control site, each with an API token. Built once per
    backend (tests/flow_helpers.py `world_fixture`); each test gets its own copy."""
    boot = system_actor("scoping-attacks")
    with app.uow() as uow:
        sites = {s.code: s.id for s in app.network.list_sites(uow)}
        machines = app.network.list_machines(uow)
    for m in machines:  # everything is made at site A
        if m.site_id != sites[SITE_A]:
            with app.uow() as uow:
                app.network.set_machine_status(uow, boot, m.id, "maintenance", reason="attack")
    batch_id = fh.make_batch(app)
    fh.release(app, batch_id)
    record = fh.batch(app, batch_id)
    assert record.site_id == sites[SITE_A]
    with app.uow() as uow:
        unit = app.custody.units_of_batch(uow, batch_id)[0]
        # an alarm of site A's run (the monitoring rules that raise alarms are tested elsewhere)
        now = app.clock.now()
        alarm = Alarm(
            id=new_id("alm"),
            source="telemetry",
            rule="gap",
            severity="minor",
            status="open",
            site_id=sites[SITE_A],
            machine_id=record.machine_id,
            run=record.job_id,
            batch_id=batch_id,
            metric=None,
            model_id=None,
            message="SECRET-A telemetry messages missing",
            value=None,
            limit=None,
            first_at=now,
            last_at=now,
            count=1,
            details={},
            raised_at=now,
        )
        uow.session.add(alarm)
        uow.commit()
    with app.uow() as uow:  # a partner's document: events of no site
        app.custody_chain.epcis.capture(uow, fh.actor(app, "qp"), PARTNER_DOC)
    with app.uow() as uow:  # and one event of site B, so B's own list is not empty
        app.custody_chain.epcis.record(
            uow,
            {
                "type": "ObjectEvent",
                "eventID": "ni:///sha-256;" + "b" * 64 + "?ver=CBV2.0",
                "eventTime": "2026-01-06T08:00:00.000Z",
                "eventTimeZoneOffset": "+00:00",
                "epcList": ["https://id.gs1.org/01/09506000000017/21/SITE-B-1"],
                "action": "OBSERVE",
                "bizStep": "inspecting",
            },
            site_id=sites[SITE_B],
        )
        uow.commit()
    with app.uow() as uow:
        events_a = list(
            uow.session.scalars(select(EpcisEvent).where(EpcisEvent.site_id == sites[SITE_A]))
        )
    assert events_a, "releasing site A's batch should have recorded EPCIS events at site A"
    w = World(
        app,
        {
            "site_a": sites[SITE_A],
            "site_b": sites[SITE_B],
            "unit": unit.id,
            "run": record.job_id,
            "machine": record.machine_id,
            "alarm": alarm.id,
            "event_a": events_a[0].event_hash,
        },
    )
    for role in Role:
        for where, code in WHERE.items():
            username = f"{role.value}-{where}"
            # qp, admin and responsible_person: requested by one admin, approved by a second
            privileged = role.value in ("qp", "admin", "responsible_person")
            with app.uow() as uow:
                made = app.users.create_user(
                    uow,
                    fh.actor(app, "admin") if privileged else boot,
                    username=username,
                    full_name=f"{role.value} at {code}",
                    roles=[role.value],
                    password=fh.TEST_PASSWORD,
                    home_site_id=sites[code],
                    temporary=False,
                )
            fh.approve_pending(app, made.id)
            with app.uow() as uow:
                w.tokens[(role.value, where)] = app.users.issue_token(
                    uow, username, fh.TEST_PASSWORD
                )[0]
    return {"ids": w.ids, "tokens": w.tokens}


built_world = fh.world_fixture(_build_world)


@pytest.fixture
def world(built_world: fh.Built) -> World:
    return World(built_world.app, built_world.data["ids"], built_world.data["tokens"])


def _expected(permission: Permission, role: str, where: str) -> str:
    """The rule: refused by role, hidden by site, or shown."""
    if Role(role) not in MATRIX[permission]:
        return "forbidden"
    if where == "b" and role != Role.AUDITOR.value:
        return "other_site"
    return "allowed"


def _pages(ids: dict[str, str]) -> list[tuple[str, str, Permission, str]]:
    """(url, the id in it, declared permission, what the allowed answer starts with)."""
    return [
        (f"/packs/{ids['unit']}/label.png", ids["unit"], Permission.TRACE_READ, "png"),
        (f"/monitoring/runs/{ids['run']}", ids["run"], Permission.MONITORING_READ, "html"),
        (
            f"/monitoring/runs/{ids['run']}/contributions.json?index=0",
            ids["run"],
            Permission.MONITORING_READ,
            "json",
        ),
        (
            f"/monitoring/machines/{ids['machine']}",
            ids["machine"],
            Permission.MONITORING_READ,
            "html",
        ),
        (f"/alarms/{ids['alarm']}", ids["alarm"], Permission.MONITORING_READ, "html"),
        (f"/epcis/event?id={ids['event_a']}", ids["event_a"], Permission.EPCIS_QUERY, "json"),
    ]


def test_12_5_web_pages_refuse_another_sites_records_as_if_unknown(world: World) -> None:
    # every browser session on this thread's own event loop (tests/asgi_client.py): the
    # requests in the same order as one by one, page by page, caller by caller
    loop = AsgiLoop()
    web = world.web_app = create_web_app(world.app)  # the one web app of the test
    callers = sorted(world.tokens)
    browsers = {key: loop.client(web) for key in callers}

    def login(key: tuple[str, str]) -> Callable[[], Awaitable[None]]:
        return lambda: web_login(browsers[key], f"{key[0]}-{key[1]}")

    def ask(
        url: str, ref: str, permission: Permission, key: tuple[str, str]
    ) -> Callable[[], Awaitable[tuple[httpx.Response, httpx.Response | None]]]:
        async def answers() -> tuple[httpx.Response, httpx.Response | None]:
            client = browsers[key]
            got = await client.arequest("GET", url, follow_redirects=False)
            if _expected(permission, *key) != "other_site":
                return got, None
            unknown = url.replace(ref, "zz_no_such_record")
            return got, await client.arequest("GET", unknown, follow_redirects=False)

        return answers

    pages = _pages(world.ids)
    try:
        loop.run(login(key) for key in callers)
        answered = iter(
            loop.run(ask(url, ref, p, key) for url, ref, p, _ in pages for key in callers)
        )
    finally:
        loop.close()
    wrong = []
    for url, ref, permission, kind in pages:
        for role, where in callers:
            got, missing = next(answered)
            expected = _expected(permission, role, where)
            what = f"{role}@{WHERE[where]} GET {url}: expected {expected}, got {got.status_code}"
            if got.status_code >= 500:
                wrong.append(what + " (server error)")
            elif expected == "forbidden":
                if got.status_code != 403 or ref in got.text:
                    wrong.append(what)
            elif expected == "other_site":
                assert missing is not None
                same = got.status_code == missing.status_code == 404 and got.text.replace(
                    ref, "X"
                ) == missing.text.replace("zz_no_such_record", "X")
                if not same or "SECRET-A" in got.text or got.content.startswith(PNG):
                    wrong.append(what + " (or not answered as an unknown id)")
            elif kind == "json" and "contributions" in url:
                # no MSPC model is trained in this world: the run's own answer names the model
                if got.status_code != 404 or got.json()["error"]["field"] in (None, "run"):
                    wrong.append(what + f" {got.text[:120]}")
            elif got.status_code != 200 or (kind == "png" and not got.content.startswith(PNG)):
                wrong.append(what)
    assert not wrong, "\n".join(wrong)
    # the alarm page shows the alarm to its own site
    own = world.web("operator", "a").get(f"/alarms/{world.ids['alarm']}")
    assert own.status_code == 200 and "SECRET-A" in own.text


def test_12_5_monitoring_overview_lists_only_the_sites_the_reader_sees(world: World) -> None:
    alarm = world.ids["alarm"]
    for where, sees in (("a", True), ("b", False), ("net", True)):
        page = world.web("operator", where).get("/monitoring")
        assert page.status_code == 200
        assert (alarm in page.text) is sees, where
        assert (f"/monitoring/runs/{world.ids['run']}" in page.text) is sees, where
        assert (f"/monitoring/machines/{world.ids['machine']}" in page.text) is sees, where


def test_12_5_api_refuses_another_sites_records(world: World) -> None:
    ids = world.ids
    calls = [
        (f"/api/v1/packs/{ids['unit']}/label", Permission.TRACE_READ),
        (f"/api/v1/monitoring/runs/{ids['run']}/charts", Permission.MONITORING_READ),
        (f"/api/v1/monitoring/runs/{ids['run']}/contributions?index=0", Permission.MONITORING_READ),
        (f"/api/v1/alarms/{ids['alarm']}", Permission.MONITORING_READ),
    ]
    wrong = []
    for url, permission in calls:
        for role, where in sorted(world.tokens):
            expected = _expected(permission, role, where)
            got = world.api(role, where, url)
            what = f"{role}@{WHERE[where]} GET {url}: expected {expected}, got {got.status_code}"
            if expected == "allowed":
                # contributions need a trained MSPC model: 404 naming the model is the record's
                # own answer, not a refusal
                ok = got.status_code == 200 or (
                    "contributions" in url
                    and got.status_code == 404
                    and got.json()["error"]["field"] != "run"
                )
            else:
                ok = (
                    got.status_code == 403
                    and got.json()["error"]["code"] == expected
                    and "SECRET-A" not in got.text
                    and not got.content.startswith(PNG)
                )
            if not ok:
                wrong.append(what + f" {got.text[:120]}")
    assert not wrong, "\n".join(wrong)


def _results(page: str) -> str:
    """The events the EPCIS page lists (not the query form, which repeats the EPC asked for)."""
    assert 'id="epcis-results"' in page, "the page ran no query"
    return page.split('id="epcis-results"', 1)[1]


def _event_ids(doc: dict[str, Any]) -> set[str]:
    return {e["eventID"] for e in doc["epcisBody"]["queryResults"]["resultsBody"]["eventList"]}


def test_12_6_epcis_events_only_of_the_sites_the_reader_sees(world: World) -> None:
    app, ids = world.app, world.ids
    with app.uow() as uow:
        rows = list(uow.session.scalars(select(EpcisEvent)))
    by_site: dict[str | None, set[str]] = {}
    for r in rows:
        by_site.setdefault(r.site_id, set()).add(str(r.body.get("eventID") or r.event_id))
    site_a, site_b, captured = by_site[ids["site_a"]], by_site[ids["site_b"]], by_site[None]
    assert site_a and site_b and captured
    everything = set().union(*by_site.values())
    # the rule: own site's events for site staff; everything for control staff and auditors
    expected = {
        ("pharmacist", "a"): site_a,
        ("qp", "a"): site_a,
        ("admin", "a"): site_a,
        ("pharmacist", "b"): site_b,
        ("qp", "b"): site_b,
        ("admin", "b"): site_b,
        ("pharmacist", "net"): everything,
        ("qp", "net"): everything,
        ("auditor", "a"): everything,
        ("auditor", "b"): everything,
        ("auditor", "net"): everything,
    }
    for (role, where), events in expected.items():
        got = world.api(role, where, "/api/v1/epcis/events")
        assert got.status_code == 200, (role, where, got.text)
        assert _event_ids(got.json()) == events, (role, where)
    for role in ("operator", "planner", "clinician"):
        for where in WHERE:
            refused = world.api(role, where, "/api/v1/epcis/events")
            assert refused.status_code == 403, (role, where)
            assert refused.json()["error"]["code"] == "forbidden"
    # by EPC: site A's pack is invisible to site B, found by site A
    epc = next(
        e
        for r in rows
        if r.site_id == ids["site_a"]
        for e in r.body.get("epcList", [])
        if "/21/" in e
    )
    assert _event_ids(world.api("pharmacist", "a", "/api/v1/epcis/events", epc=epc).json())
    assert not _event_ids(world.api("pharmacist", "b", "/api/v1/epcis/events", epc=epc).json())
    # the web page: the same events, never site A's pack for site B
    serial = epc.rsplit("/", 1)[-1]
    for where, sees in (("a", True), ("b", False), ("net", True)):
        page = world.web("pharmacist", where).get("/epcis", params={"epc": epc})
        assert page.status_code == 200
        assert (serial in _results(page.text)) is sees, where
    partner = "urn:epc:id:sgtin:0614141.107346.9001"
    for (role, where), sees in {
        ("pharmacist", "a"): False,
        ("qp", "b"): False,
        ("qp", "net"): True,
        ("auditor", "b"): True,
    }.items():
        page = world.web(role, where).get("/epcis", params={"epc": partner})
        assert page.status_code == 200
        assert ("0614141.107346.9001" in _results(page.text)) is sees, (role, where)


def test_12_6_no_site_events_are_never_everyones(world: World) -> None:
    """A captured event (no site) asked for by its id: control site and auditors only."""
    with world.app.uow() as uow:
        captured = uow.session.scalars(
            select(EpcisEvent).where(EpcisEvent.site_id.is_(None))
        ).first()
    assert captured is not None
    url = f"/epcis/event?id={captured.event_hash}"
    for (role, where), client in world.everyone():
        got = client.get(url)
        may = _expected(Permission.EPCIS_QUERY, role, "a") != "forbidden"
        sees = may and (where == "net" or role == Role.AUDITOR.value)
        expected = 200 if sees else (404 if may else 403)
        assert got.status_code == expected, (role, where, got.status_code)


def test_12_5_overview_counts_only_the_orders_the_reader_sees(world: World) -> None:
    """The network page's order counts: site staff count their own site's orders only."""
    from collections import Counter

    from nearfab.orders import Order

    app = world.app
    with app.uow() as uow:  # a prescription for site B, so the sites' counts differ
        app.orders.submit(
            uow, fh.actor(app, "clinician-b"), fh.bundle(app, dose_mg=3.0), site_id=SITE_B
        )
    with app.uow() as uow:
        orders = [(o.site_id, o.status) for o in uow.session.scalars(select(Order))]
    expected = {
        "a": Counter(st for site, st in orders if site == world.ids["site_a"]),
        "b": Counter(st for site, st in orders if site == world.ids["site_b"]),
        "net": Counter(st for _site, st in orders),
    }
    assert expected["a"] and expected["b"] and expected["a"] != expected["net"]
    for where, counts in expected.items():
        page = world.web("pharmacist", where).get("/")
        assert page.status_code == 200
        shown = {
            status: int(n)
            for n, status in re.findall(
                r'<b>(\d+)</b> <span class="badge status-(\w+)">', page.text
            )
        }
        assert shown == dict(counts), where
