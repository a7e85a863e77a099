"""Issue 17: a custody alert's follow-up at a site node reaches the control site as records of
their own (kind `alert`), the newest state of each alert shown on the control's alerts page.

Two real nodes (test_replication_mqtt.nodes). The alert is raised and followed up at the
site through custody's own use cases; the expected state is read from the site's own tables
(custody_alerts, custody_alert_actions), never from what the control shows."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.quality.release_helpers import token
from tests.replication.test_release_across import deliver, unsent
from tests.replication.test_replication_mqtt import nodes

from nearfab.bootstrap import App
from nearfab.common.errors import ValidationFailed
from nearfab.custody.enums import AlertKind
from nearfab.custody.models import CustodyAlert, CustodyAlertAction
from nearfab.replication import site_alerts
from nearfab.web.server import create_web_app

__all__ = ["nodes"]

MESSAGE = "pack label does not match the GS1 data carrier: quarantined at the counter"


def raise_and_follow(site: App) -> str:
    """A suspected falsified pack scanned at St Thomas' node, acknowledged, then closed."""
    fh.site_user(site, "ph-gstt", "pharmacist", "GSTT-PH")
    actor = fh.actor(site, "ph-gstt")
    with site.uow() as uow:
        alert = site.custody.packs.raise_alert(
            uow, actor, AlertKind.SUSPECTED_FALSIFIED, "(01)09506000134352(21)FAKE", MESSAGE
        )
        alert_id = alert.id
        uow.commit()
    with site.uow() as uow:
        site.custody.update_alert(uow, actor, alert_id, status="acknowledged")
    return alert_id


def close(site: App, alert_id: str, outcome: str, note: str) -> None:
    """The site's pharmacist closes the alert (custody's own use case)."""
    with site.uow() as uow:
        site.custody.update_alert(
            uow, fh.actor(site, "ph-gstt"), alert_id, status="closed", outcome=outcome, note=note
        )


def site_state(site: App, alert_id: str) -> dict[str, Any]:
    with site.uow() as uow:
        alert = uow.session.get(CustodyAlert, alert_id)
        assert alert is not None
        steps = list(
            uow.session.scalars(
                select(CustodyAlertAction)
                .where(CustodyAlertAction.alert_id == alert_id)
                .order_by(CustodyAlertAction.id)
            )
        )
        return {
            "status": alert.status,
            "steps": len(steps),
            "last_note": steps[-1].note if steps else None,
            "last_by": steps[-1].acted_by_name if steps else None,
            "outcome": steps[-1].outcome if steps else None,
        }


def shown_at_control(control: App, alert_id: str, status: str = "all") -> dict[str, Any] | None:
    with control.uow() as uow:
        rows = site_alerts(uow, fh.actor(control, "qp"), status=status)
    found = [r for r in rows if r["alert_id"] == alert_id]
    assert len(found) <= 1
    return found[0] if found else None


def test_an_alerts_follow_up_at_a_site_node_reaches_the_control_step_by_step(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    alert_id = raise_and_follow(site)
    records = [r for r in unsent(site) if r.kind == "alert"]
    # one record after each audited step: raised, acknowledged
    assert [r.source_ref.split("@")[0] for r in records] == [f"alert:{alert_id}"] * 2
    deliver(site, control)

    expected = site_state(site, alert_id)
    shown = shown_at_control(control, alert_id)
    assert shown is not None
    assert (shown["status"], shown["steps"], shown["kind"]) == (
        expected["status"],
        expected["steps"],
        "suspected_falsified",
    )
    assert shown["site_code"] == "GSTT-PH" and shown["message"] == MESSAGE
    assert shown_at_control(control, alert_id, "closed") is None

    # the site closes it; the next pass carries the new state
    close(site, alert_id, "no_action_needed", "a relabelled demonstration pack; no patient")
    deliver(site, control)
    expected = site_state(site, alert_id)
    shown = shown_at_control(control, alert_id, "closed")
    assert shown is not None and shown["status"] == expected["status"] == "closed"
    assert shown["steps"] == expected["steps"] == 2
    assert shown["last_step"]["note"] == expected["last_note"]
    assert shown["last_step"]["outcome"] == expected["outcome"] == "no_action_needed"
    assert shown["last_step"]["acted_by_name"] == expected["last_by"]
    assert shown_at_control(control, alert_id, "open") is None

    # the control's alerts page shows it in its own section, with the site's note
    page = fh.web_login(control, "qp").get("/custody/alerts")
    assert page.status_code == 200
    assert f'id="site-alert-{alert_id}"' in page.text
    assert "a relabelled demonstration pack" in page.text
    # a site node's page has no such section (it is the control's view)
    assert 'id="site-node-alerts"' not in fh.web_login(site, "qp").get("/custody/alerts").text


def test_the_api_lists_them_at_the_control_only_and_for_the_readers_sites_only(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    alert_id = raise_and_follow(site)
    deliver(site, control)
    fh.site_user(control, "ph-man", "pharmacist", "MAN-PH")
    api = TestClient(create_web_app(control))
    listed = api.get("/api/v1/custody/site-alerts", headers=token(control, "qp"))
    assert listed.status_code == 200
    (row,) = [r for r in listed.json() if r["alert_id"] == alert_id]
    expected = site_state(site, alert_id)
    assert (row["status"], row["steps"], row["site_code"]) == (
        expected["status"],
        expected["steps"],
        "GSTT-PH",
    )
    closed = api.get("/api/v1/custody/site-alerts?status=closed", headers=token(control, "qp"))
    assert closed.status_code == 200 and closed.json() == []  # acknowledged, not closed
    other = api.get("/api/v1/custody/site-alerts", headers=token(control, "ph-man"))
    assert other.status_code == 200 and other.json() == []  # another site's reader
    bad = api.get("/api/v1/custody/site-alerts?status=x", headers=token(control, "qp"))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "status"
    # the service the API calls, the same way
    with control.uow() as uow:
        assert all(r["alert_id"] != alert_id for r in site_alerts(uow, fh.actor(control, "ph-man")))
        with pytest.raises(ValidationFailed) as named:
            site_alerts(uow, fh.actor(control, "qp"), status="everything")
    assert named.value.field == "status"
    at_site = TestClient(create_web_app(site)).get(
        "/api/v1/custody/site-alerts", headers=token(site, "qp")
    )
    assert at_site.status_code == 409 and at_site.json()["error"]["code"] == "not_control_node"
