"""The web pages of the cell-therapy steps (web/chain.py, web/appointments.py,
web/exceptional.py), through logged-in browser sessions (TestClient), on SQLite and PostgreSQL.

The world: the demo's cell product ordered at GSTT-PH (site A), made by the micro-factory's
twin and released by the QP with sterility pending (one bag), and a second order whose culture
grew slowly (an out-of-specification batch waiting in the queue). Every route is called as
every role from site A, from MAN-PH (site B) and from the control site; the expected answers
are written out by hand from the permission matrix of docs/security.md (not read from
nearfab.identity.MATRIX): 403 for a role without the permission, 404 for a record of a site the
person does not see (exactly as an unknown record), and for everyone else an answer that is
neither a refusal nor a server error. Then the forms: refusals in words naming the field,
a mismatched hand-over holding the unit until a QP judges it, a storage excursion, an operator
who records without reading the chain, notices and their acknowledgement, the collection page.
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi.testclient import TestClient
from tests import flow_helpers as fh
from tests.asgi_client import AsgiLoop, form_token, web_login

# made as the API flow makes it (the machine twin runs the culture), whatever it needs first
from tests.e2e.test_cell_therapy_flow import _made
from tests.families.cell_therapy.collect import DIN_A

from nearfab.bootstrap import App
from nearfab.demo import cell_therapy_bundle
from nearfab.production.machines import Fault
from nearfab.web.server import create_web_app

SITES = {"a": "GSTT-PH", "b": "MAN-PH", "net": "CTRL"}
ROLES = ("qp", "admin", "auditor", "pharmacist", "operator", "planner", "clinician")


def _order(app: App, client: TestClient, seed: int) -> str:
    token = client.post(
        "/api/v1/auth/token", json={"username": "clinician", "password": fh.TEST_PASSWORD}
    ).json()["access_token"]
    bundle = cell_therapy_bundle(
        random.Random(seed), today=app.clock.now().date(), dose_per_kg=2.0e6, weight_kg=70.0
    )
    r = client.post("/api/v1/orders", json=bundle, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    (order,) = r.json()["orders"]
    return str(order["id"])


def _build(app: App) -> dict[str, str]:
    client = TestClient(create_web_app(app))
    order_id = _order(app, client, 11)
    batch_id = _made(app, order_id)
    fh.release(app, batch_id)  # sterility pending: released, its follow-up open
    fresh = _order(app, client, 13)  # scheduled, waiting for its collection
    fh.schedule(app, fresh)
    oos_order = _order(app, client, 12)
    oos_batch = _made(app, oos_order, Fault("slow_growth", 0.6))
    fh.prepare_release(app, oos_batch)
    with app.uow() as uow:
        (unit,) = app.custody.units_of_order(uow, order_id)
        (label,) = app.custody.labels(uow, unit.id)
    admin = fh.actor(app, "admin")
    for role in ROLES:
        for where, code in SITES.items():
            with app.uow() as uow:
                made = app.users.create_user(
                    uow,
                    admin,
                    username=f"{role}-{where}",
                    full_name=f"{role} at {code}",
                    roles=[role],
                    password=fh.TEST_PASSWORD,
                    home_site_id=app.network.get_site(uow, code).id,
                    temporary=False,
                )
            fh.approve_pending(app, made.id)  # qp and admin: a second administrator approves
    return {
        "order_id": order_id,
        "batch_id": batch_id,
        "unit_id": unit.id,
        "scan": label.identifier.element_string(),
        "oos_order": oos_order,
        "fresh_order": fresh,
        "oos_batch": oos_batch,
    }


world = fh.world_fixture(_build)

# who may, by hand from docs/security.md's matrix
TRACE_READ = {"qp", "admin", "auditor", "pharmacist"}
PACKS_MOVE = {"pharmacist", "operator", "qp"}
READINGS = {"pharmacist", "operator", "qp"}
HOLD_DECIDE = {"qp"}
EVERYONE = set(ROLES)
ORDER_PRIORITY = {"planner", "pharmacist", "clinician", "admin"}
ORDER_REPLAN = {"planner", "pharmacist"}
PRE_RECORD = {"clinician"}  # eligibility and consent: the ordering site's clinician
COLLECTION_RECORD = {"clinician", "pharmacist"}
RELEASE_DECIDE = {"qp"}
NOTICE_READ = {"clinician", "qp", "pharmacist", "auditor"}
NOTICE_ACK = {"clinician"}

# (method, path, who may, scoped to site A's record, form): forms the services refuse after
# the role and the site (nothing changes), so each caller meets the same record
ROUTES: list[tuple[str, str, set[str], bool, dict[str, str]]] = [
    ("GET", "/packs/{unit_id}/chain", TRACE_READ, True, {}),
    ("GET", "/hand-overs", PACKS_MOVE, False, {}),
    ("POST", "/hand-overs", PACKS_MOVE, True, {"scan": "{scan}"}),
    ("POST", "/packs/{unit_id}/hand-overs", PACKS_MOVE, True, {"scan": "{scan}"}),
    ("POST", "/packs/{unit_id}/storage-log", READINGS, True, {"read_at": "", "value": ""}),
    ("POST", "/packs/{unit_id}/prepare", PACKS_MOVE, True, {"scan": ""}),
    (
        "POST",
        "/packs/{unit_id}/holds/no-such-hold/judge",
        HOLD_DECIDE,
        True,
        {"decision": "resume", "reason": "m"},
    ),
    ("GET", "/orders/{order_id}/collection", EVERYONE, True, {}),
    ("POST", "/orders/{order_id}/collection/date", ORDER_PRIORITY, True, {"reason": "m"}),
    ("POST", "/orders/{order_id}/collection/rebook", ORDER_REPLAN, True, {"reason": "m"}),
    ("POST", "/orders/{order_id}/collection/pre-collection", PRE_RECORD, True, {"kind": ""}),
    ("POST", "/orders/{order_id}/collection/collected", COLLECTION_RECORD, True, {}),
    ("GET", "/batches/{oos_batch}/exceptional-release", EVERYONE, True, {}),
    (
        "POST",
        "/batches/{batch_id}/exceptional-release/certify",
        RELEASE_DECIDE,
        True,
        {"password": "wrong", "meaning": "m"},
    ),
    ("GET", "/notices", NOTICE_READ, False, {}),
    ("POST", "/notices/no-such-notice/acknowledge", NOTICE_ACK, False, {}),
]


def _csrf(text: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert found, "no CSRF token on the page"
    return found.group(1)


def _expected(who: set[str], scoped: bool, role: str, where: str) -> str:
    if role not in who:
        return "forbidden"
    if scoped and where == "b" and role != "auditor":
        return "hidden"
    return "allowed"


def test_every_new_page_answers_each_role_at_each_site_as_the_matrix_says(world: Any) -> None:
    app, ids = world.app, world.data
    web = create_web_app(app)
    loop = AsgiLoop()  # the requests on this thread's own event loop (tests/asgi_client.py)

    def session(role: str, where: str) -> Callable[[], Awaitable[list[httpx.Response]]]:
        async def walk() -> list[httpx.Response]:
            client = loop.client(web)
            await web_login(client, f"{role}-{where}")
            token = await form_token(client)
            answers = []
            for method, path, _, _, form in ROUTES:
                url = path.format(**ids)
                data = {k: v.format(**ids) for k, v in form.items()} | {"csrf_token": token}
                answers.append(
                    await client.arequest(method, url, data=data if method == "POST" else None)
                )
            return answers

        return walk

    callers = [(role, where) for role in ROLES for where in SITES]
    try:
        walks = loop.run(session(role, where) for role, where in callers)
    finally:
        loop.close()
    wrong: list[str] = []
    checked = 0
    for (role, where), answers in zip(callers, walks, strict=True):
        for (method, path, who, scoped, _), r in zip(ROUTES, answers, strict=True):
            checked += 1
            expected = _expected(who, scoped, role, where)
            if r.status_code >= 500 or r.url.path == "/login":
                ok = False
            elif expected == "forbidden":
                ok = r.status_code == 403
            elif expected == "hidden":
                ok = r.status_code == 404 and "belongs to a site you do not see" in r.text
            else:
                ok = r.status_code not in (401, 403, 404)
            if ok and r.status_code >= 400:
                # a refusal is a page in words, never the API's JSON
                ok = r.headers["content-type"].startswith("text/html")
            if not ok:
                wrong.append(
                    f"{method} {path} as {role}@{SITES[where]}: {expected}, got {r.status_code}"
                )
    assert checked == len(ROUTES) * len(ROLES) * len(SITES)
    assert not wrong, "\n".join(wrong)


def _chain(client: TestClient, unit_id: str) -> str:
    r = client.get(f"/packs/{unit_id}/chain")
    assert r.status_code == 200, r.text[:300]
    return str(r.text)


def _error(page: str) -> str:
    found = re.search(r'id="chain-error">([^<]+)<', page)
    assert found, page[:2000]
    return found.group(1)


def test_a_mismatched_hand_over_holds_the_unit_until_a_qp_judges_it(world: Any) -> None:
    app, ids = world.app, world.data
    unit, scan = ids["unit_id"], ids["scan"]
    pharmacist = fh.web_login(app, "pharmacist")
    page = _chain(pharmacist, unit)
    assert 'id="hand-over-form"' in page and 'id="prepare-form"' in page
    assert 'class="inline judge-form"' not in page  # judging is the QP's
    token = _csrf(page)

    def hand_over(src: str, dst: str, **changes: str) -> str:
        form = {
            "from_step": src,
            "to_step": dst,
            "scan": scan,
            "received_scan": scan,
            "identifier": DIN_A,
            "received_identifier": DIN_A,
            "csrf_token": token,
        }
        r = pharmacist.post(f"/packs/{unit}/hand-overs", data=form | changes)
        assert r.status_code == 200 and r.url.path == f"/packs/{unit}/chain", r.text[:500]
        return str(r.text)

    # the chain identifier is required on both sides: refused naming it, nothing held
    page = hand_over("collection", "micro_factory", received_identifier="")
    assert "— received_identifier:" in _error(page) and 'id="held"' not in page
    # the first hand-over, accepted; the next step is offered, no patient asked yet
    page = hand_over("collection", "micro_factory")
    assert "Hand-over collection → micro_factory: accepted" in page
    assert '<option value="cryostore" selected>' in page
    assert 'id="bedside-patient"' not in page
    # the receiving side scans another serial: refused naming received_scan, unit held
    other = re.sub(r"\(21\)(\w+)", lambda m: "(21)" + m.group(1) + "9", scan)
    assert other != scan
    page = hand_over("micro_factory", "cryostore", received_scan=other)
    assert _error(page).startswith("Hand-over: refused (identity_mismatch) — received_scan:")
    assert 'id="held"' in page
    # held: the next hand-over is refused as held
    assert "refused (held)" in _error(hand_over("micro_factory", "cryostore"))
    # the QP judges the hold from the same page
    qp = fh.web_login(app, "qp")
    page = _chain(qp, unit)
    hold = re.search(r'action="/packs/[^/]+/holds/([^/]+)/judge"', page)
    assert hold, page[:2000]
    r = qp.post(
        f"/packs/{unit}/holds/{hold.group(1)}/judge",
        data={"decision": "resume", "reason": "", "csrf_token": _csrf(page)},
    )
    assert "Judgement: refused" in r.text and "— reason:" in r.text  # the reason is required
    r = qp.post(
        f"/packs/{unit}/holds/{hold.group(1)}/judge",
        data={
            "decision": "resume",
            "reason": "wrong bag scanned at the bench; the right one re-scanned",
            "csrf_token": _csrf(page),
        },
    )
    assert f"Hold {hold.group(1)}: judged (resume)" in r.text
    assert 'id="held"' not in r.text
    # on to the cryostore; the hand-over to infusion is the bedside check: the patient asked
    page = hand_over("micro_factory", "cryostore")
    assert "Hand-over micro_factory → cryostore: accepted" in page
    assert 'id="bedside-patient"' in page
    page = hand_over("cryostore", "infusion")
    assert "— patient:" in _error(page)
    page = hand_over("cryostore", "infusion", patient="PT-NOT-THIS-ONE")
    assert "refused (wrong_patient) — patient:" in _error(page) and 'id="held"' in page


def test_storage_readings_refusals_name_the_field_and_an_excursion_holds(world: Any) -> None:
    app, ids = world.app, world.data
    unit = ids["unit_id"]
    pharmacist = fh.web_login(app, "pharmacist")
    token = _csrf(_chain(pharmacist, unit))

    def reading(value: str, read_at: str = "2030-01-01T10:00", unit_text: str = "Cel") -> str:
        r = pharmacist.post(
            f"/packs/{unit}/storage-log",
            data={"read_at": read_at, "value": value, "unit": unit_text, "csrf_token": token},
        )
        assert r.status_code == 200, r.text[:300]
        return str(r.text)

    assert "Storage reading: refused (validation_failed) — value:" in reading("cold")
    assert "— value:" in reading("nan") and "— value:" in reading("-inf")  # not readings
    assert "— read_at:" in reading("-180", read_at="yesterday")
    assert "— unit:" in reading("-180", unit_text="[degF]")  # the family reads Cel only
    # a forged form token: refused naming it, the excursion it carried is not recorded
    forged = pharmacist.post(
        f"/packs/{unit}/storage-log",
        data={"read_at": "2030-01-01T10:00", "value": "-140", "unit": "Cel", "csrf_token": "x"},
    )
    assert "Storage reading: refused (forbidden) — csrf_token:" in forged.text
    assert 'id="held"' not in forged.text
    assert "Storage reading -180 Cel: within the storage rule" in reading("-180")
    # -140 °C is above the -150 °C limit (docs/cell-therapy.md): an excursion, the unit held
    page = reading("-140")
    assert "Storage reading -140 Cel: excursion, unit held" in page
    assert 'id="held"' in page and 'data-excursion="yes"' in page


def test_an_operator_records_a_reading_without_reading_the_chain(world: Any) -> None:
    app, ids = world.app, world.data
    operator = fh.web_login(app, "operator")  # GSTT-PH, where the bag was made
    assert operator.get(f"/packs/{ids['unit_id']}/chain").status_code == 403
    token = _csrf(operator.get("/account").text)
    r = operator.post(
        f"/packs/{ids['unit_id']}/storage-log",
        data={"read_at": "2030-01-01T10:00", "value": "-185", "csrf_token": token},
    )
    assert r.status_code == 200 and 'id="chain-flash"' in r.text
    assert "-185 Cel: within the storage rule" in r.text
    r = operator.post(
        f"/packs/{ids['unit_id']}/prepare", data={"scan": "nonsense", "csrf_token": token}
    )
    assert r.status_code >= 400 and 'id="chain-error"' in r.text and "— scan:" in r.text


def test_a_failed_result_reaches_the_clinicians_notices_and_is_acknowledged(world: Any) -> None:
    app, ids = world.app, world.data
    qp = fh.actor(app, "qp")
    with app.uow() as uow:
        app.quality.followups.enter_result(
            uow,
            qp,
            ids["batch_id"],
            "sterility",
            outcome="fail",
            detail="growth in the aerobic bottle on day 4",
            password=fh.TEST_PASSWORD,
            meaning="result entered by",
            username="qp",
        )
    clinician = fh.web_login(app, "clinician")
    home = clinician.get("/").text
    assert '<a href="/notices"' in home  # the menu shows what the role may open
    page = clinician.get("/notices").text
    row = re.search(r'<tr data-notice="([^"]+)" data-order="' + ids["order_id"], page)
    assert row, page[:2000]
    assert "terility" in page and 'class="unread"' in page
    # a clinician of another site sees none of it
    assert ids["order_id"] not in fh.web_login(app, "clinician-b").get("/notices").text
    r = clinician.post(f"/notices/{row.group(1)}/acknowledge", data={"csrf_token": _csrf(page)})
    assert f"Notice {row.group(1)}: acknowledged" in r.text and 'class="acknowledged"' in r.text
    r = clinician.post(f"/notices/{row.group(1)}/acknowledge", data={"csrf_token": _csrf(r.text)})
    assert "Acknowledgement: refused (already_acknowledged) — notice_id:" in r.text
    # operators read no notice: no menu entry
    assert '<a href="/notices"' not in fh.web_login(app, "operator").get("/").text


def test_the_order_page_shows_its_collection_and_the_collection_page_its_hours(
    world: Any,
) -> None:
    app, ids = world.app, world.data
    clinician = fh.web_login(app, "clinician")
    order = clinician.get(f"/orders/{ids['order_id']}").text
    assert 'id="order-collection"' in order
    # 24 h to seeding + 7 culture days + 48 h to infusion (docs/cell-therapy.md)
    assert "(240 h from collection)" in order
    page = clinician.get(f"/orders/{ids['order_id']}/collection").text
    assert re.search(r'id="collection-hours">240 h<', page)
    # the clinician records no date once the run has started, and may not re-book
    assert 'id="collection-date-form"' not in page and 'id="rebook-form"' not in page
    planner = fh.web_login(app, "planner")
    r = planner.post(
        f"/orders/{ids['order_id']}/collection/rebook",
        data={"reason": "try", "csrf_token": _csrf(planner.get("/account").text)},
    )
    assert r.status_code == 200
    assert "Re-booking: refused (not_failed) — order_id:" in r.text


def test_the_exceptional_release_page_takes_both_signatures(world: Any) -> None:
    app, ids = world.app, world.data
    batch = ids["oos_batch"]
    qp = fh.web_login(app, "qp")
    page = qp.get(f"/batches/{batch}/exceptional-release").text
    assert 'id="exceptional-certify-form"' not in page  # nothing asked yet
    clinician = fh.web_login(app, "clinician")
    page = clinician.get(f"/batches/{batch}/exceptional-release").text
    assert 'id="exceptional-request-form"' in page
    r = clinician.post(
        f"/batches/{batch}/exceptional-release",
        data={
            "circumstances": "no other option",
            "username": "clinician",
            "password": fh.TEST_PASSWORD,
            "csrf_token": _csrf(page),
        },
    )
    assert r.status_code == 200 and "Exceptional release: requested (signed)" in r.text
    page = qp.get(f"/batches/{batch}/exceptional-release").text
    assert 'id="qp-waiting"' in page and 'id="exceptional-certify-form"' in page

    def refusal(**form: str) -> str:
        data = {"username": "qp", "csrf_token": _csrf(page)} | form
        r = qp.post(f"/batches/{batch}/exceptional-release/certify", data=data)
        error = re.search(r'id="exceptional-error">([^<]+)<', r.text)
        assert error, r.text[:3000]
        assert error.group(1).startswith("Exceptional release: refused"), error.group(1)
        return error.group(1)

    assert "— reason:" in refusal(password=fh.TEST_PASSWORD)  # the QP's reason is required
    assert "— password:" in refusal(password="wrong", reason="no alternative")
    assert fh.batch(app, batch).status == "completed"
    r = qp.post(
        f"/batches/{batch}/exceptional-release/certify",
        data={
            "password": fh.TEST_PASSWORD,
            "username": "qp",
            "reason": "no alternative for the patient",
            "csrf_token": _csrf(page),
        },
    )
    assert "Exceptional release: batch released" in r.text and 'id="qp-certified"' in r.text
    assert fh.batch(app, batch).status == "released"


def test_eligibility_consent_and_the_collection_are_recorded_on_the_collection_page(
    world: Any,
) -> None:
    app, ids = world.app, world.data
    order = ids["fresh_order"]
    clinician = fh.web_login(app, "clinician")
    url = f"/orders/{order}/collection"
    page = clinician.get(url).text
    assert 'id="pre-collection-form"' in page and 'id="collected-form"' in page
    assert re.search(r'data-kind="eligibility">eligibility: missing<', page)
    assert re.search(r'data-kind="consent">consent: missing<', page)
    with app.uow() as uow:
        patient = app.orders.patient(uow, app.orders.get(uow, order).patient_id).ref

    def post(path: str, **form: str) -> str:
        r = clinician.post(f"{url}/{path}", data=form | {"csrf_token": _csrf(page)})
        assert r.status_code == 200 and r.url.path == url, r.text[:300]
        return str(r.text)

    def refused(text: str) -> str:
        found = re.search(r'id="collection-error">([^<]+)<', text)
        assert found, text[:3000]
        return found.group(1)

    # the collection before eligibility and consent: refused, nothing kept
    assert "Collection: refused" in refused(post("collected", patient=patient, identifier=DIN_A))
    signed = {"reference": "consent form v3.1", "statement": "confirmed", "username": "clinician"}
    assert "— password:" in refused(
        post("pre-collection", kind="consent", password="wrong", **signed)
    )
    for kind in ("eligibility", "consent"):
        text = post("pre-collection", kind=kind, password=fh.TEST_PASSWORD, **signed)
        assert f"{kind.capitalize()}: recorded (signed)" in text
    assert 'id="pre-collection-form"' not in text  # nothing missing any more
    assert re.search(r'data-kind="consent">consent: recorded<', text)
    # another patient, then a DIN that is not one (its check fails): refused naming each field
    assert "— patient:" in refused(post("collected", patient="PT-NOT-THIS-ONE", identifier=DIN_A))
    assert "— identifier:" in refused(post("collected", patient=patient, identifier="=G1234"))
    text = post("collected", patient=patient, identifier=DIN_A)
    assert "Collection recorded at" in text
    assert f"chain identifier <code>{DIN_A}</code>" in text
    assert 'id="collected-form"' not in text


def test_a_form_without_its_token_or_for_an_unknown_unit_changes_nothing(world: Any) -> None:
    """Another site's form (no CSRF token) is refused naming csrf_token, nothing recorded; an
    unknown unit is answered exactly as another site's (404, the same words)."""
    app, ids = world.app, world.data
    unit = ids["unit_id"]
    pharmacist = fh.web_login(app, "pharmacist")
    r = pharmacist.post(
        f"/packs/{unit}/storage-log", data={"read_at": "2030-01-01T10:00", "value": "-180"}
    )
    assert "Storage reading: refused (forbidden) — csrf_token:" in r.text
    assert "No reading yet." in r.text
    with app.uow() as uow:
        assert app.custody.unit_chain(uow, fh.actor(app, "pharmacist"), unit).storage_log == []
    token = _csrf(r.text)
    unknown = pharmacist.post("/packs/no-such-unit/prepare", data={"scan": "", "csrf_token": token})
    other = fh.web_login(app, "pharmacist-b")
    elsewhere = other.post(
        f"/packs/{unit}/prepare",
        data={"scan": ids["scan"], "csrf_token": _csrf(other.get("/account").text)},
    )
    assert unknown.status_code == elsewhere.status_code == 404
    said = [re.search(r'id="error">([^<]+)<', r.text) for r in (unknown, elsewhere)]
    assert (
        all(said)
        and [m.group(1).split(":", 1)[1] for m in said if m]
        == [" no such record, or it belongs to a site you do not see"] * 2
    )


def test_an_operator_hands_a_unit_over_at_the_station_by_scan_alone(world: Any) -> None:
    app, ids = world.app, world.data
    operator = fh.web_login(app, "operator")  # GSTT-PH, where the micro-factory is
    home = operator.get("/").text
    assert '<a href="/hand-overs"' in home and '<a href="/notices"' not in home
    page = operator.get("/hand-overs").text
    assert '<option value="micro_factory">' in page  # the families' steps, suggested
    form = {
        "from_step": "collection",
        "to_step": "micro_factory",
        "scan": ids["scan"],
        "received_scan": ids["scan"],
        "identifier": DIN_A,
        "received_identifier": "",
        "csrf_token": _csrf(page),
    }
    r = operator.post("/hand-overs", data=form)
    assert r.status_code == 422 and "refused (validation_failed) — received_identifier:" in r.text
    assert 'value="micro_factory"' in r.text  # the steps typed are kept
    r = operator.post("/hand-overs", data=form | {"received_identifier": DIN_A})
    assert r.status_code == 200
    assert "Hand-over collection → micro_factory: accepted" in r.text
    assert "/chain" not in r.text  # the operator does not read the chain: no link to it
    # the pharmacist reads it on the unit's chain; pharmacists are offered the link
    chain = _chain(fh.web_login(app, "pharmacist"), ids["unit_id"])
    assert chain.count('<tr data-outcome="accepted">') == 1 and "Operator" in chain
    # a unit of another site is answered as an unknown one
    other = fh.web_login(app, "operator-b")
    r = other.post("/hand-overs", data=form | {"csrf_token": _csrf(other.get("/hand-overs").text)})
    assert r.status_code == 404 and "belongs to a site you do not see" in r.text
    assert "micro_factory" not in r.text.split('id="chain-error"')[1].split("</p>")[0]
