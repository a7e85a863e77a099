"""Following up a custody alert (issue 17): a pharmacist of the alert's site records what was
done — acknowledged, patient contacted, pack recovered or not recoverable, closed with its
outcome — each step with a note, who and when, its audit row in the same transaction
(docs/custody.md, "Following up an alert").

The alerts are the ones `test_alerts_page.alerted` makes: the deferred-verification alert of
GSTT-PH raised by the replication code itself (a pack dispensed then recalled), one raised at
MAN-PH, one of no site. Each test attacks the use case from one side: the transitions, every
role at its own site, another site, the control site; API, web page and command line; and a
database that refuses the audit row."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch
from tests.custody.test_alerts_page import (
    GSTT,
    Alerted,
    alerted,
    get,
    rows,
    seeded,
)

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidTransition,
    ValidationFailed,
)
from nearfab.custody import AlertStatus, CustodyAlert, CustodyAlertAction
from nearfab.identity import Actor, AuditEntry, User
from nearfab.web.server import create_web_app

flushed_verification_log = ch.flushed_verification_log
__all__ = ["alerted", "seeded"]  # the fixtures, imported for pytest (`alerted`: a built world)

NOTE_MAX = 2000  # docs/custody.md: a note is at most 2,000 characters


# --- helpers ---------------------------------------------------------------------------------
def step(app: App, username: str | Actor, alert_id: str, status: str, **kw: Any) -> CustodyAlert:
    who = fh.actor(app, username) if isinstance(username, str) else username
    with app.uow() as uow:
        return app.custody.update_alert(uow, who, alert_id, status=status, **kw)


def state(app: App, alert_id: str) -> tuple[str, int, int]:
    """The alert's status, its history steps and its transition audit rows, as committed."""
    with app.uow() as uow:
        alert = uow.session.get(CustodyAlert, alert_id)
        assert alert is not None
        steps = len(
            list(
                uow.session.scalars(
                    select(CustodyAlertAction).where(CustodyAlertAction.alert_id == alert_id)
                )
            )
        )
        audited = len(transitions(uow.session, alert_id))
        return alert.status, steps, audited


def transitions(session: Any, alert_id: str) -> list[AuditEntry]:
    return list(
        session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.entity_type == "custody_alert",
                AuditEntry.entity_id == alert_id,
                AuditEntry.action == "transition",
            )
            .order_by(AuditEntry.seq)
        )
    )


def refused(
    app: App, username: str, alert_id: str, status: str, kind: type[DomainError], **kw: Any
) -> DomainError:
    """The step is refused with `kind`, and nothing of it is kept."""
    before = state(app, alert_id)
    with pytest.raises(kind) as caught:
        step(app, username, alert_id, status, **kw)
    assert state(app, alert_id) == before, f"{status} {kw}: something was kept"
    return caught.value


def control_pharmacist(app: App) -> None:
    """A pharmacist of the control site (the demo has none): staff of the control site act for
    the whole network (identity/permissions.py)."""
    made = fh.create_user(app, "pharmacist-ctrl", ["pharmacist"], "CTRL")
    fh.edit(app, User, made.user_id, must_change_password=False)


def advance(app: App, seconds: int = 60) -> None:
    clock = app.clock
    assert isinstance(clock, ManualClock)
    clock.advance(seconds)


# --- the follow-up, step by step -------------------------------------------------------------
def test_the_sites_pharmacist_follows_the_alert_up_to_its_close(
    seeded: App, alerted: Alerted
) -> None:
    a = alerted.alert_id
    me = fh.actor(seeded, "pharmacist")
    assert state(seeded, a) == ("open", 0, 0)  # raised: nobody has taken it on
    times = []
    plan = [
        ("acknowledged", "", None),  # the first acknowledgement needs no note
        ("patient_contacted", "phoned the patient's mother at 10:05", None),
        ("pack_recovered", "pack brought back to the pharmacy, 27 tablets left", None),
        ("closed", "recovered and quarantined for destruction", "pack_recovered"),
    ]
    for status, note, outcome in plan:
        advance(seeded)
        times.append(seeded.clock.now())
        step(seeded, me, a, status, note=note, outcome=outcome)

    with seeded.uow() as uow:
        alert = uow.session.get(CustodyAlert, a)
        assert alert is not None
        assert alert.status == "closed"
        assert alert.status_changed_by == me.user_id
        assert alert.status_changed_at == times[-1]
        history = list(
            uow.session.scalars(
                select(CustodyAlertAction)
                .where(CustodyAlertAction.alert_id == a)
                .order_by(CustodyAlertAction.id)
            )
        )
        # each step: from the status before it, with its note, who and when
        assert [(h.from_status, h.to_status) for h in history] == [
            ("open", "acknowledged"),
            ("acknowledged", "patient_contacted"),
            ("patient_contacted", "pack_recovered"),
            ("pack_recovered", "closed"),
        ]
        assert [h.note for h in history] == [p[1] for p in plan]
        assert [h.outcome for h in history] == [None, None, None, "pack_recovered"]
        assert [h.acted_at for h in history] == times
        assert {h.acted_by for h in history} == {me.user_id}
        assert {h.acted_by_name for h in history} == {me.full_name}
        # one audit row per step, old and new status, the note as the reason, at the site
        audited = transitions(uow.session, a)
        assert [(r.old, r.new["status"]) for r in audited] == [
            ({"status": "open"}, "acknowledged"),
            ({"status": "acknowledged"}, "patient_contacted"),
            ({"status": "patient_contacted"}, "pack_recovered"),
            ({"status": "pack_recovered"}, "closed"),
        ]
        assert audited[-1].new["outcome"] == "pack_recovered"
        assert audited[-1].reason == plan[-1][1]
        assert audited[0].reason is None  # no note given
        assert {r.actor_id for r in audited} == {me.user_id}
        assert {r.site_id for r in audited} == {fh.site_id(seeded, GSTT)}
        assert [r.at for r in audited] == times

    # the list says it all: the status, the outcome, the history, nothing more to do
    with seeded.uow() as uow:
        (row,) = seeded.custody.alerts(uow, me)
    assert (row.status, row.outcome, len(row.history)) == ("closed", "pack_recovered", 4)
    assert row.history[-1].note == plan[-1][1]


def test_steps_the_transitions_do_not_allow_are_refused_naming_the_field(
    seeded: App, alerted: Alerted
) -> None:
    a = alerted.alert_id
    ph = "pharmacist"
    # from open, only an acknowledgement: closing at once skips who owns it
    exc = refused(seeded, ph, a, "closed", InvalidTransition, note="n", outcome="pack_recovered")
    assert exc.field == "status" and "from open to closed (allowed: acknowledged)" in exc.message
    exc = refused(seeded, ph, a, "done", ValidationFailed, note="n")
    assert exc.field == "status" and "unknown status 'done'" in exc.message
    exc = refused(seeded, ph, a, "", ValidationFailed)
    assert exc.field == "status"
    step(seeded, ph, a, "acknowledged")
    exc = refused(seeded, ph, a, "acknowledged", ValidationFailed, note="again")
    assert exc.field == "status" and "already acknowledged" in exc.message
    # a step after the first needs a note saying what was done; a note has a length limit
    exc = refused(seeded, ph, a, "patient_contacted", ValidationFailed, note="   ")
    assert exc.field == "note" and "needs a note" in exc.message
    exc = refused(seeded, ph, a, "patient_contacted", ValidationFailed, note="x" * (NOTE_MAX + 1))
    assert exc.field == "note" and "at most 2000" in exc.message
    # an outcome belongs to closing only
    exc = refused(
        seeded, ph, a, "patient_contacted", ValidationFailed, note="n", outcome="pack_recovered"
    )
    assert exc.field == "outcome" and "only when closing" in exc.message
    # closing names its outcome, one of three, and a note
    exc = refused(seeded, ph, a, "closed", ValidationFailed, note="done")
    assert exc.field == "outcome" and "needs its outcome" in exc.message
    exc = refused(seeded, ph, a, "closed", ValidationFailed, note="done", outcome="fine")
    assert exc.field == "outcome" and "unknown outcome 'fine'" in exc.message
    exc = refused(seeded, ph, a, "closed", ValidationFailed, outcome="pack_not_recoverable")
    assert exc.field == "note"
    # this pack was dispensed then recalled: it is with its patient, "nothing to do" is no end
    exc = refused(seeded, ph, a, "closed", ValidationFailed, note="n", outcome="no_action_needed")
    assert exc.field == "outcome" and "is with its patient" in exc.message
    # once recorded as recovered, closing cannot say the opposite
    step(seeded, ph, a, "pack_recovered", note="brought back")
    exc = refused(
        seeded, ph, a, "closed", ValidationFailed, note="n", outcome="pack_not_recoverable"
    )
    assert exc.field == "outcome" and "outcome pack_recovered" in exc.message
    exc = refused(seeded, ph, a, "patient_contacted", InvalidTransition, note="n")
    assert exc.field == "status" and "(allowed: closed)" in exc.message
    step(seeded, ph, a, "closed", note="destroyed", outcome="pack_recovered")
    assert state(seeded, a) == ("closed", 3, 3)


def test_a_closed_alert_is_reopened_only_explicitly_with_a_reason(
    seeded: App, alerted: Alerted
) -> None:
    a = alerted.alert_id
    ph = "pharmacist"
    step(seeded, ph, a, "acknowledged")
    step(seeded, ph, a, "closed", note="no answer for a week", outcome="pack_not_recoverable")
    # no step but reopening; reopening needs the reason
    for status in ("patient_contacted", "pack_recovered", "pack_not_recoverable", "open"):
        exc = refused(seeded, ph, a, status, InvalidTransition, note="n")
        assert exc.field == "status" and "from closed" in exc.message, status
    exc = refused(seeded, ph, a, "acknowledged", ValidationFailed)
    assert exc.field == "note" and "reopening a closed alert needs a note" in exc.message
    # the page the pharmacist saw said open: the alert has moved on since
    exc = refused(
        seeded, ph, a, "acknowledged", Conflict, note="the patient called", expected_status="open"
    )
    assert exc.code == "alert_changed" and exc.field == "status"
    assert "is now closed" in exc.message

    step(seeded, ph, a, "acknowledged", note="the patient called back: pack found")
    with seeded.uow() as uow:
        (row,) = seeded.custody.alerts(uow, fh.actor(seeded, ph))
        audited = transitions(uow.session, a)
    assert row.status == "acknowledged" and row.outcome is None  # no longer closed
    assert [h.reopened for h in row.history] == [False, False, True]
    assert row.history[-1].from_status == "closed"
    assert audited[-1].new["reopened"] is True
    assert audited[-1].reason == "the patient called back: pack found"
    # the earlier closing stays in the history, with its outcome
    assert row.history[1].outcome == "pack_not_recoverable"


# --- who may act -------------------------------------------------------------------------------
def test_only_a_pharmacist_of_the_alerts_site_acts_the_others_read(
    seeded: App, alerted: Alerted
) -> None:
    control_pharmacist(seeded)
    a = alerted.alert_id  # GSTT-PH's
    # MAN-PH's pharmacist: another site's alert, refused and the refusal on record
    exc = refused(seeded, "pharmacist-man", a, "acknowledged", Forbidden)
    assert exc.code == "other_site" and exc.field == "site_id"
    fh.assert_refusal_audited(seeded, exc, "custody_alert", a)
    # the control site's QP, the administrator, the auditor read it; they do not act
    for username in ("qp", "admin", "auditor"):
        exc = refused(seeded, username, a, "acknowledged", Forbidden)
        assert exc.code == "forbidden", username
        with seeded.uow() as uow:
            listed = {r.id: r for r in seeded.custody.alerts(uow, fh.actor(seeded, username))}
            assert seeded.custody.alert(uow, fh.actor(seeded, username), a).status == "open"
        assert listed[a].status == "open"
    # GSTT-PH's operator (no trace.read, no dispense) neither reads nor acts
    exc = refused(seeded, "operator", a, "acknowledged", Forbidden)
    assert exc.code == "forbidden"
    # the alert of no site belongs to the network: a site's pharmacist never acts on it
    exc = refused(seeded, "pharmacist", alerted.network_alert_id, "acknowledged", Forbidden)
    assert exc.code == "other_site"
    # MAN-PH's pharmacist on MAN-PH's own alert; a control-site pharmacist reaches the network
    step(seeded, "pharmacist-man", alerted.other_alert_id, "acknowledged")
    step(seeded, "pharmacist-ctrl", alerted.network_alert_id, "acknowledged")
    # and the site's own pharmacist, last
    step(seeded, "pharmacist", a, "acknowledged", note="on it")
    assert state(seeded, a) == ("acknowledged", 1, 1)
    # an unknown alert is named as such
    with pytest.raises(DomainError) as caught:
        step(seeded, "pharmacist", "alert_NOPE", "acknowledged")
    assert caught.value.code == "not_found" and caught.value.field == "alert_id"


def test_a_failed_audit_write_leaves_nothing_of_the_step(seeded: App, alerted: Alerted) -> None:
    """The database refuses the step's audit row (a trigger): the status, who and when, and the
    history step are rolled back with it. Without the trigger the same step succeeds."""
    a = alerted.alert_id
    engine = seeded.engine
    if engine.dialect.name == "sqlite":
        install = [
            "CREATE TRIGGER test_refuse_alert_audit BEFORE INSERT ON audit_entries "
            "WHEN NEW.entity_type = 'custody_alert' AND NEW.action = 'transition' "
            "BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END"
        ]
        remove = ["DROP TRIGGER test_refuse_alert_audit"]
    else:
        install = [
            "CREATE FUNCTION test_refuse_alert_audit() RETURNS trigger AS $$ BEGIN "
            "IF NEW.entity_type = 'custody_alert' AND NEW.action = 'transition' THEN "
            "RAISE EXCEPTION 'audit refused by the test'; END IF; RETURN NEW; END $$ "
            "LANGUAGE plpgsql",
            "CREATE TRIGGER test_refuse_alert_audit BEFORE INSERT ON audit_entries "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_alert_audit()",
        ]
        remove = [
            "DROP TRIGGER test_refuse_alert_audit ON audit_entries",
            "DROP FUNCTION test_refuse_alert_audit()",
        ]
    with engine.begin() as conn:
        for sql in install:
            conn.execute(text(sql))
    try:
        with pytest.raises(DBAPIError, match="audit refused by the test"):
            step(seeded, "pharmacist", a, "acknowledged", note="taken on")
    finally:
        with engine.begin() as conn:
            for sql in remove:
                conn.execute(text(sql))
    assert state(seeded, a) == ("open", 0, 0)
    with seeded.uow() as uow:
        alert = uow.session.get(CustodyAlert, a)
        assert alert is not None
        assert (alert.status_changed_at, alert.status_changed_by, alert.row_version) == (
            None,
            None,
            1,
        )
    step(seeded, "pharmacist", a, "acknowledged", note="taken on")
    assert state(seeded, a) == ("acknowledged", 1, 1)


def test_two_pharmacists_acting_on_one_alert_at_once_one_wins(
    seeded: App, alerted: Alerted
) -> None:
    """The second reads the alert open, the first acknowledges it meanwhile: the second's
    commit finds the row version moved, Conflict (concurrent_change), nothing of it kept."""
    a = alerted.alert_id
    me = fh.actor(seeded, "pharmacist")
    with pytest.raises(Conflict) as caught, seeded.uow() as second:
        # read at version 1 (held: the session keeps only what is referenced)
        held = second.session.get(CustodyAlert, a)
        assert held is not None and held.row_version == 1
        with seeded.uow() as first:
            seeded.custody.update_alert(first, me, a, status="acknowledged", note="first")
        seeded.custody.update_alert(second, me, a, status="acknowledged", note="second")
    assert caught.value.code == "concurrent_change"
    assert state(seeded, a) == ("acknowledged", 1, 1)
    with seeded.uow() as uow:
        (only,) = uow.session.scalars(
            select(CustodyAlertAction).where(CustodyAlertAction.alert_id == a)
        )
        assert only.note == "first"


def test_open_alerts_come_first_then_the_newest(seeded: App, alerted: Alerted) -> None:
    """Raised newest first: the network's, MAN-PH's, GSTT-PH's. Once MAN-PH's is closed (a
    scan that matched no pack: nothing to recover), it goes after GSTT-PH's older open one."""
    m = alerted.other_alert_id
    step(seeded, "pharmacist-man", m, "acknowledged")
    step(seeded, "pharmacist-man", m, "closed", note="mistyped scan", outcome="no_action_needed")
    with seeded.uow() as uow:
        listed = [r.id for r in seeded.custody.alerts(uow, fh.actor(seeded, "qp"))]
        closed = [r.id for r in seeded.custody.alerts(uow, fh.actor(seeded, "qp"), status="closed")]
        still = [r.id for r in seeded.custody.alerts(uow, fh.actor(seeded, "qp"), status="open")]
    assert listed == [alerted.network_alert_id, alerted.alert_id, m]
    assert closed == [m]
    assert still == [alerted.network_alert_id, alerted.alert_id]


# --- the API -----------------------------------------------------------------------------------
def _token(client: TestClient, username: str) -> dict[str, str]:
    res = client.post(
        "/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD}
    )
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


def test_the_api_lists_steps_and_refuses_as_the_service(seeded: App, alerted: Alerted) -> None:
    client = TestClient(create_web_app(seeded))
    ph, man, qp = (_token(client, u) for u in ("pharmacist", "pharmacist-man", "qp"))
    a = alerted.alert_id
    url = f"/api/v1/custody/alerts/{a}/status"

    listed = client.get("/api/v1/custody/alerts", headers=ph).json()
    assert [r["id"] for r in listed] == [a]
    assert listed[0]["status"] == "open" and listed[0]["next_statuses"] == ["acknowledged"]
    assert listed[0]["patient_ref"] == alerted.patient_ref

    # another site's pharmacist and the control site's QP: refused, nothing changed
    res = client.post(url, json={"status": "acknowledged"}, headers=man)
    assert res.status_code == 403 and res.json()["error"]["code"] == "other_site"
    res = client.post(url, json={"status": "acknowledged"}, headers=qp)
    assert res.status_code == 403 and res.json()["error"]["code"] == "forbidden"
    assert client.get(f"/api/v1/custody/alerts/{a}", headers=man).status_code == 403
    # bad input: 422 naming the field
    res = client.post(url, json={"status": "closed", "note": "x"}, headers=ph)
    assert res.status_code == 409 and res.json()["error"]["field"] == "status"
    res = client.post(url, json={"status": "acknowledged", "outcome": "x"}, headers=ph)
    assert res.status_code == 422 and res.json()["error"]["field"] == "outcome"
    assert state(seeded, a) == ("open", 0, 0)

    res = client.post(url, json={"status": "acknowledged", "expected_status": "open"}, headers=ph)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["status"] == "acknowledged" and body["status_words"] == "Acknowledged"
    assert body["next_statuses"] == [
        "patient_contacted",
        "pack_recovered",
        "pack_not_recoverable",
        "closed",
    ]
    assert body["history"][0]["acted_by_name"] == fh.actor(seeded, "pharmacist").full_name
    res = client.post(url, json={"status": "acknowledged", "expected_status": "open"}, headers=ph)
    assert res.status_code == 409 and res.json()["error"]["code"] == "alert_changed"
    res = client.post(
        url,
        json={"status": "closed", "note": "unreachable", "outcome": "pack_not_recoverable"},
        headers=ph,
    )
    assert res.status_code == 200 and res.json()["outcome"] == "pack_not_recoverable"

    # the filter; the QP reads the status and history but is offered no step
    open_ids = [
        r["id"] for r in client.get("/api/v1/custody/alerts?status=open", headers=qp).json()
    ]
    closed = client.get("/api/v1/custody/alerts?status=closed", headers=qp).json()
    assert a not in open_ids and [r["id"] for r in closed] == [a]
    assert closed[0]["next_statuses"] == [] and len(closed[0]["history"]) == 2
    res = client.get("/api/v1/custody/alerts?status=shut", headers=qp)
    assert res.status_code == 422 and res.json()["error"]["field"] == "status"
    # all: the open ones first, then newest first (the closed one goes last)
    every = [r["id"] for r in client.get("/api/v1/custody/alerts", headers=qp).json()]
    assert every == [alerted.network_alert_id, alerted.other_alert_id, a]


# --- the page ----------------------------------------------------------------------------------
def _form(page: str, alert_id: str) -> dict[str, str]:
    """The hidden fields of an alert's step form (CSRF token, the status it shows, the
    filter), or {} when the page offers none."""
    found = re.search(
        rf'<form method="post" action="/custody/alerts/{alert_id}"(.*?)</form>', page, re.S
    )
    if found is None:
        return {}
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', found.group(1)))


def _options(page: str, alert_id: str) -> list[str]:
    found = re.search(
        rf'<form method="post" action="/custody/alerts/{alert_id}".*?<select name="status"'
        r"[^>]*>(.*?)</select>",
        page,
        re.S,
    )
    return re.findall(r'<option value="([^"]+)"', found.group(1)) if found else []


def test_the_page_flow_from_open_to_closed(seeded: App, alerted: Alerted) -> None:
    a = alerted.alert_id
    browser = fh.web_login(seeded, "pharmacist")
    page = get(browser)
    row = rows(page)[a]
    assert "Open: nobody has taken it on yet" in row
    assert _options(page, a) == ["acknowledged"]
    hidden = _form(page, a)
    assert hidden["expected_status"] == "open" and hidden["csrf_token"]

    def post(**data: str) -> Any:
        return browser.post(f"/custody/alerts/{a}", data=hidden | data, follow_redirects=False)

    # a form from elsewhere (no token) changes nothing
    res = browser.post(f"/custody/alerts/{a}", data={"status": "acknowledged"})
    assert res.status_code == 403 and "the form expired" in res.text
    assert state(seeded, a) == ("open", 0, 0)

    res = post(status="acknowledged")
    assert res.status_code == 303 and res.headers["location"].endswith(f"#alert-{a}")
    page = browser.get(res.headers["location"]).text
    assert f"Alert {a}: Acknowledged." in page  # said once, after the step
    row = rows(page)[a]
    me = fh.actor(seeded, "pharmacist").full_name
    assert "<b>Acknowledged</b>" in row and me in row
    assert _options(page, a) == [
        "patient_contacted",
        "pack_recovered",
        "pack_not_recoverable",
        "closed",
    ]
    hidden = _form(page, a)

    # refused: the page comes back with the reason, the field and what was typed
    res = post(status="closed", note="called twice, no answer")
    assert res.status_code == 422
    assert "closing an alert needs its outcome" in res.text and "(field: outcome)" in res.text
    assert "called twice, no answer</textarea>" in res.text
    assert state(seeded, a) == ("acknowledged", 1, 1)

    res = post(status="patient_contacted", note="phoned <the> patient")
    assert res.status_code == 303
    hidden = _form(browser.get("/custody/alerts").text, a)
    res = post(status="closed", note="pack returned", outcome="pack_recovered")
    assert res.status_code == 303
    page = browser.get("/custody/alerts?status=closed").text
    row = rows(page)[a]
    assert "<b>Closed</b>: the pack was recovered" in row
    assert "phoned &lt;the&gt; patient" in row  # notes are escaped
    assert len(re.findall(r'<li class="alert-step"', row)) == 3
    assert _options(page, a) == ["acknowledged"] and "Reopen (give the reason)" in row
    assert a not in rows(get(browser, status="open"))
    assert 'id="no-alerts"' in get(browser, status="open")


def test_the_page_refuses_another_site_and_offers_readers_no_form(
    seeded: App, alerted: Alerted
) -> None:
    a = alerted.alert_id
    man = fh.web_login(seeded, "pharmacist-man")
    token = _form(get(man), alerted.other_alert_id)["csrf_token"]
    res = man.post(f"/custody/alerts/{a}", data={"csrf_token": token, "status": "acknowledged"})
    assert res.status_code == 404  # answered as an unknown alert
    assert alerted.patient_ref not in res.text and alerted.unit.serial not in res.text
    assert state(seeded, a) == ("open", 0, 0)
    for username in ("qp", "auditor", "admin"):
        browser = fh.web_login(seeded, username)
        page = get(browser)
        assert "Open: nobody has taken it on yet" in rows(page)[a], username
        assert not _form(page, a), username  # readers get no form
        token = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/account").text)
        assert token is not None
        res = browser.post(
            f"/custody/alerts/{a}", data={"csrf_token": token.group(1), "status": "acknowledged"}
        )
        assert res.status_code == 403, username
    assert state(seeded, a) == ("open", 0, 0)


# --- the command line ------------------------------------------------------------------------
def test_the_command_line_steps_and_lists(
    seeded: App, alerted: Alerted, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests import cli_helpers

    import nearfab.cli.context as cli_context

    real_build = cli_context.build_app
    monkeypatch.setattr(
        cli_context,
        "build_app",
        lambda *a, **kw: real_build(*a, **{**kw, "clock": seeded.clock}),
    )
    env = {"NEARFAB_DATABASE_URL": seeded.engine.url.render_as_string(hide_password=False)}

    def nearfab(*args: str) -> tuple[int, Any]:
        done = cli_helpers.run([*args, "--json"], env=env, data_dir=seeded.settings.data_dir)
        return done.returncode, json.loads(done.stdout)

    login = ["--user", "pharmacist", "--password", fh.TEST_PASSWORD]
    a = alerted.alert_id
    code, out = nearfab("custody", "alert", a, "--status", "patient_contacted", *login)
    assert code == 2 and out["error"]["field"] == "status"
    code, out = nearfab("custody", "alert", a, "--status", "acknowledged", *login)
    assert code == 0 and out["status"] == "acknowledged", out
    code, out = nearfab(
        "custody", "alert", a, "--status", "patient_contacted", "--note", "phoned", *login
    )
    assert code == 0 and [h["to_status"] for h in out["history"]] == [
        "acknowledged",
        "patient_contacted",
    ]
    code, out = nearfab("custody", "alerts", "--status", "open")
    assert code == 0
    assert {r["id"]: r["status"] for r in out}[a] == "patient_contacted"
    assert state(seeded, a) == ("patient_contacted", 2, 2)
    assert AlertStatus(out[0]["status"])  # a status of the enum
