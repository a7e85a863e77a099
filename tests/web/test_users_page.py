"""The users page names each account's home site (the site's name, not its database id), and
the new-account form picks the home site from a list holding only the sites this
administrator may give an account to (a site administrator: their own site; a network
administrator: every site and "network"). TestClient, session login, the seeded demo."""

from __future__ import annotations

import html
import re

import pytest
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.identity import User

seeded = fh.seeded
pytestmark = pytest.mark.parametrize("seeded", ["sqlite"], indirect=True)

# the demo's sites (src/nearfab/demo.py SITES), written out by hand
GSTT = "St Thomas' Hospital Pharmacy"
ALL_SITES = {
    "nearfab Control Site (licence holder) (CTRL)",
    "St Thomas' Hospital Pharmacy (GSTT-PH)",
    "Manchester Children's Hospital Pharmacy (MAN-PH)",
    "Mobile Unit 1 (MOB-1)",
}


def _row(page: str, username: str) -> str:
    found = re.search(
        rf'<tr>\s*<td><a href="/users/[^"]+">{re.escape(username)}</a>.*?</tr>', page, re.S
    )
    assert found, f"no row for {username}"
    return html.unescape(found.group(0))


def _options(page: str) -> list[tuple[str, str]]:
    select = page.split('<select name="home_site_id" id="home-site">')[1].split("</select>")[0]
    return [
        (v, html.unescape(t))
        for v, t in re.findall(r'<option value="([^"]*)">([^<]*)</option>', select)
    ]


def test_users_page_shows_site_names_not_ids(seeded: App) -> None:
    gstt_id = fh.site_id(seeded, "GSTT-PH")
    page = fh.web_login(seeded, "admin").get("/users")
    assert page.status_code == 200
    row = _row(page.text, "pharmacist")
    assert GSTT in row
    assert gstt_id not in row
    assert "network" in _row(page.text, "admin")  # the network administrator has no site
    one = fh.web_login(seeded, "admin").get(f"/users/{fh.actor(seeded, 'pharmacist').user_id}")
    assert GSTT in html.unescape(one.text)


def test_network_admin_picks_any_site_or_network(seeded: App) -> None:
    page = fh.web_login(seeded, "admin").get("/users").text
    options = _options(page)
    by_id = {fh.site_id(seeded, c): c for c in ("CTRL", "GSTT-PH", "MAN-PH", "MOB-1")}
    assert {t for v, t in options if v} == ALL_SITES
    assert {v for v, _ in options if v} == set(by_id)
    assert [v for v, _ in options if not v] == [""]  # the network account option


def test_site_admin_picks_only_their_own_site_and_can_create_there(seeded: App) -> None:
    site_admin = fh.create_user(seeded, "gstt-admin", ["admin"], "GSTT-PH")
    fh.edit(seeded, User, site_admin.user_id, must_change_password=False)  # chose their own
    client = fh.web_login(seeded, "gstt-admin")
    page = client.get("/users").text
    assert _options(page) == [(fh.site_id(seeded, "GSTT-PH"), f"{GSTT} (GSTT-PH)")]
    # the option's value creates an account at that site
    response = client.post(
        "/users",
        data={
            "username": "new-operator",
            "full_name": "New Operator",
            "password": "a-temporary-pass-9",
            "roles": "operator",
            "home_site_id": fh.site_id(seeded, "GSTT-PH"),
            "csrf_token": fh.csrf(page),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"].startswith("/users/usr")
    # attacking: a value for another site, typed by hand, is still refused by the service
    response = client.post(
        "/users",
        data={
            "username": "sneaky",
            "full_name": "Sneaky",
            "password": "a-temporary-pass-9",
            "roles": "operator",
            "home_site_id": fh.site_id(seeded, "MAN-PH"),
            "csrf_token": fh.csrf(page),
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == "/users"
    with seeded.uow() as uow:
        assert seeded.users.by_username(uow, "sneaky") is None
