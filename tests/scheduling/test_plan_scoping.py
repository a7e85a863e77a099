"""Issue 12, item 6 (network-wide leaks): the plan shows site staff their own site's part.

The network plan is one plan, computed for every site. What a reader is shown follows their
grant of `plan.read` (scope per role grant, identity/permissions.py): a planner, pharmacist or
operator of a site sees their site's machines and the jobs planned on them, never another
site's machines, jobs or orders; control-site staff and the auditor grant see the whole
network. Through the API (current plan, a version, the history, and the plan a site planner
makes) and the web page `/plan`, on SQLite and PostgreSQL.

The plan below places one order at GSTT-PH and one at MAN-PH (delivered near MAN-PH: the
transport time sends it there), both ordered by GSTT-PH's clinician; a third order, made for
MAN-PH (its ordering site), is placed at MAN-PH too; a fourth, GSTT-PH's, has no place, and
its explanation names the machines of both sites in the network's plan: a GSTT-PH reader
reads it with MAN-PH's machines left unnamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.materials import MaterialLot
from nearfab.orders import Order
from nearfab.web.server import create_web_app

SITE_A, SITE_B = "GSTT-PH", "MAN-PH"
MACHINES = {SITE_A: ("GSTT printer A", "GSTT printer B"), SITE_B: ("MAN printer A",)}
SITE_READERS = {  # username -> (role, site): staff holding plan.read at one site
    "gstt-planner": ("planner", SITE_A),
    "pharmacist": ("pharmacist", SITE_A),  # demo account
    "man-planner": ("planner", SITE_B),
    "operator-man": ("operator", SITE_B),  # demo account
}
NETWORK_READERS = ("planner", "auditor")  # control-site planner, the auditor grant


@dataclass
class Planned:
    app: App
    client: TestClient
    orders: dict[str, set[str]] = field(default_factory=dict)  # making site -> order ids
    only: dict[str, set[str]] = field(default_factory=dict)  # site -> orders no other sees
    machine_ids: dict[str, set[str]] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    unplaced: str = ""  # GSTT-PH's order with no place (explained)

    def get(self, username: str, url: str) -> Any:
        if username not in self.headers:
            r = self.client.post(
                "/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD}
            )
            assert r.status_code == 200, r.text
            self.headers[username] = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = self.client.get(url, headers=self.headers[username])
        assert r.status_code == 200, f"{username} {url}: {r.status_code} {r.text}"
        return r


def _build_plan(seeded: App) -> dict[str, Any]:
    """The readers, four orders and the network plan described above. Built once per backend;
    each test gets its own copy (tests/flow_helpers.py)."""
    for username, (role, site) in SITE_READERS.items():
        if username.endswith("-planner"):
            with seeded.uow() as uow:
                seeded.users.create_user(
                    uow,
                    fh.actor(seeded, "admin"),
                    username=username,
                    full_name=f"{role} of {site}",
                    roles=[role],
                    password=fh.TEST_PASSWORD,
                    home_site_id=fh.site_id(seeded, site),
                    temporary=False,
                )
    here, near_b, for_b = fh.submit(seeded), fh.submit(seeded), fh.submit(seeded)
    # GSTT-PH's propranolol order has no place: the material is on hold at both sites that may
    # make it; why names every machine it was weighed for, GSTT-PH's and MAN-PH's
    unplaced = fh.submit(seeded, medication="propranolol")
    with seeded.uow() as uow:
        held = [
            lot.id for lot in uow.session.scalars(select(MaterialLot)) if "PROP" in lot.lot_number
        ]
    for lot_id in held:
        with seeded.uow() as uow:
            seeded.materials.set_status(
                uow, fh.actor(seeded, "qp"), lot_id, "on_hold", reason="out of specification"
            )
    fh.edit(seeded, Order, for_b, site_id=fh.site_id(seeded, SITE_B))  # MAN-PH's own order
    planner = fh.actor(seeded, "planner")
    with seeded.uow() as uow:
        planning = seeded.scheduling.planning
        assert planning is not None
        for code, minutes in ((SITE_A, 600), (SITE_B, 5), ("MOB-1", 600)):
            planning.set_transport(uow, planner, fh.site_id(seeded, code), "home:M1", minutes)
        for order in (near_b, for_b):
            planning.set_priority(uow, planner, order, "routine", deliver_to="home:M1")
        uow.commit()
    with seeded.uow() as uow:
        version = seeded.scheduling.plan(uow, planner, time_limit_s=1)
        placed = {a["order_id"]: a["site"] for a in version.assignments}
        why = {e["order_id"]: e["message"] for e in version.explanations}
    assert placed == {here: SITE_A, near_b: SITE_B, for_b: SITE_B}, placed
    assert MACHINES[SITE_B][0] in why[unplaced] and MACHINES[SITE_A][0] in why[unplaced], why
    return {
        "orders": {SITE_A: {here}, SITE_B: {near_b, for_b}},
        "unplaced": unplaced,
        # GSTT-PH ordered `near_b` (its change shows, with MAN-PH's machine left unnamed)
        "only": {SITE_A: {here, unplaced}, SITE_B: {for_b}},
        "machine_ids": {
            site: {fh.machine_id(seeded, name) for name in names}
            for site, names in MACHINES.items()
        },
    }


built_plan = fh.world_fixture(_build_plan)


@pytest.fixture
def planned(built_plan: fh.Built) -> Iterator[Planned]:
    data = built_plan.data
    with TestClient(create_web_app(built_plan.app)) as client:
        world = Planned(built_plan.app, client)
        world.orders = data["orders"]
        world.unplaced = data["unplaced"]
        world.only = data["only"]
        world.machine_ids = data["machine_ids"]
        yield world


def _other(site: str) -> str:
    return SITE_B if site == SITE_A else SITE_A


def _nothing_of(world: Planned, site: str, text: str, who: str) -> None:
    """No machine (id or name) of `site`, and no order only `site` may see, is in `text`."""
    for secret in world.machine_ids[site] | set(MACHINES[site]) | world.only[site]:
        assert secret not in text, f"{who}: {site}'s {secret} shown"


@pytest.mark.parametrize("username", sorted(SITE_READERS))
def test_site_staff_see_only_their_sites_machines_and_jobs_through_the_api(
    planned: Planned, username: str
) -> None:
    site = SITE_READERS[username][1]
    plan = planned.get(username, "/api/v1/plan").json()
    assert plan["scoped"] is True
    assert {a["site"] for a in plan["assignments"]} == {site}
    assert {a["order_id"] for a in plan["assignments"]} == planned.orders[site]
    assert {a["machine_id"] for a in plan["assignments"]} <= planned.machine_ids[site]
    explained = {e["order_id"] for e in plan["explanations"]}
    assert explained == ({planned.unplaced} if site == SITE_A else set()), explained
    for url in ("/api/v1/plan", f"/api/v1/plan/{plan['number']}", "/api/v1/plan/history"):
        _nothing_of(planned, _other(site), planned.get(username, url).text, f"{username} {url}")


@pytest.mark.parametrize("username", sorted(SITE_READERS))
def test_site_staff_see_only_their_sites_machines_and_jobs_on_the_page(
    planned: Planned, username: str
) -> None:
    site = SITE_READERS[username][1]
    with fh.web_login(planned.app, username) as browser:
        r = browser.get("/plan")
    assert r.status_code == 200, r.text
    _nothing_of(planned, _other(site), r.text, f"{username} /plan")
    for order in planned.orders[site]:
        assert order in r.text, f"{username} /plan: own site's job {order} missing"
    for name in MACHINES[site][:1]:
        assert name in r.text


def test_a_site_planner_who_plans_gets_back_their_own_part(planned: Planned) -> None:
    r = planned.client.post(
        "/api/v1/plan",
        json={"reason": "after a call", "time_limit_s": 1},
        headers=_auth(planned, "man-planner"),
    )
    assert r.status_code == 201, r.text
    assert {a["site"] for a in r.json()["assignments"]} == {SITE_B}
    _nothing_of(planned, SITE_A, r.text, "man-planner POST /plan")
    # the plan itself is still the whole network's
    network = planned.get("planner", "/api/v1/plan").json()
    assert {a["site"] for a in network["assignments"]} == {SITE_A, SITE_B}


def _auth(world: Planned, username: str) -> dict[str, str]:
    r = world.client.post(
        "/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD}
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.mark.parametrize("username", NETWORK_READERS)
def test_control_site_staff_and_auditors_see_the_whole_plan(
    planned: Planned, username: str
) -> None:
    plan = planned.get(username, "/api/v1/plan").json()
    assert plan["scoped"] is False
    assert {a["order_id"] for a in plan["assignments"]} == planned.orders[SITE_A] | (
        planned.orders[SITE_B]
    )
    with fh.web_login(planned.app, username) as browser:
        page = browser.get("/plan").text
    for site in (SITE_A, SITE_B):
        for order in planned.orders[site]:
            assert order in page, f"{username} /plan: {order} missing"
