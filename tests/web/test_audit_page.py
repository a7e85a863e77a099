"""The audit-trail page for people: each row's action in words ("Material lot on hold", not
"transition"), its before/after as a compact diff of the changed keys only, filters by
record, user, action and time over the actions the test performs itself (counted by hand),
pages of 50 with the filters kept, and a role without the audit permission still refused.
TestClient, session login, the seeded demo (SQLite; the search itself is tested on both)."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.identity import AuditEntry
from nearfab.materials import MaterialLot
from nearfab.web.audit import ABSENT, ACTION_WORDS, action_words, field_diff

seeded = fh.seeded
ON_SQLITE = pytest.mark.parametrize("seeded", ["sqlite"], indirect=True)


# --- the pure parts, against hand-written expectations --------------------------------------
def test_field_diff_lists_changed_keys_only() -> None:
    old = {"status": "approved", "quantity": 10, "site": "GSTT-PH", "note": None}
    new = {"status": "on_hold", "quantity": 10, "site": "GSTT-PH", "note": "complaint", "x": [1]}
    assert field_diff(old, new) == [
        ("status", "approved", "on_hold"),
        ("note", "null", "complaint"),
        ("x", ABSENT, "[1]"),
    ]


def test_field_diff_follows_nested_objects_and_marks_absent_keys() -> None:
    old = {"lab": {"ph": 7.0, "count": 3}, "gone": True}
    new = {"lab": {"ph": 7.2, "count": 3}}
    assert field_diff(old, new) == [("lab.ph", "7.0", "7.2"), ("gone", "true", ABSENT)]
    # a created record: every key is new; nothing before and nothing after: no change
    assert field_diff(None, {"a": "b"}) == [("a", ABSENT, "b")]
    assert field_diff(None, None) == [] and field_diff({"a": 1}, {"a": 1}) == []


def test_field_diff_cuts_long_values() -> None:
    ((_, _, after),) = field_diff({}, {"text": "y" * 500})
    assert len(after) == 120 and after.endswith("…")


def test_actions_in_words() -> None:
    assert action_words("transition", "batch", {"status": "released"}) == "Batch released"
    assert action_words("transition", "material_lot", {"status": "on_hold"}) == (
        "Material lot on hold"
    )
    assert action_words("create", "master_file", {"code": "X"}) == "Master file created"
    assert action_words("login_failed", "user", None) == "User log-in failed"
    assert action_words("something_new", "order", None) == "Order something new"
    # every AuditAction has words of its own (no code shown as-is)
    from nearfab.identity import AuditAction

    assert set(ACTION_WORDS) == {a.value for a in AuditAction}
    assert all("_" not in w for w in ACTION_WORDS.values())


# --- the page -------------------------------------------------------------------------------
def _rows(page: str) -> list[str]:
    assert page.count('id="audit-rows"') <= 1
    if 'id="audit-rows"' not in page:
        return []
    body = page.split('id="audit-rows"')[1].split("<tbody>")[1].split("</tbody>")[0]
    return [html.unescape(r) for r in re.findall(r"<tr>.*?</tr>", body, re.S)]


def _count(page: str) -> int:
    found = re.search(r'<p id="audit-count">(\d+) row', page)
    assert found, "no row count"
    return int(found.group(1))


def _gstt_lots(app: App, n: int) -> list[str]:
    gstt = fh.site_id(app, "GSTT-PH")
    with app.uow() as uow:
        ids = list(
            uow.session.scalars(
                select(MaterialLot.id)
                .where(MaterialLot.status == "approved", MaterialLot.site_id == gstt)
                .order_by(MaterialLot.id)
            )
        )
    assert len(ids) >= n, ids
    return ids[:n]


@ON_SQLITE
def test_filters_by_record_user_action_and_time(seeded: App, clock: ManualClock) -> None:
    app = seeded
    clock.advance(30 * 86400)  # well after anything the demo wrote
    t0 = clock.now()
    qp, qp2 = fh.actor(app, "qp"), fh.create_user(app, "qp-two", ["qp"], "CTRL")
    lot1, lot2 = _gstt_lots(app, 2)
    # the test's own actions: three status changes of two lots by two QPs, an hour apart
    with app.uow() as uow:  # t0 + 0 h: qp puts lot 1 on hold
        app.materials.set_status(uow, qp, lot1, "on_hold", reason="complaint 1")
    clock.advance(3600)
    with app.uow() as uow:  # t0 + 1 h: qp-two puts lot 2 on hold
        app.materials.set_status(uow, qp2, lot2, "on_hold", reason="complaint 2")
    clock.advance(3600)
    with app.uow() as uow:  # t0 + 2 h: qp approves lot 1 again
        app.materials.set_status(uow, qp, lot1, "approved", reason="complaint 1 closed")
    clock.advance(60)
    since = (t0 - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    client = fh.web_login(app, "auditor")

    def get(**params: str) -> str:
        answer = client.get(
            "/audit", params={"since": since, "entity_type": "material_lot", **params}
        )
        assert answer.status_code == 200, answer.text
        return str(answer.text)

    every = get()
    assert _count(every) == 3 and len(_rows(every)) == 3
    newest = _rows(every)[0]  # newest first: lot 1 approved again
    assert "Material lot approved" in newest and "transition" not in newest
    assert "status: on hold → approved" in re.sub(r"<[^>]+>", "", newest)
    assert "complaint 1 closed" in newest

    by_record = get(entity_id=lot1)
    assert _count(by_record) == 2 and all(lot1 in r for r in _rows(by_record))
    by_user = get(who=qp2.user_id)
    assert _count(by_user) == 1 and "complaint 2" in _rows(by_user)[0]
    by_name = get(who="qp-two")  # a part of the printed name matches too ("Qp-Two")
    assert _count(by_name) == 1
    assert _count(get(action="transition")) == 3
    assert _count(get(action="create")) == 0
    until = (t0 + timedelta(minutes=90)).strftime("%Y-%m-%dT%H:%M:%S")
    first_two = get(until=until)
    assert _count(first_two) == 2
    assert not any("complaint 1 closed" in r for r in _rows(first_two))
    # the action list is in words, and the chosen one stays chosen
    assert '<option value="transition" selected>status changed</option>' in get(action="transition")
    # a bad time names its field
    bad = client.get("/audit", params={"since": "yesterday"})
    assert bad.status_code == 422 and "since" in bad.text


@ON_SQLITE
def test_pages_of_fifty_keep_the_filters(seeded: App) -> None:
    client = fh.web_login(seeded, "auditor")
    with seeded.uow() as uow:  # counted by the database, not by the page
        total = int(uow.session.scalar(select(func.count()).select_from(AuditEntry)) or 0)
        seqs = list(uow.session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq.desc())))
    assert total > 50, total  # the demo writes more than a page
    first = client.get("/audit").text
    assert _count(first) == total
    assert f"page 1 of {-(-total // 50)}" in first
    shown = [int(s) for s in re.findall(r'<td class="num">(\d+)</td>', first)]
    assert shown == seqs[:50]
    second = client.get("/audit", params={"page": 2}).text
    assert [int(s) for s in re.findall(r'<td class="num">(\d+)</td>', second)] == seqs[50:100]
    assert 'rel="prev"' in second and ('rel="next"' in second) == (total > 100)
    # a filtered page's "Older" link keeps the filter (a filter every row passes)
    filtered = client.get("/audit", params={"since": "2000-01-01T00:00:00"}).text
    assert _count(filtered) == total
    older = re.search(r'<a href="([^"]+)" rel="next"', filtered)
    assert older, "no link to the older rows"
    link = html.unescape(older.group(1))
    assert "since=2000-01-01T00%3A00%3A00" in link and "page=2" in link
    assert [int(s) for s in re.findall(r'<td class="num">(\d+)</td>', client.get(link).text)] == (
        seqs[50:100]
    )


@ON_SQLITE
def test_roles_without_the_audit_trail_are_refused(seeded: App) -> None:
    for username in ("clinician", "operator", "planner"):
        answer = fh.web_login(seeded, username).get("/audit?who=qp")
        assert answer.status_code == 403, (username, answer.status_code)
        assert 'id="audit-rows"' not in answer.text


@ON_SQLITE
def test_a_pharmacist_still_sees_only_their_own_site(seeded: App) -> None:
    client = fh.web_login(seeded, "pharmacist")
    man = fh.site_id(seeded, "MAN-PH")
    answer = client.get("/audit", params={"site_id": man})
    assert answer.status_code in (403, 404) or _count(answer.text) == 0
    rows = _rows(client.get("/audit").text)
    assert rows and all("GSTT-PH" in r for r in rows)
