"""Shared steps for the release tests with a test family (results pending at release,
exceptional release): the demo family with a test-only release part, signing accounts, tokens."""

from __future__ import annotations

from typing import Any

from tests import flow_helpers as fh

from nearfab.bootstrap import App


class _TestFamily:
    """The demo family with `release` replaced (its other parts are the real one's, so a batch
    is made as usual)."""

    def __init__(self, real: Any, release: Any) -> None:
        self._real, self.release = real, release

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def register_release(app: App, release: Any) -> None:
    """Register the demo family (solid_dose) again, with the test's release part."""
    app.families.register(_TestFamily(app.families.get("solid_dose"), release))


def user(app: App, username: str, roles: list[str], site_code: str) -> None:
    """An account of `roles` at the site, with its own password (it may log in and sign)."""
    with app.uow() as uow:
        made = app.users.create_user(
            uow,
            fh.actor(app, "admin"),
            username=username,
            full_name=username.title(),
            roles=roles,
            password=fh.TEST_PASSWORD,
            home_site_id=app.network.get_site(uow, site_code).id,
            temporary=False,
        )
    fh.approve_pending(app, made.id)


def token(app: App, username: str) -> dict[str, str]:
    """The Authorization header of a bearer token issued to `username`."""
    with app.uow() as uow:
        issued, _ = app.users.issue_token(uow, username, fh.TEST_PASSWORD)
    return {"Authorization": f"Bearer {issued}"}
