"""Every API route, called as every role, from the record's own site, from another site and
from the control site, against the permission matrix (identity/permissions.py).

A route missing from ROUTES below fails `test_every_route_is_in_the_matrix`: a new route is
not reachable by anyone in a test until somebody has said who may call it. Each route's
declared permission must be the one listed here, so the matrix cannot be widened by a
one-word change in a route either.

Site-scoped routes (`scoped=True`) act on a record of site A (GSTT-PH): staff of site B
(MAN-PH) holding an allowed role are refused there (403 `other_site`), control-site staff
and auditors are not. A refusal must come from the matrix: code `forbidden` or `other_site`.

The web pages are held to the same matrix (WEB_ROUTES, walked from the app like the API:
`api.deps.declared_pages`), through a logged-in browser session per user: a role without the
permission gets 403; a record of a site the user does not see is answered 404, exactly like
an id that does not exist (a page never confirms a record exists elsewhere).

A server error (5xx) is never an "allowed" answer; the routes checked are exactly the routes
the app declares (none silently unchecked, and never none at all); every list route says
whether it is site-scoped, and site staff see a non-empty list of their own site's rows and
none of another site's.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.asgi_client import AsgiClient, AsgiLoop
from tests.conftest import CLOCK_JUMPS

from nearfab.api.deps import declared_pages, declared_permissions
from nearfab.bootstrap import App, build_app
from nearfab.common.clock import ManualClock
from nearfab.config import Settings
from nearfab.custody import AlertKind, EpcisEvent, parse_scan
from nearfab.identity import MATRIX, NETWORK_LEVEL, Permission, Role, system_actor
from nearfab.production import Fault
from nearfab.web.server import create_web_app

P = Permission
SITE_A, SITE_B, CONTROL = "GSTT-PH", "MAN-PH", "CTRL"
WHERE = {"a": SITE_A, "b": SITE_B, "net": CONTROL}
ME = "{me}"  # in a request body: the calling user's username
# the only doors without a token: logging in, and the API's own documentation page
PUBLIC = {
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/auth/password"),  # the way out of an expired password: no token then
    ("GET", "/api/docs"),
}


@dataclass
class World:
    app: App
    client: AsgiClient  # on the world's one event loop (tests/asgi_client.py): `client.loop`
    ids: dict[str, str] = field(default_factory=dict)
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)  # (role, where) -> token


@dataclass(frozen=True)
class Call:
    permission: Permission
    scoped: bool = False
    body: Callable[[World], Any] | None = None
    query: Callable[[World], dict[str, Any]] | None = None
    fresh_token: bool = False  # the call ends the session it runs in (logout)
    victim: bool = False  # {user_id} is a bystander at site A, not one of the callers
    network_only: bool = False  # only control-site holders of the role may (network-level)
    # a release decision on the world's batch, a medicine: of the roles holding release.decide
    # only its family's signatory (the QP) signs; the responsible person (a device's) is
    # refused 403 wrong_signatory once the site is checked (quality.services decide)
    signatory: bool = False
    path_ids: Callable[[World], dict[str, str]] | None = None  # path values besides w.ids


def _reason(_w: World) -> dict[str, str]:
    return {"reason": "route matrix test"}


def _sign(_w: World) -> dict[str, str]:
    # the caller's own user id and password: the first signing of a session needs both
    return {"username": ME, "password": fh.TEST_PASSWORD, "meaning": "route matrix test"}


def _window(w: World) -> dict[str, str]:
    now = w.app.clock.now()
    return {"start": (now - timedelta(days=30)).isoformat(), "end": now.isoformat()}


def _qa_body(w: World, **fields: str) -> dict[str, Any]:
    """A complaint or CAPA at site A (api/qa.py): refused before anything is written for site
    B's staff; the allowed get 422 (a due date in the past)."""
    return {"site_id": w.ids["site_id"], "owner": "qp", "due_date": "2000-01-01"} | fields


ROUTES: dict[tuple[str, str], Call] = {
    # identity
    ("GET", "/api/v1/me"): Call(P.PROFILE_READ),
    ("POST", "/api/v1/auth/logout"): Call(P.PROFILE_READ, fresh_token=True),
    # bodies left out on purpose: a wrong current password or code would count toward lockout
    ("POST", "/api/v1/me/password"): Call(P.PROFILE_READ, body=lambda w: {}),
    ("GET", "/api/v1/me/account"): Call(P.PROFILE_READ),
    ("POST", "/api/v1/me/totp"): Call(P.PROFILE_READ, fresh_token=True),
    ("POST", "/api/v1/me/totp/confirm"): Call(P.PROFILE_READ, body=lambda w: {}),
    ("GET", "/api/v1/users"): Call(P.USERS_READ),
    ("POST", "/api/v1/users"): Call(P.USERS_MANAGE, body=lambda w: {}),
    ("GET", "/api/v1/users/{user_id}"): Call(P.USERS_READ, True),
    ("POST", "/api/v1/users/{user_id}/deactivate"): Call(
        P.USERS_MANAGE, True, body=_reason, victim=True
    ),
    ("POST", "/api/v1/users/{user_id}/reactivate"): Call(
        P.USERS_MANAGE, True, body=_reason, victim=True
    ),
    ("POST", "/api/v1/users/{user_id}/unlock"): Call(
        P.USERS_MANAGE, True, body=_reason, victim=True
    ),
    ("POST", "/api/v1/users/{user_id}/roles"): Call(
        P.USERS_MANAGE,
        True,
        body=lambda w: {"grant": ["operator"], "reason": "matrix"},
        victim=True,
    ),
    ("POST", "/api/v1/users/{user_id}/password"): Call(
        P.USERS_MANAGE,
        True,
        body=lambda w: {"password": "Temporary-matrix-pass-9", "reason": "matrix"},
        victim=True,
    ),
    ("POST", "/api/v1/users/{user_id}/totp/reset"): Call(
        P.USERS_MANAGE, True, body=_reason, victim=True
    ),
    ("GET", "/api/v1/security/alerts"): Call(P.USERS_READ),
    # a second person's approval of qp/admin grants: only control-site admins decide (an empty
    # reason: refused after the matrix and the site, so nothing is decided here)
    ("POST", "/api/v1/users/{user_id}/grant-requests"): Call(
        P.USERS_MANAGE, True, body=lambda w: {"role": "qp", "reason": ""}, victim=True
    ),
    ("GET", "/api/v1/approvals"): Call(P.USERS_READ),
    ("POST", "/api/v1/approvals/{request_id}/approve"): Call(
        P.USERS_MANAGE, body=lambda w: {"reason": "route matrix"}, network_only=True
    ),
    ("POST", "/api/v1/approvals/{request_id}/refuse"): Call(
        P.USERS_MANAGE, body=lambda w: {"reason": "route matrix"}, network_only=True
    ),
    ("GET", "/api/v1/audit"): Call(
        P.AUDIT_READ, query=lambda w: {"entity_type": "order", "entity_id": w.ids["order_id"]}
    ),
    # reports on the whole network: control-site holders of the role and auditors only
    ("GET", "/api/v1/audit/verify"): Call(P.AUDIT_VERIFY, network_only=True),
    ("POST", "/api/v1/audit/verify"): Call(P.AUDIT_VERIFY, body=lambda w: {}, network_only=True),
    ("POST", "/api/v1/audit/checkpoints"): Call(P.AUDIT_VERIFY, network_only=True),
    ("POST", "/api/v1/audit/checkpoints/export"): Call(P.AUDIT_VERIFY, network_only=True),
    ("GET", "/api/v1/records/{entity_type}/{entity_id}/audit"): Call(P.AUDIT_READ, True),
    ("GET", "/api/v1/records/{entity_type}/{entity_id}/export"): Call(
        P.RECORD_EXPORT, True, query=lambda w: {"format": "json"}
    ),
    ("GET", "/api/v1/patients/{patient_id}/identity"): Call(P.PATIENT_IDENTITY_READ, True),
    # network
    ("GET", "/api/v1/network"): Call(P.NETWORK_READ),
    ("POST", "/api/v1/sites"): Call(
        P.SITE_CREATE,
        body=lambda w: {"code": "", "name": "x", "kind": "clinic"},
        network_only=True,
    ),
    ("POST", "/api/v1/sites/{site_id}/status"): Call(
        P.SITE_STATUS,
        True,
        body=lambda w: {"status": "approved", "reason": "matrix"},
        network_only=True,
    ),
    ("POST", "/api/v1/sites/{site_id}/signing-policy"): Call(
        P.SIGNING_POLICY,
        True,
        body=lambda w: {"totp_for_signing": False, "reason": "matrix"},
        network_only=True,
    ),
    ("POST", "/api/v1/sites/{site_id}/patient-identification"): Call(
        P.SITE_CREATE,
        True,
        body=lambda w: {"birth_date_required": False, "reason": "matrix"},
        network_only=True,
    ),
    ("POST", "/api/v1/master-files/{mf_id}/signing-policy"): Call(
        P.SIGNING_POLICY,
        body=lambda w: {"totp_for_signing": False, "reason": "matrix"},
        network_only=True,
    ),
    ("POST", "/api/v1/machines"): Call(
        P.MACHINE_REGISTER,
        True,
        body=lambda w: {
            "site_id": w.ids["site_id"],
            "name": "matrix printer",
            "machine_type": "tablet_printer",
            "firmware": "",
            "serial_number": "PR-MATRIX",
        },
    ),
    ("POST", "/api/v1/machines/{machine_id}/qualifications"): Call(
        P.MACHINE_QUALIFY, True, body=lambda w: {"master_file_code": w.ids["code"]}
    ),
    ("POST", "/api/v1/machines/{machine_id}/status"): Call(
        P.MACHINE_STATE, True, body=lambda w: {"status": "no-such-state", "reason": "matrix"}
    ),
    ("POST", "/api/v1/machines/{machine_id}/qualifications/{code}/revoke"): Call(
        P.MACHINE_QUALIFICATION_REVOKE, True, body=lambda w: {"reason": ""}
    ),
    ("POST", "/api/v1/machines/{machine_id}/faults"): Call(
        P.FAULT_INJECT,
        True,
        body=lambda w: {"kind": "nozzle_clog", "severity": 0.0},
        network_only=True,
    ),
    ("POST", "/api/v1/users/{user_id}/training"): Call(
        P.TRAINING_RECORD, True, body=lambda w: {"master_file_code": "NO-SUCH-CODE"}
    ),
    ("POST", "/api/v1/network/run"): Call(
        P.NETWORK_RUN, body=lambda w: {"until_idle": False}, network_only=True
    ),
    # master files and materials
    ("GET", "/api/v1/master-files"): Call(P.MASTER_FILE_READ),
    # master files are network records: only control-site holders of the role change them
    ("POST", "/api/v1/master-files"): Call(
        P.MASTER_FILE_DRAFT, body=lambda w: {}, network_only=True
    ),
    ("POST", "/api/v1/master-files/{mf_id}/approve"): Call(
        P.MASTER_FILE_APPROVE, body=_sign, network_only=True
    ),
    ("POST", "/api/v1/master-files/{mf_id}/effective"): Call(
        P.MASTER_FILE_EFFECTIVE, network_only=True
    ),
    ("POST", "/api/v1/master-files/{mf_id}/withdraw"): Call(
        P.MASTER_FILE_WITHDRAW, body=lambda w: {"reason": ""}, network_only=True
    ),
    ("GET", "/api/v1/material-lots"): Call(P.LOT_READ),
    ("POST", "/api/v1/material-lots"): Call(
        P.LOT_RECEIVE,
        True,
        body=lambda w: {
            "lot_number": "MATRIX-1",
            "material_code": "HC-FIL-2.5",
            "description": "matrix",
            "site_id": w.ids["site_id"],
            "supplier": "x",
            "expiry": "2020-01-01",
            "quantity_g": -1,
            "attributes": {"drug_loading": 0.025},
        },
    ),
    ("POST", "/api/v1/material-lots/{lot_id}/status"): Call(
        P.LOT_STATUS, True, body=lambda w: {"status": "no-such-status", "reason": "matrix"}
    ),
    # orders and production
    ("POST", "/api/v1/orders"): Call(P.ORDER_SUBMIT, body=lambda w: {"resourceType": "Nothing"}),
    ("GET", "/api/v1/orders"): Call(P.ORDER_READ),
    ("GET", "/api/v1/orders/{order_id}"): Call(P.ORDER_READ, True),
    ("POST", "/api/v1/orders/{order_id}/schedule"): Call(P.ORDER_SCHEDULE, True),
    ("POST", "/api/v1/orders/{order_id}/cancel"): Call(
        P.ORDER_CANCEL, True, body=lambda w: {"reason": ""}
    ),
    ("POST", "/api/v1/orders/{order_id}/unschedule"): Call(
        P.ORDER_SCHEDULE, True, body=lambda w: {"reason": ""}
    ),
    ("POST", "/api/v1/orders/{order_id}/replan"): Call(
        P.ORDER_REPLAN, True, body=lambda w: {"reason": ""}
    ),
    # an order moved between site nodes (api/planning.py): this world is one database, so the
    # allowed are answered 409 not_control_node once their role is checked (tests/replication/
    # test_order_transfer.py moves orders on three nodes and attacks the site rule there)
    ("POST", "/api/v1/orders/{order_id}/transfer"): Call(
        P.PLAN_RUN, body=lambda w: {"to_site": SITE_B, "reason": "matrix"}
    ),
    # the orders moved, as the control holds them: 409 not_control_node here once the role is
    # checked (tests/replication/test_order_transfer.py reads them on three nodes, from each
    # site and the control, and attacks the two-site rule there)
    ("GET", "/api/v1/order-transfers"): Call(P.PLAN_READ),
    ("POST", "/api/v1/jobs/{job_id}/ticket"): Call(P.TICKET_ISSUE, True),
    # the control site's approval of a build (api/routes.py): the world's job is a medicine's
    # at a hospital pharmacy, which needs none (409 after the role and the network reach;
    # tests/families/device/test_entry_points.py approves a home build and attacks it)
    ("GET", "/api/v1/builds/awaiting-approval"): Call(P.RELEASE_QUEUE_READ),
    ("POST", "/api/v1/jobs/{job_id}/build-approval"): Call(
        P.BUILD_APPROVE, body=_sign, network_only=True
    ),
    ("POST", "/api/v1/jobs/{job_id}/start"): Call(P.BATCH_START, True),
    ("POST", "/api/v1/batches/{batch_id}/abandon"): Call(P.BATCH_ABANDON, True, body=_reason),
    ("GET", "/api/v1/batches/{batch_id}"): Call(P.BATCH_READ, True),
    ("GET", "/api/v1/release/pending"): Call(P.RELEASE_QUEUE_READ),
    # release across the network (api/release.py): this world is one database, so the allowed
    # are answered 409 not_control_node once their role is checked (tests/replication/
    # test_release_across.py attacks them on a control node)
    ("GET", "/api/v1/release/remote"): Call(P.RELEASE_QUEUE_READ),
    ("GET", "/api/v1/release/remote/{batch_id}"): Call(P.RELEASE_QUEUE_READ),
    ("POST", "/api/v1/release/remote/{batch_id}/decision"): Call(
        P.RELEASE_DECIDE,
        body=lambda w: {
            "decision": "reject",
            "meaning": "m",
            "username": ME,
            "password": fh.TEST_PASSWORD,
            "shown_hash": "0" * 64,
        },
    ),
    # batch-record controls (api/records.py); {code} is the master file's, no step of it: 404
    ("GET", "/api/v1/batches/{batch_id}/steps"): Call(P.BATCH_READ, True),
    # the caller's own worklist (nearfab/worklist.py): empty for who signs nothing in a batch
    ("GET", "/api/v1/worklist"): Call(P.BATCH_READ),
    ("POST", "/api/v1/batches/{batch_id}/steps/{code}/sign"): Call(
        P.BATCH_STEP_SIGN, True, body=_sign
    ),
    ("POST", "/api/v1/batches/{batch_id}/steps/{code}/verify"): Call(
        P.BATCH_ENTRY_VERIFY, True, body=_sign
    ),
    ("POST", "/api/v1/batches/{batch_id}/deviations"): Call(
        P.DEVIATION_OPEN, True, body=lambda w: {"description": "route matrix test"}
    ),
    ("POST", "/api/v1/batches/{batch_id}/audit-trail-review"): Call(
        P.AUDIT_TRAIL_REVIEW, True, body=_sign
    ),
    ("GET", "/api/v1/batches/{batch_id}/audit-trail"): Call(P.AUDIT_READ, True),
    ("GET", "/api/v1/master-files/{code}/qps"): Call(P.MASTER_FILE_READ),
    # master files are network records: only control-site admins name their QPs
    ("POST", "/api/v1/master-files/{code}/qps"): Call(
        P.MASTER_FILE_QP_ASSIGN,
        body=lambda w: {"user": ME, "reason": "route matrix test"},
        network_only=True,
    ),
    ("POST", "/api/v1/master-files/{code}/qps/{user_id}/unassign"): Call(
        P.MASTER_FILE_QP_ASSIGN, body=_reason, victim=True, network_only=True
    ),
    ("POST", "/api/v1/batches/{batch_id}/decision"): Call(
        P.RELEASE_DECIDE,
        True,
        signatory=True,
        body=lambda w: {
            "decision": "reject",
            "username": ME,
            "password": fh.TEST_PASSWORD,
            "meaning": "m",
        },
    ),
    # results pending at release, notices to prescribers, exceptional release (api/release.py):
    # no follow-up or notice exists here (404 after the role and the site); an exceptional
    # request without circumstances, a QP's exceptional release of a batch with open alarms
    ("GET", "/api/v1/release/followups"): Call(P.RELEASE_FOLLOWUP_READ),
    ("GET", "/api/v1/batches/{batch_id}/followups"): Call(P.RELEASE_FOLLOWUP_READ, True),
    ("POST", "/api/v1/batches/{batch_id}/followups/{test}/result"): Call(
        P.RELEASE_FOLLOWUP_ENTER, True, body=lambda w: {"outcome": "pass", "detail": "m"} | _sign(w)
    ),
    ("POST", "/api/v1/batches/{batch_id}/exceptional-release"): Call(
        P.RELEASE_EXCEPTIONAL_REQUEST, True, body=lambda w: {"circumstances": ""} | _sign(w)
    ),
    # laboratory results (api/release.py): the world's product takes none (422 after the role
    # and the site; tests/quality/test_lab_results_api.py enters them for a cell product)
    ("GET", "/api/v1/batches/{batch_id}/lab-results"): Call(P.BATCH_READ, True),
    ("POST", "/api/v1/batches/{batch_id}/lab-results"): Call(
        P.LAB_RESULT_ENTER, True, body=lambda w: {"results": {"x": 1}, "method": "m"} | _sign(w)
    ),
    ("POST", "/api/v1/batches/{batch_id}/exceptional-release/certify"): Call(
        P.RELEASE_DECIDE, True, body=lambda w: {"reason": ""} | _sign(w), signatory=True
    ),
    ("GET", "/api/v1/notices"): Call(P.NOTICE_READ),
    ("POST", "/api/v1/notices/{notice_id}/acknowledge"): Call(P.NOTICE_ACKNOWLEDGE),
    # custody
    ("GET", "/api/v1/packs/{unit_id}/label"): Call(P.TRACE_READ, True),
    ("GET", "/api/v1/packs/{unit_id}/datamatrix"): Call(P.TRACE_READ, True),
    ("POST", "/api/v1/dispense"): Call(
        P.DISPENSE, True, body=lambda w: {"scan": w.ids["scan"], "patient_ref": "NOT-THE-PATIENT"}
    ),
    ("POST", "/api/v1/verify"): Call(P.PACK_VERIFY, body=lambda w: {"scan": w.ids["scan"]}),
    ("POST", "/api/v1/packs/{unit_id}/undo-dispense"): Call(P.DISPENSE_UNDO, True, body=_reason),
    ("POST", "/api/v1/containers"): Call(
        P.PACKS_MOVE,
        True,
        body=lambda w: {"unit_ids": [w.ids["unit_id"]], "to_site_id": w.ids["site_id"]},
    ),
    ("POST", "/api/v1/containers/{sscc}/unpack"): Call(P.PACKS_MOVE, True, body=lambda w: {}),
    ("POST", "/api/v1/packs/destroy"): Call(
        P.PACKS_DESTROY,
        True,
        body=lambda w: {"unit_ids": ["no-such-pack"], "site_id": w.ids["site_id"], "reason": "m"},
    ),
    # the chain of identity: the unit's sites answer first, then the empty step or scan (422)
    ("POST", "/api/v1/hand-overs"): Call(
        P.PACKS_MOVE,
        True,
        body=lambda w: {
            "scan": w.ids["scan"],
            "received_scan": w.ids["scan"],
            "from_step": "",
            "to_step": "",
        },
    ),
    ("POST", "/api/v1/packs/{unit_id}/storage-log"): Call(
        P.READINGS_RECORD, True, body=lambda w: {"readings": []}
    ),
    ("POST", "/api/v1/packs/{unit_id}/prepare"): Call(
        P.PACKS_MOVE, True, body=lambda w: {"scan": ""}
    ),
    ("POST", "/api/v1/holds/{hold_id}/judge"): Call(
        P.HOLD_DECIDE,
        body=lambda w: {"decision": "resume", "reason": "m"},
    ),
    ("GET", "/api/v1/packs/{unit_id}/chain"): Call(P.TRACE_READ, True),
    # custody alerts of site A and their follow-up (docs/custody.md; tests/custody/
    # test_alert_follow_up.py walks each step): an empty status is refused (422) after the
    # role and the alert's site, so nothing changes here
    ("GET", "/api/v1/custody/alerts"): Call(P.TRACE_READ),
    # the site nodes' alerts (api/custody.py): held by a control node only, so in this one
    # database the allowed are answered 409 not_control_node once their role is checked
    # (tests/replication/test_alert_records.py attacks the site filter on two nodes)
    ("GET", "/api/v1/custody/site-alerts"): Call(P.TRACE_READ),
    ("GET", "/api/v1/custody/alerts/{alert_id}"): Call(P.TRACE_READ, True),
    ("POST", "/api/v1/custody/alerts/{alert_id}/status"): Call(
        P.DISPENSE, True, body=lambda w: {"status": ""}
    ),
    ("POST", "/api/v1/epcis/capture"): Call(P.EPCIS_CAPTURE, body=lambda w: {}, network_only=True),
    ("GET", "/api/v1/epcis/events"): Call(P.EPCIS_QUERY),
    ("GET", "/api/v1/trace/units/{unit_id}"): Call(P.TRACE_READ, True),
    ("GET", "/api/v1/trace/lots/{lot}"): Call(P.TRACE_READ),
    ("GET", "/api/v1/trace/machines/{machine_id}"): Call(P.TRACE_READ, query=_window),
    ("GET", "/api/v1/trace/master-files/{code}/{version}"): Call(P.TRACE_READ),
    ("POST", "/api/v1/recalls"): Call(
        P.RECALL_CREATE,
        body=lambda w: {"lot": "NO-SUCH-LOT", "reason": "matrix"},
        network_only=True,
    ),
    ("GET", "/api/v1/recalls/{recall_id}/report"): Call(P.RECALL_REPORT_READ),
    ("GET", "/api/v1/custody/ledger/verify"): Call(P.LEDGER_VERIFY, network_only=True),
    # telemetry and monitoring
    ("GET", "/api/v1/telemetry/machines"): Call(P.TELEMETRY_READ),
    ("GET", "/api/v1/telemetry/series"): Call(
        P.TELEMETRY_READ, True, query=lambda w: {"machine_id": w.ids["machine_id"]}
    ),
    ("GET", "/api/v1/telemetry/readings"): Call(
        P.TELEMETRY_READ,
        True,
        query=lambda w: {"machine_id": w.ids["machine_id"], "metric": "extrusion_pressure_kpa"},
    ),
    ("GET", "/api/v1/telemetry/export.csv"): Call(
        P.TELEMETRY_READ, True, query=lambda w: {"run": w.ids["run"]}
    ),
    ("GET", "/api/v1/telemetry/dead-letters"): Call(P.DEAD_LETTERS_READ, network_only=True),
    ("GET", "/api/v1/telemetry/gaps"): Call(
        P.TELEMETRY_READ, True, query=lambda w: {"machine_id": w.ids["machine_id"]}
    ),
    ("POST", "/api/v1/telemetry/retention"): Call(
        P.TELEMETRY_RETENTION,
        body=lambda w: {"older_than_days": 3650, "reason": "matrix"},
        network_only=True,
    ),
    ("GET", "/api/v1/monitoring/models"): Call(P.MONITORING_READ),
    ("POST", "/api/v1/monitoring/models"): Call(
        P.MODEL_TRAIN,
        body=lambda w: {"kind": "spc", "master_file_code": "NO-SUCH", "machine_type": "x"},
        network_only=True,
    ),
    ("GET", "/api/v1/monitoring/models/{model_id}"): Call(P.MONITORING_READ),
    ("POST", "/api/v1/monitoring/models/{model_id}/approve"): Call(
        P.MODEL_APPROVE,
        body=lambda w: {"username": ME, "password": fh.TEST_PASSWORD},
        network_only=True,
    ),
    ("POST", "/api/v1/monitoring/models/{model_id}/retire"): Call(
        P.MODEL_RETIRE, body=lambda w: {"note": ""}, network_only=True
    ),
    ("GET", "/api/v1/monitoring/capability"): Call(
        P.MONITORING_READ,
        query=lambda w: {"master_file_code": w.ids["code"], "machine_type": "tablet_printer"},
    ),
    ("GET", "/api/v1/monitoring/runs/{run}/charts"): Call(P.MONITORING_READ, True),
    ("GET", "/api/v1/monitoring/runs/{run}/mspc"): Call(P.MONITORING_READ, True),
    ("GET", "/api/v1/monitoring/runs/{run}/contributions"): Call(
        P.MONITORING_READ, True, query=lambda w: {"index": 0}
    ),
    # comparability between sites and proficiency testing (api/comparability.py); the round
    # is sent to site A, a third site and the control site, not to site B
    ("GET", "/api/v1/comparability/{code}"): Call(P.COMPARABILITY_READ),
    ("GET", "/api/v1/proficiency/rounds"): Call(P.COMPARABILITY_READ),
    ("POST", "/api/v1/proficiency/rounds"): Call(
        P.PROFICIENCY_ROUND, body=lambda w: {"master_file_code": ""}, network_only=True
    ),
    ("GET", "/api/v1/proficiency/rounds/{round_id}"): Call(P.COMPARABILITY_READ, True),
    ("POST", "/api/v1/proficiency/rounds/{round_id}/results"): Call(
        P.PROFICIENCY_RESULT_ENTER, True, body=lambda w: {"site_id": w.ids["site_id"], "value": 1}
    ),
    ("POST", "/api/v1/proficiency/rounds/{round_id}/score"): Call(
        P.PROFICIENCY_ROUND, network_only=True
    ),
    ("GET", "/api/v1/proficiency/suspensions"): Call(P.COMPARABILITY_READ),
    ("POST", "/api/v1/proficiency/suspensions/{suspension_id}/close"): Call(
        P.PROFICIENCY_CAPA_CLOSE,
        body=lambda w: {"capa_reference": "", "summary": "", "password": ""},
        network_only=True,
    ),
    # a dose adjusted from the patient's observations (api/doses.py): an empty Observation is
    # refused (422) after the site; the order's master file has no dose rule (422); no proposal
    ("POST", "/api/v1/orders/{order_id}/observations"): Call(
        P.ORDER_OBSERVATION_RECORD, True, body=lambda w: {}
    ),
    ("GET", "/api/v1/orders/{order_id}/observations"): Call(P.ORDER_READ, True),
    ("POST", "/api/v1/orders/{order_id}/dose-proposals"): Call(P.ORDER_OBSERVATION_RECORD, True),
    ("GET", "/api/v1/orders/{order_id}/dose-proposals"): Call(P.ORDER_READ, True),
    ("POST", "/api/v1/dose-proposals/{proposal_id}/accept"): Call(P.DOSE_DECIDE, body=_sign),
    ("POST", "/api/v1/dose-proposals/{proposal_id}/reject"): Call(P.DOSE_DECIDE, body=_sign),
    # the network's quality system (api/qa.py, docs/central-qa.md): a complaint and a CAPA
    # of site A; change controls and the annual report are the network's
    ("GET", "/api/v1/qa"): Call(P.QA_READ),
    ("POST", "/api/v1/qa/capas"): Call(
        P.QA_RECORD,
        True,
        body=lambda w: _qa_body(w, title="t", description="d", source_kind="other"),
    ),
    ("GET", "/api/v1/qa/capas/{capa_id}"): Call(P.QA_READ, True),
    ("POST", "/api/v1/qa/capas/{capa_id}/close"): Call(
        P.CAPA_CLOSE, True, body=lambda w: {"effectiveness": "", "password": ""}
    ),
    ("POST", "/api/v1/qa/complaints"): Call(
        P.QA_RECORD, True, body=lambda w: _qa_body(w, reporter="r", description="d")
    ),
    ("GET", "/api/v1/qa/complaints/{complaint_id}"): Call(P.QA_READ, True),
    ("POST", "/api/v1/qa/complaints/{complaint_id}/investigate"): Call(
        P.QA_RECORD, True, body=lambda w: {"investigation": "i"}
    ),
    ("POST", "/api/v1/qa/complaints/{complaint_id}/close"): Call(
        P.QA_RECORD, True, body=lambda w: {"conclusion": "c"}
    ),
    ("POST", "/api/v1/qa/assignments/{item_kind}/{item_id}"): Call(
        P.QA_RECORD, True, body=lambda w: {"owner": "qp", "due_date": "2000-01-01"}
    ),
    ("GET", "/api/v1/change-controls"): Call(P.QA_READ),
    ("POST", "/api/v1/change-controls"): Call(
        P.CHANGE_CONTROL_RAISE, body=lambda w: {"proposed_master_file_id": ""}, network_only=True
    ),
    ("GET", "/api/v1/change-controls/{change_id}"): Call(P.QA_READ),
    ("POST", "/api/v1/change-controls/{change_id}/decide"): Call(
        P.CHANGE_CONTROL_APPROVE,
        body=lambda w: {"approve": True, "reason": "r", "password": ""},
        network_only=True,
    ),
    ("POST", "/api/v1/change-controls/{change_id}/implement"): Call(
        P.MASTER_FILE_EFFECTIVE, network_only=True
    ),
    ("GET", "/api/v1/annual-reports/{code}/{year}"): Call(P.ANNUAL_REPORT_READ, network_only=True),
    ("GET", "/api/v1/annual-reports/{code}/{year}/export"): Call(
        P.ANNUAL_REPORT_READ, network_only=True
    ),
    # pharmacovigilance (api/vigilance.py): an empty report is refused (422); the world's
    # adverse event is on a pack of site A
    ("POST", "/api/v1/adverse-events"): Call(P.ADVERSE_EVENT_REPORT, body=lambda w: {}),
    ("GET", "/api/v1/adverse-events/{event_id}/trace"): Call(P.TRACE_READ, True),
    ("GET", "/api/v1/adverse-events/{event_id}/trace.csv"): Call(P.TRACE_READ, True),
    ("GET", "/api/v1/adverse-events/{event_id}/trace.pdf"): Call(P.TRACE_READ, True),
    ("GET", "/api/v1/alarms"): Call(P.MONITORING_READ),
    ("GET", "/api/v1/alarms/{alarm_id}"): Call(P.MONITORING_READ, True),
    ("POST", "/api/v1/alarms/{alarm_id}/acknowledge"): Call(
        P.ALARM_ACKNOWLEDGE, True, body=lambda w: {"note": ""}
    ),
    ("POST", "/api/v1/alarms/{alarm_id}/close"): Call(
        P.ALARM_CLOSE, True, body=lambda w: {"disposition": "false_alarm", "note": ""}
    ),
    # planning
    ("GET", "/api/v1/plan"): Call(P.PLAN_READ),
    ("GET", "/api/v1/plan/history"): Call(P.PLAN_READ),
    ("GET", "/api/v1/plan/{number}"): Call(P.PLAN_READ),
    ("POST", "/api/v1/plan"): Call(P.PLAN_RUN, body=lambda w: {"time_limit_s": 0}),
    # an empty reason: refused (422) after the role and the order's site are checked
    ("POST", "/api/v1/orders/{order_id}/move-forward"): Call(
        P.PLAN_RUN, True, body=lambda w: {"reason": ""}
    ),
    ("GET", "/api/v1/plan/collections/{order_id}"): Call(P.ORDER_READ, True),
    ("POST", "/api/v1/plan/collections/{order_id}"): Call(
        P.ORDER_PRIORITY,
        True,
        body=lambda w: {"collection_at": "2030-01-06T08:00:00+00:00", "reason": "matrix"},
    ),
    ("POST", "/api/v1/plan/collections/{order_id}/rebook"): Call(
        P.ORDER_REPLAN, True, body=_reason
    ),
    # before and at the collection: the order's site answers first, then the empty input (422)
    ("GET", "/api/v1/plan/collections/{order_id}/pre-collection"): Call(P.ORDER_READ, True),
    ("POST", "/api/v1/plan/collections/{order_id}/pre-collection"): Call(
        P.COLLECTION_PRE_RECORD,
        True,
        body=lambda w: {"kind": "", "reference": "", "statement": "", "password": "x"},
    ),
    ("POST", "/api/v1/plan/collections/{order_id}/collected"): Call(
        P.COLLECTION_RECORD, True, body=lambda w: {"patient": ""}
    ),
}


# --- the web pages and forms: the same matrix through a browser session ---------------------
# no session needed: logging in (with its TOTP step), the way out of an expired password,
# logging out (ends only the caller's own session, CSRF-checked) and a static script
WEB_PUBLIC = {
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/login/totp"),
    ("POST", "/login/totp"),
    ("GET", "/password/change"),
    ("POST", "/password/change"),
    ("GET", "/static/vendor/plotly.min.js"),
}


def _step(_w: World) -> dict[str, str]:
    return {"code": "NO-SUCH-STEP"}  # {code} of a batch step, not the master file's


WEB_ROUTES: dict[tuple[str, str], Call] = {
    ("GET", "/"): Call(P.NETWORK_READ),
    ("GET", "/orders"): Call(P.ORDER_READ),
    # the prescription form (web/orders.py): the intake refuses a document that is no FHIR
    ("GET", "/orders/new"): Call(P.ORDER_SUBMIT),
    ("POST", "/orders/new"): Call(
        P.ORDER_SUBMIT, body=lambda w: {"mode": "paste", "fhir_json": '{"resourceType": "x"}'}
    ),
    ("GET", "/orders/{order_id}"): Call(P.ORDER_READ, True),
    ("GET", "/batches/{batch_id}"): Call(P.BATCH_READ, True),
    ("GET", "/release"): Call(P.RELEASE_QUEUE_READ),
    # the site nodes' batches at the control node (web/remote.py): one database here, so the
    # page says it holds none and the signing form answers 409 not_control_node after the role
    ("GET", "/release/remote"): Call(P.RELEASE_QUEUE_READ),
    ("POST", "/release/remote/{batch_id}"): Call(
        P.RELEASE_DECIDE,
        body=lambda w: {
            "decision": "reject",
            "meaning": "m",
            "username": ME,
            "password": fh.TEST_PASSWORD,
            "shown_hash": "0" * 64,
        },
    ),
    # builds awaiting the control site's approval (web/builds.py), as the API's
    ("GET", "/builds/approvals"): Call(P.RELEASE_QUEUE_READ),
    ("POST", "/builds/{job_id}/approve"): Call(
        P.BUILD_APPROVE, body=lambda w: {"password": "", "meaning": "m"}, network_only=True
    ),
    ("GET", "/worklist"): Call(P.BATCH_ENTRY_VERIFY),
    # as the API's decision: a rejection without its required reason, refused by the service
    # after the role and the site (the batch stays in the queue for the list test)
    ("POST", "/release/{batch_id}"): Call(
        P.RELEASE_DECIDE,
        True,
        signatory=True,
        body=lambda w: {
            "decision": "reject",
            "meaning": "m",
            "username": ME,
            "password": fh.TEST_PASSWORD,
        },
    ),
    ("GET", "/dispense"): Call(P.PACK_VERIFY),
    ("POST", "/dispense"): Call(
        P.PACK_VERIFY, body=lambda w: {"scan": "not a scan", "patient_ref": "", "action": "verify"}
    ),
    ("GET", "/packs/{unit_id}/label.png"): Call(P.TRACE_READ, True),
    ("POST", "/batches/{batch_id}/steps/{code}/sign"): Call(
        P.BATCH_STEP_SIGN, True, body=lambda w: {}, path_ids=_step
    ),
    ("POST", "/batches/{batch_id}/steps/{code}/verify"): Call(
        P.BATCH_ENTRY_VERIFY, True, body=lambda w: {}, path_ids=_step
    ),
    ("POST", "/batches/{batch_id}/deviations"): Call(
        P.DEVIATION_OPEN, True, body=lambda w: {"description": ""}
    ),
    ("POST", "/batches/{batch_id}/audit-trail-review"): Call(
        P.AUDIT_TRAIL_REVIEW, True, body=lambda w: {}
    ),
    # a request without its circumstances: refused by the service after the role and the site
    ("POST", "/batches/{batch_id}/exceptional-release"): Call(
        P.RELEASE_EXCEPTIONAL_REQUEST, True, body=lambda w: {"circumstances": ""}
    ),
    ("POST", "/batches/{batch_id}/followups/{test}/result"): Call(
        P.RELEASE_FOLLOWUP_ENTER, True, body=lambda w: {}, path_ids=lambda w: {"test": "none"}
    ),
    ("POST", "/batches/{batch_id}/lab-results"): Call(P.LAB_RESULT_ENTER, True, body=lambda w: {}),
    # the chain of identity, the collection, the exceptional release and the notices pages
    # (web/chain.py, web/appointments.py, web/exceptional.py): forms the services refuse after
    # the role and the site (tests/web/test_chain_pages.py walks them on a cell product)
    ("GET", "/packs/{unit_id}/chain"): Call(P.TRACE_READ, True),
    ("GET", "/hand-overs"): Call(P.PACKS_MOVE),
    ("POST", "/hand-overs"): Call(
        P.PACKS_MOVE, True, body=lambda w: {"scan": w.ids["scan"], "received_scan": ""}
    ),
    ("POST", "/packs/{unit_id}/hand-overs"): Call(
        P.PACKS_MOVE, True, body=lambda w: {"scan": w.ids["scan"], "received_scan": ""}
    ),
    ("POST", "/packs/{unit_id}/storage-log"): Call(
        P.READINGS_RECORD, True, body=lambda w: {"value": ""}
    ),
    ("POST", "/packs/{unit_id}/prepare"): Call(P.PACKS_MOVE, True, body=lambda w: {"scan": ""}),
    ("POST", "/packs/{unit_id}/holds/{hold_id}/judge"): Call(
        P.HOLD_DECIDE, True, body=lambda w: {"decision": "resume", "reason": "m"}
    ),
    ("GET", "/adverse-events/new"): Call(P.ADVERSE_EVENT_REPORT),
    ("POST", "/adverse-events/new"): Call(P.ADVERSE_EVENT_REPORT, body=lambda w: {"scan": ""}),
    ("GET", "/adverse-events/{event_id}"): Call(P.TRACE_READ, True),
    ("GET", "/adverse-events/{event_id}/trace.csv"): Call(P.TRACE_READ, True),
    ("GET", "/adverse-events/{event_id}/trace.pdf"): Call(P.TRACE_READ, True),
    ("GET", "/orders/{order_id}/doses"): Call(P.ORDER_READ, True),
    ("POST", "/orders/{order_id}/doses/observations"): Call(
        P.ORDER_OBSERVATION_RECORD, True, body=lambda w: {"weight": ""}
    ),
    ("POST", "/dose-proposals/{proposal_id}/accept"): Call(
        P.DOSE_DECIDE, True, body=_reason, path_ids=lambda w: {"proposal_id": "dp_route_matrix"}
    ),
    ("POST", "/dose-proposals/{proposal_id}/reject"): Call(
        P.DOSE_DECIDE, True, body=_reason, path_ids=lambda w: {"proposal_id": "dp_route_matrix"}
    ),
    ("GET", "/orders/{order_id}/collection"): Call(P.ORDER_READ, True),
    ("POST", "/orders/{order_id}/collection/date"): Call(P.ORDER_PRIORITY, True, body=_reason),
    ("POST", "/orders/{order_id}/collection/rebook"): Call(P.ORDER_REPLAN, True, body=_reason),
    ("POST", "/orders/{order_id}/collection/pre-collection"): Call(
        P.COLLECTION_PRE_RECORD, True, body=lambda w: {"kind": ""}
    ),
    ("POST", "/orders/{order_id}/collection/collected"): Call(
        P.COLLECTION_RECORD, True, body=lambda w: {}
    ),
    ("GET", "/batches/{batch_id}/exceptional-release"): Call(P.ORDER_READ, True),
    ("POST", "/batches/{batch_id}/exceptional-release/certify"): Call(
        P.RELEASE_DECIDE, True, body=lambda w: {"reason": "", "password": "m"}, signatory=True
    ),
    ("GET", "/notices"): Call(P.NOTICE_READ),
    ("POST", "/notices/{notice_id}/acknowledge"): Call(P.NOTICE_ACKNOWLEDGE, body=lambda w: {}),
    ("GET", "/account"): Call(P.PROFILE_READ),
    ("POST", "/account/password"): Call(P.PROFILE_READ, body=lambda w: {}),
    ("POST", "/account/totp"): Call(P.PROFILE_READ, body=lambda w: {}, fresh_token=True),
    ("POST", "/account/totp/confirm"): Call(P.PROFILE_READ, body=lambda w: {}),
    ("GET", "/users"): Call(P.USERS_READ),
    ("POST", "/users"): Call(P.USERS_MANAGE, body=lambda w: {}),
    ("GET", "/users/{user_id}"): Call(P.USERS_READ, True),
    ("POST", "/users/approvals/{request_id}/{decision}"): Call(
        P.USERS_MANAGE,
        body=lambda w: {"reason": "route matrix: refused"},
        network_only=True,
        path_ids=lambda w: {"decision": "refuse"},
    ),
    ("POST", "/users/{user_id}/{action}"): Call(
        P.USERS_MANAGE,
        True,
        body=lambda w: {"reason": ""},
        victim=True,
        path_ids=lambda w: {"action": "unlock"},
    ),
    ("GET", "/security/alerts"): Call(P.USERS_READ),
    ("GET", "/plan"): Call(P.PLAN_READ),
    # the planner's actions on the Gantt (web/planning.py); an empty reason: refused, 422
    ("POST", "/plan/replan"): Call(P.PLAN_RUN, body=lambda w: {"reason": ""}),
    ("POST", "/plan/orders/{order_id}/unschedule"): Call(
        P.ORDER_SCHEDULE, True, body=lambda w: {"reason": ""}
    ),
    ("POST", "/plan/orders/{order_id}/urgent"): Call(
        P.PLAN_RUN, True, body=lambda w: {"reason": ""}
    ),
    ("GET", "/monitoring"): Call(P.MONITORING_READ),
    ("GET", "/monitoring/runs/{run}"): Call(P.MONITORING_READ, True),
    ("GET", "/monitoring/machines/{machine_id}"): Call(P.MONITORING_READ, True),
    ("GET", "/monitoring/runs/{run}/contributions.json"): Call(
        P.MONITORING_READ, True, query=lambda w: {"index": 0}
    ),
    ("GET", "/alarms/{alarm_id}"): Call(P.MONITORING_READ, True),
    ("POST", "/alarms/{alarm_id}/acknowledge"): Call(
        P.ALARM_ACKNOWLEDGE, True, body=lambda w: {"note": ""}
    ),
    ("POST", "/alarms/{alarm_id}/close"): Call(
        P.ALARM_CLOSE, True, body=lambda w: {"disposition": "false_alarm", "note": ""}
    ),
    ("GET", "/comparability"): Call(P.COMPARABILITY_READ),
    ("GET", "/qa"): Call(P.QA_READ),
    ("GET", "/qa/annual-report"): Call(
        P.ANNUAL_REPORT_READ,
        network_only=True,
        query=lambda w: {"code": w.ids["code"], "year": w.ids["year"], "format": "csv"},
    ),
    ("POST", "/qa/complaints"): Call(
        P.QA_RECORD,
        True,
        body=lambda w: _qa_body(w, reporter="r", description="d", batch_number="X"),
    ),
    ("POST", "/qa/capas/{capa_id}/close"): Call(
        P.CAPA_CLOSE, True, body=lambda w: {"effectiveness": ""}
    ),
    # the central QA page's other forms (web/qa.py): empty or past values, so nothing changes
    ("POST", "/qa/capas"): Call(
        P.QA_RECORD,
        True,
        body=lambda w: _qa_body(w, title="t", description="d", source_kind="other"),
    ),
    ("POST", "/qa/assignments/{item_kind}/{item_id}"): Call(
        P.QA_RECORD, True, body=lambda w: {"owner": "qp", "due_date": "2000-01-01"}
    ),
    ("POST", "/qa/complaints/{complaint_id}/investigate"): Call(
        P.QA_RECORD, True, body=lambda w: {"investigation": ""}
    ),
    ("POST", "/qa/complaints/{complaint_id}/close"): Call(
        P.QA_RECORD, True, body=lambda w: {"conclusion": ""}
    ),
    # change control pages (web/changecontrol.py): an unknown change control is said on the list
    ("GET", "/qa/change-controls"): Call(P.QA_READ),
    ("GET", "/qa/change-controls/{change_id}"): Call(P.QA_READ),
    ("POST", "/qa/change-controls"): Call(
        P.CHANGE_CONTROL_RAISE, body=lambda w: {"proposed_master_file_id": ""}, network_only=True
    ),
    ("POST", "/qa/change-controls/{change_id}/decide"): Call(
        P.CHANGE_CONTROL_APPROVE,
        body=lambda w: {"decision": "approve", "reason": "r", "password": ""},
        network_only=True,
    ),
    ("POST", "/qa/change-controls/{change_id}/implement"): Call(
        P.MASTER_FILE_EFFECTIVE, body=lambda w: {}, network_only=True
    ),
    # master-file pages (web/masterfiles.py): every role reads; only a control-site QP approves
    ("GET", "/master-files"): Call(P.MASTER_FILE_READ),
    ("GET", "/master-files/{mf_id}"): Call(P.MASTER_FILE_READ),
    ("POST", "/master-files/{mf_id}/approve"): Call(
        P.MASTER_FILE_APPROVE, body=lambda w: {"password": ""}, network_only=True
    ),
    ("POST", "/proficiency/rounds"): Call(
        P.PROFICIENCY_ROUND, body=lambda w: {"master_file_code": ""}, network_only=True
    ),
    ("GET", "/proficiency/rounds/{round_id}"): Call(P.COMPARABILITY_READ, True),
    ("POST", "/proficiency/rounds/{round_id}/results"): Call(
        P.PROFICIENCY_RESULT_ENTER, True, body=lambda w: {"site_id": w.ids["site_id"], "value": "1"}
    ),
    ("POST", "/proficiency/rounds/{round_id}/score"): Call(
        P.PROFICIENCY_ROUND, body=lambda w: {}, network_only=True
    ),
    ("POST", "/proficiency/suspensions/{suspension_id}/close"): Call(
        P.PROFICIENCY_CAPA_CLOSE, body=lambda w: {"capa_reference": ""}, network_only=True
    ),
    ("GET", "/trace"): Call(P.TRACE_READ, True, query=lambda w: {"q": w.ids["unit_id"]}),
    ("GET", "/recalls"): Call(P.RECALL_REPORT_READ),
    # the custody alerts of the reader's site (web/custody.py; scoped by CustodyService.alerts,
    # tests/custody/test_alerts_page.py reads them from each site)
    ("GET", "/custody/alerts"): Call(P.TRACE_READ),
    # a step of an alert's follow-up (another site's alert is answered as unknown: 404)
    ("POST", "/custody/alerts/{alert_id}"): Call(P.DISPENSE, True, body=lambda w: {"status": ""}),
    ("POST", "/recalls"): Call(
        P.RECALL_CREATE, body=lambda w: {"lot": "", "reason": ""}, network_only=True
    ),
    ("GET", "/recalls/{recall_id}"): Call(P.RECALL_REPORT_READ),
    ("GET", "/recalls/{recall_id}/report.{fmt}"): Call(
        P.RECALL_REPORT_READ, path_ids=lambda w: {"fmt": "csv"}
    ),
    ("GET", "/epcis"): Call(P.EPCIS_QUERY, query=lambda w: {"bizStep": "commissioning"}),
    ("POST", "/epcis/capture"): Call(
        P.EPCIS_CAPTURE, body=lambda w: {"document": ""}, network_only=True
    ),
    ("GET", "/epcis/event"): Call(P.EPCIS_QUERY, True, query=lambda w: {"id": w.ids["event_a"]}),
    ("GET", "/ledger"): Call(P.LEDGER_VERIFY, network_only=True),
    ("GET", "/audit"): Call(P.AUDIT_READ),
    # this node's replication (web/node.py; a site reader sees its own origin and the
    # control's: tests/replication/test_node_page.py)
    ("GET", "/node"): Call(P.AUDIT_READ),
    ("GET", "/audit/verify"): Call(P.AUDIT_VERIFY, network_only=True),
    ("GET", "/audit/records/{entity_type}/{entity_id}"): Call(P.AUDIT_READ, True),
    ("GET", "/audit/records/{entity_type}/{entity_id}/export"): Call(
        P.RECORD_EXPORT, True, query=lambda w: {"format": "json"}
    ),
}


def _check_declared(
    declared: list[tuple[str, str, Permission | None]],
    table: dict[tuple[str, str], Call],
    public: set[tuple[str, str]],
) -> None:
    """The routes checked are exactly the routes declared: none missing from the table, none
    listed that is gone, each declaring the permission the table expects, none without one."""
    assert declared, "the walker found no routes at all: the matrix would check nothing"
    assert table, "the matrix table is empty"
    served = {(m, p) for m, p, _ in declared}
    missing = sorted(f"{m} {p}" for m, p in served - set(table) - public)
    assert not missing, f"routes not in the permission matrix test: {missing}"
    undeclared = [f"{m} {p}" for m, p, d in declared if d is None and (m, p) not in public]
    assert not undeclared, f"routes that declare no permission: {undeclared}"
    wrong = [
        f"{m} {p}: declares {d}, expected {table[(m, p)].permission}"
        for m, p, d in declared
        if (m, p) in table and d != table[(m, p)].permission
    ]
    assert not wrong, wrong
    gone = sorted(set(table) - served)
    assert not gone, f"listed here but no longer served: {gone}"
    assert set(table) == served - public  # what the parametrised tests below walk


def test_11_10_g_every_page_is_in_the_matrix(app: App) -> None:
    _check_declared(declared_pages(create_web_app(app)), WEB_ROUTES, WEB_PUBLIC)


def test_11_10_g_every_route_is_in_the_matrix(app: App) -> None:
    _check_declared(declared_permissions(create_web_app(app)), ROUTES, PUBLIC)


# POSTs that change no record: checking the chain against a file kept outside the database,
# and signing a checkpoint of the audit and ledger heads (it anchors what exists, item 7)
READS_BY_POST = {
    ("POST", "/api/v1/audit/verify"),
    ("POST", "/api/v1/audit/checkpoints"),
    ("POST", "/api/v1/audit/checkpoints/export"),
}


def test_network_level_permissions_are_network_only_on_every_route() -> None:
    """A route acting under a network-level permission (identity/permissions.NETWORK_LEVEL)
    is checked here as refused to every site's holders of the role."""
    loose = [
        f"{m} {p}"
        for (m, p), c in ROUTES.items() | WEB_ROUTES.items()
        if c.permission in NETWORK_LEVEL and not c.network_only
    ]
    assert not loose, f"network-level routes not marked network_only: {loose}"


def test_annex11_s12_auditors_change_nothing_and_read_everything() -> None:
    for (method, path), call in ROUTES.items() | WEB_ROUTES.items():
        auditor_may = Role.AUDITOR in MATRIX[call.permission]
        # their own session and account (log out, change their password) are not GMP data
        if (
            method != "GET"
            and call.permission is not P.PROFILE_READ
            and (method, path) not in READS_BY_POST
        ):
            assert not auditor_may, f"auditors may {method} {path}"
    reads = {c.permission for (m, _), c in ROUTES.items() if m == "GET"}
    # auditors read every record; what they do not read is patients' identity, live
    # telemetry plots aside, and the dispensing-side pack checks
    unread = {p for p in reads if Role.AUDITOR not in MATRIX[p]}
    assert unread == {P.PATIENT_IDENTITY_READ}, unread


# --- the world: records at site A, users of every role at sites A, B and the control site ---
def _world(tmp: Path, request: pytest.FixtureRequest) -> World:
    # the demo network: a copy of the session's seeded template and its keys (flow_helpers)
    url = fh._seeded_sqlite(request, tmp)
    template = fh._TEMPLATES[("sqlite", str(request.getfixturevalue("sqlite_template")))]
    shutil.copytree(fh._KEYS[template], tmp / "data" / "keys")
    settings = Settings(
        data_dir=tmp / "data",
        database_url=url,
        **CLOCK_JUMPS,  # the runner moves the manual clock by hours
    )
    app = build_app(settings, clock=ManualClock(), migrate=False)
    boot = system_actor("route-matrix")
    ids: dict[str, str] = {}
    with app.uow() as uow:
        sites = {s.code: s.id for s in app.network.list_sites(uow)}
        machines = app.network.list_machines(uow)
    # only site A's printers work, so everything below is made at site A
    for m in machines:
        if m.site_id != sites[SITE_A]:
            with app.uow() as uow:
                app.network.set_machine_status(uow, boot, m.id, "maintenance", reason="matrix")
    # three released runs train the monitoring models; a clogged nozzle then raises alarms
    trained = []
    for _ in range(3):
        trained.append(fh.make_batch(app))
        fh.release(app, trained[-1])
    from tests.monitoring.test_alarms_and_models import train_and_approve

    ids["model_id"] = train_and_approve(app, "spc")
    train_and_approve(app, "mspc")
    released = fh.make_batch(app)
    fh.release(app, released)
    printer = fh.batch(app, released).machine_id
    app.fleet.inject_fault(fh.machine(app, printer), Fault("nozzle_clog", 0.2, from_unit=5))
    alarmed = fh.make_batch(app)
    with app.uow() as uow:
        alarms = app.monitoring.alarms(uow, batch_id=alarmed)
        units = app.custody.units_of_order(uow, fh.batch(app, released).order_id)
        label = app.custody.labels(uow, units[0].id)[0]
        order = app.orders.get(uow, fh.batch(app, released).order_id)
        mf = app.master_files.effective_for_code(uow, order.master_file_code)
        lot = app.materials.get(uow, fh.batch(app, released).material_lot_id)
        user = app.users.by_username(uow, "operator")
        assert user is not None
        victim = app.users.create_user(
            uow,
            boot,
            username="matrix-victim",
            full_name="Victim of the matrix test",
            roles=["operator"],
            password=fh.TEST_PASSWORD,
            home_site_id=sites[SITE_A],
        )
        shipped = app.custody.units_of_order(uow, fh.batch(app, trained[0]).order_id)
    assert alarms, "the fault should have raised an alarm at site A"
    # a container packed at site A for site A, waiting to be unpacked
    with app.uow() as uow:
        container = app.custody.pack(
            uow, fh.actor(app, "pharmacist"), unit_ids=[shipped[0].id], to_site_id=sites[SITE_A]
        )
    ids.update(
        site_id=sites[SITE_A],
        machine_id=printer,
        code=mf.code,
        mf_id=mf.id,
        version=str(mf.version),
        lot_id=lot.id,
        lot=lot.lot_number,
        order_id=order.id,
        patient_id=order.patient_id,
        job_id=fh.batch(app, alarmed).job_id,
        run=fh.batch(app, alarmed).job_id,
        batch_id=alarmed,
        unit_id=units[0].id,
        scan=label.identifier.element_string(),
        sscc=container.sscc,
        alarm_id=alarms[0].id,
        user_id=user.id,
        victim_id=victim.id,
        number="1",
        entity_type="order",
        entity_id=order.id,
        test="no-such-test",  # a release test pending at release (none here)
        notice_id="no-such-notice",
        hold_id="no-such-hold",
    )
    with app.uow() as uow:
        recall = app.custody_chain.recalls.create(
            uow, fh.actor(app, "qp"), lot=lot.lot_number, reason="route matrix"
        )
        ids["recall_id"] = recall.id
    with app.uow() as uow:
        ids["round_id"] = app.comparability.open_round(
            uow,
            fh.actor(app, "qp"),
            {
                "master_file_code": mf.code,
                "attribute": "route matrix",
                "unit": "%",
                "reference": "blind sample",
                "site_ids": [SITE_A, "MOB-1", CONTROL],
            },
        ).id
    ids["suspension_id"] = "no-such-suspension"
    # central QA (docs/central-qa.md): a complaint and a CAPA of site A
    qa_due = {"owner": "qp", "due_date": (app.clock.now() + timedelta(days=30)).date()}
    with app.uow() as uow:
        ids["complaint_id"] = app.qms.record_complaint(
            uow,
            fh.actor(app, "qp"),
            {"site_id": SITE_A, "reporter": "r", "description": "d", **qa_due}
            | {"batch_number": fh.batch(app, alarmed).batch_number},
        ).id
    with app.uow() as uow:
        ids["capa_id"] = app.qms.open_capa(
            uow,
            fh.actor(app, "qp"),
            {"site_id": SITE_A, "title": "t", "description": "d", "source_kind": "other"} | qa_due,
        ).id
    ids.update(change_id="no-such-change", year="2026", item_kind="complaint")
    ids["item_id"] = ids["complaint_id"]
    ids["proposal_id"] = "no-such-proposal"
    with app.uow() as uow:
        ids["event_id"] = app.vigilance.report(
            uow, fh.actor(app, "pharmacist"), {"scan": ids["unit_id"], "description": "m"}
        ).id
    # a custody alert raised at site A (its follow-up routes)
    with app.uow() as uow:
        ids["alert_id"] = app.custody.packs.raise_alert(
            uow, fh.actor(app, "pharmacist"), AlertKind.SECOND_DISPENSE, ids["scan"], "matrix"
        ).id
        uow.commit()
    # a dose proposal for the order of site A, for the pages (docs/dose-adjustment.md); the
    # forms carry no password, so nothing is signed or changed
    with app.uow() as uow:
        from nearfab.orders.dose_models import DoseProposal

        uow.session.add(
            DoseProposal(
                id="dp_route_matrix",
                order_id=order.id,
                patient_id=order.patient_id,
                site_id=order.site_id,
                master_file_id=order.master_file_id,
                status="proposed",
                current_value=order.dose_value,
                current_unit=order.dose_unit,
                proposed_value=order.dose_value + 1,
                proposed_unit=order.dose_unit,
                rule={},
                working={},
                observation_ids=[],
                created_at=app.clock.now(),
                created_by="route-matrix",
            )
        )
        uow.commit()
    with app.uow() as uow:
        ids["event_a"] = next(
            e.event_hash
            for e in uow.session.scalars(select(EpcisEvent).order_by(EpcisEvent.event_time))
            if e.site_id == sites[SITE_A]
        )
    # a qp grant at site A waiting for a control-site admin's decision
    pending = fh.create_user(app, "matrix-pending-qp", ["operator"], SITE_A)
    with app.uow() as uow:
        app.users.change_roles(
            uow, fh.actor(app, "admin"), pending.user_id, grant=["qp"], revoke=[], reason="matrix"
        )
    with app.uow() as uow:
        ids["request_id"] = app.users.pending_for(uow, pending.user_id)[0].id
    # and one nobody decides in this test, for the list of approvals
    waiting = fh.create_user(app, "matrix-waiting-qp", ["operator"], SITE_A)
    with app.uow() as uow:
        app.users.change_roles(
            uow, fh.actor(app, "admin"), waiting.user_id, grant=["qp"], revoke=[], reason="matrix"
        )
    world = World(app, AsgiLoop().client(create_web_app(app)), ids)
    for role in Role:
        for where, code in WHERE.items():
            username = f"{role.value}-{where}"
            # qp, admin, responsible_person: requested by the demo admin, approved by a second
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
                token, _ = app.users.issue_token(uow, username, fh.TEST_PASSWORD)
            world.tokens[(role.value, where)] = token
    return world


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[World]:
    w = _world(tmp_path_factory.mktemp("matrix"), request)
    yield w
    w.client.loop.close()
    w.app.engine.dispose()


def _expect(call: Call, role: str, where: str) -> str:
    if Role(role) not in MATRIX[call.permission]:
        return "forbidden"
    if call.network_only and where != "net" and role != Role.AUDITOR.value:
        return "refused"  # the auditor grant reads the network (network-level reports)
    if call.scoped and where == "b" and role != Role.AUDITOR.value:
        return "other_site"
    if call.signatory and role == Role.RESPONSIBLE_PERSON.value:
        return "wrong_signatory"
    return "allowed"


def _request(
    w: World, method: str, path: str, call: Call, token: str, username: str
) -> Awaitable[httpx.Response]:
    url = path.format(**(w.ids | ({"user_id": w.ids["victim_id"]} if call.victim else {})))
    headers = {"Authorization": f"Bearer {token}"}
    params = call.query(w) if call.query else None
    body = call.body(w) if call.body else None
    if isinstance(body, dict):
        body = {k: username if v == ME else v for k, v in body.items()}
    return w.client.arequest(method, url, headers=headers, params=params, json=body)


@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
def test_11_10_g_every_route_allows_and_denies_as_the_matrix_says(
    world: World, route: tuple[str, str]
) -> None:
    method, path = route
    call = ROUTES[route]
    callers = sorted(world.tokens.items())

    def caller(role: str, where: str, token: str) -> Callable[[], Awaitable[httpx.Response]]:
        async def ask() -> httpx.Response:
            username = f"{role}-{where}"
            fresh = token
            if call.fresh_token:
                with world.app.uow() as uow:
                    fresh, _ = world.app.users.issue_token(uow, username, fh.TEST_PASSWORD)
            return await _request(world, method, path, call, fresh, username)

        return ask

    # every caller in turn, in one run of the world's event loop (tests/asgi_client.py)
    answers = world.client.loop.run(caller(role, where, tok) for (role, where), tok in callers)
    wrong, checked = [], 0
    for ((role, where), _), r in zip(callers, answers, strict=True):
        expected = _expect(call, role, where)
        code = (
            (r.json().get("error") or {}).get("code")
            if r.headers.get("content-type", "").startswith("application/json")
            and isinstance(r.json(), dict)
            else None
        )
        checked += 1
        if r.status_code >= 500:
            ok = False  # a server error is never an answer, whoever asks
        elif expected == "allowed":
            ok = r.status_code not in (401, 403)
        elif expected == "refused":
            ok = r.status_code == 403  # by the service's own rule (a control-site admin only)
        else:
            ok = r.status_code == 403 and code == expected
        if not ok:
            wrong.append(f"{role}@{WHERE[where]}: expected {expected}, got {r.status_code} {code}")
    assert checked == len(Role) * len(WHERE), f"{method} {path}: {checked} callers checked"
    assert not wrong, f"{method} {path}: " + "; ".join(wrong)


# --- the pages, through a browser session per user -------------------------------------------
def _csrf(text: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def _web_login(w: World, username: str) -> tuple[AsgiClient, str]:
    """A browser session of `username` and its form token: its own cookies, on the world's one
    web application (building one per login costs more than the requests) and event loop."""
    client = w.client.loop.client(w.client.app)
    form = (await client.arequest("GET", "/login")).text
    answer = await client.arequest(
        "POST",
        "/login",
        data={"username": username, "password": fh.TEST_PASSWORD, "csrf_token": _csrf(form)},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and "/login" not in answer.headers["location"], answer.text
    return client, _csrf((await client.arequest("GET", "/account")).text)


@pytest.fixture(scope="module")
def sessions(world: World) -> dict[tuple[str, str], tuple[AsgiClient, str]]:
    keys = sorted(world.tokens)
    logins = [lambda key=key: _web_login(world, f"{key[0]}-{key[1]}") for key in keys]
    return dict(zip(keys, world.client.loop.run(logins), strict=True))


def _expect_page(call: Call, role: str, where: str) -> str:
    return _expect(call, role, where)


@pytest.mark.parametrize("route", sorted(WEB_ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
def test_11_10_g_every_page_allows_and_denies_as_the_matrix_says(
    world: World, sessions: dict[tuple[str, str], tuple[AsgiClient, str]], route: tuple[str, str]
) -> None:
    """403 for a role the matrix refuses; for another site's record the very answer an unknown
    record gets (404); for everyone else an answer that is neither a refusal nor a server
    error, and never a trip back to the login form."""
    method, path = route
    call = WEB_ROUTES[route]
    callers = sorted(sessions.items())

    def caller(
        role: str, where: str, client: AsgiClient, token: str
    ) -> Callable[[], Awaitable[httpx.Response]]:
        async def ask() -> httpx.Response:
            browser, form_token = client, token
            if call.fresh_token:
                browser, form_token = await _web_login(world, f"{role}-{where}")
            values = world.ids | ({"user_id": world.ids["victim_id"]} if call.victim else {})
            url = path.format(**(values | (call.path_ids(world) if call.path_ids else {})))
            params = call.query(world) if call.query else None
            form = (
                {"csrf_token": form_token}
                | {k: f"{role}-{where}" if v == ME else v for k, v in call.body(world).items()}
                if call.body
                else None
            )
            return await browser.arequest(
                method, url, params=params, data=form, follow_redirects=True
            )

        return ask

    # every caller in turn, in one run of the world's event loop (tests/asgi_client.py)
    answers = world.client.loop.run(caller(role, where, *s) for (role, where), s in callers)
    wrong, checked = [], 0
    for ((role, where), _), r in zip(callers, answers, strict=True):
        expected = _expect_page(call, role, where)
        checked += 1
        if r.status_code >= 500 or r.url.path == "/login":
            ok = False  # a server error, or a session lost: never an answer
        elif expected == "forbidden":
            ok = r.status_code == 403
        elif expected == "refused":
            ok = r.status_code == 403 or (
                # refused by the service after the form: said on the page it goes back to
                "Refused:" in r.text and r.status_code == 200
            )
        elif expected == "other_site":
            ok = r.status_code == 404
        elif expected == "wrong_signatory":
            # the refusal names the role needed (the world's batch is a medicine: the QP)
            ok = r.status_code == 403 and "(role qp)" in r.text
        else:
            ok = r.status_code not in (401, 403, 404)
        if not ok:
            wrong.append(f"{role}@{WHERE[where]}: expected {expected}, got {r.status_code}")
    assert checked == len(Role) * len(WHERE), f"{method} {path}: {checked} callers checked"
    assert not wrong, f"{method} {path}: " + "; ".join(wrong)


# --- list routes: each is either a site's rows (site staff see their own site's only) or said
# here to be a network record, with why ------------------------------------------------------
@dataclass(frozen=True)
class SiteList:
    role: str  # a site role that may read the list
    site_of: Callable[[World, dict[str, Any]], str | None]  # the site a row belongs to
    rows: Callable[[Any], list[dict[str, Any]]] = lambda body: body


def _order_site(w: World, row: dict[str, Any]) -> str | None:
    with w.app.uow() as uow:
        return w.app.orders.get(uow, row["id"]).site_id


def _code_site(w: World, row: dict[str, Any]) -> str | None:
    with w.app.uow() as uow:
        return w.app.network.get_site(uow, row["site"]).id


SITE_LISTS: dict[str, SiteList] = {
    "/api/v1/orders": SiteList("pharmacist", _order_site),
    "/api/v1/material-lots": SiteList("pharmacist", lambda w, r: r["site_id"]),
    "/api/v1/release/pending": SiteList("pharmacist", _code_site),
    "/api/v1/alarms": SiteList("operator", lambda w, r: r["site_id"]),
    "/api/v1/telemetry/machines": SiteList("operator", lambda w, r: r["site_id"]),
    "/api/v1/users": SiteList("admin", lambda w, r: r["home_site_id"]),
    "/api/v1/approvals": SiteList("admin", lambda w, r: r["site_id"]),
    "/api/v1/audit": SiteList("pharmacist", lambda w, r: r["site_id"], lambda b: b["items"]),
    "/api/v1/custody/alerts": SiteList("pharmacist", lambda w, r: r["site_id"]),
    "/api/v1/qa": SiteList("pharmacist", lambda w, r: r["site_id"], lambda b: b["items"]),
}
# not a list of one site's rows, and why
NOT_SITE_LISTS = {
    "/api/v1/me": "the caller's own account",
    "/api/v1/release/remote": "held only by a control node (409 here, one database); its site "
    "filter is attacked on two nodes in tests/replication/test_release_across.py",
    "/api/v1/custody/site-alerts": "held only by a control node (409 here, one database); its "
    "site filter is attacked on two nodes in tests/replication/test_alert_records.py",
    "/api/v1/order-transfers": "held only by a control node (409 here, one database); its "
    "two-site filter is attacked on three nodes in tests/replication/test_order_transfer.py",
    "/api/v1/worklist": "the caller's own work, of their own sites only "
    "(tests/production/test_worklist.py: another site's user sees none of it)",
    "/api/v1/me/account": "the caller's own account",
    "/api/v1/network": "the network map: sites and machines every member works with",
    "/api/v1/master-files": "master files are network records (made at the sites they list)",
    "/api/v1/monitoring/models": "models are per product and machine type, network-wide",
    "/api/v1/monitoring/capability": "per product and machine type; runs named are checked",
    "/api/v1/proficiency/rounds": "rounds go to several sites; each site sees its own result "
    "(tests/comparability/test_api.py)",
    "/api/v1/change-controls": "change controls of master files are network records (each lists "
    "its impact on every site)",
    "/api/v1/proficiency/suspensions": "scoped by the comparability service; none in this world "
    "(tests/comparability/test_api.py lists them from each site)",
    "/api/v1/builds/awaiting-approval": "scoped by production (visible_sites); none in this "
    "world (tests/families/device/test_entry_points.py lists them from each site)",
    "/api/v1/plan": "the network plan (planners place orders across sites)",
    "/api/v1/plan/history": "the network plan's versions",
    "/api/v1/telemetry/dead-letters": "messages no site could be read from (control site only)",
    "/api/v1/security/alerts": "scoped by the identity service; no alert exists in this world",
    "/api/v1/release/followups": "scoped by the quality service; none in this world "
    "(tests/quality/test_followup.py lists them from each site)",
    "/api/v1/notices": "scoped by the quality service; none in this world "
    "(tests/quality/test_followup.py lists them from each site)",
    "/api/v1/audit/verify": "a report on the whole chain (control site and auditors)",
    "/api/v1/custody/ledger/verify": "a report on every ledger (control site and auditors)",
    "/api/v1/epcis/events": "an EPCIS document: tests/web/test_web_scoping_attacks.py",
    "/api/v1/telemetry/series": "asks by machine or run: a scoped route of the matrix",
    "/api/v1/telemetry/readings": "asks by machine or run: a scoped route of the matrix",
    "/api/v1/telemetry/export.csv": "asks by machine or run: a scoped route of the matrix",
    "/api/v1/telemetry/gaps": "asks by machine or run: a scoped route of the matrix",
}


def test_annex11_s12_every_list_route_is_a_sites_rows_or_said_not_to_be() -> None:
    lists = {p for (m, p) in ROUTES if m == "GET" and "{" not in p}
    assert lists, "no list routes found"
    unsaid = sorted(lists - set(SITE_LISTS) - set(NOT_SITE_LISTS))
    assert not unsaid, f"list routes neither site-scoped nor said to be network records: {unsaid}"
    assert not set(SITE_LISTS) & set(NOT_SITE_LISTS)
    assert set(SITE_LISTS) | set(NOT_SITE_LISTS) <= lists, "listed here but not served"


@pytest.mark.parametrize("url", sorted(SITE_LISTS))
def test_annex11_s12_site_staff_list_their_own_sites_rows_only(world: World, url: str) -> None:
    spec = SITE_LISTS[url]
    sites = {"a": world.ids["site_id"]}
    with world.app.uow() as uow:
        sites["b"] = world.app.network.get_site(uow, SITE_B).id

    def rows(where: str) -> list[dict[str, Any]]:
        token = world.tokens[(spec.role, where)]
        r = world.client.get(url, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, (url, spec.role, where, r.text[:200])
        return spec.rows(r.json())

    own = rows("a")
    assert own, f"{url}: {spec.role} of {SITE_A} sees an empty list (nothing checked)"
    assert {spec.site_of(world, r) for r in own} == {sites["a"]}, url
    # another site's staff: only their own site's rows (none of site A's, none of no site)
    assert {spec.site_of(world, r) for r in rows("b")} <= {sites["b"]}, url
    # and the network sees site A's rows too
    token = world.tokens[("auditor", "net")]
    seen = world.client.get(url, headers={"Authorization": f"Bearer {token}"})
    if seen.status_code == 200:
        assert sites["a"] in {spec.site_of(world, r) for r in spec.rows(seen.json())}, url


def test_annex11_s12_lists_show_site_staff_only_their_own_site(world: World) -> None:
    def get(role: str, where: str, url: str) -> Any:
        r = world.client.get(
            url, headers={"Authorization": f"Bearer {world.tokens[(role, where)]}"}
        )
        assert r.status_code == 200, r.text
        return r.json()

    ids = world.ids
    own = [o["id"] for o in get("pharmacist", "a", "/api/v1/orders")]
    other = [o["id"] for o in get("pharmacist", "b", "/api/v1/orders")]
    network = [o["id"] for o in get("qp", "net", "/api/v1/orders")]
    assert ids["order_id"] in own and ids["order_id"] in network
    assert ids["order_id"] not in other
    assert all(a["site_id"] == ids["site_id"] for a in get("operator", "a", "/api/v1/alarms"))
    assert get("operator", "b", "/api/v1/alarms") == []
    assert get("qp", "net", "/api/v1/alarms")
    lots_b = get("pharmacist", "b", "/api/v1/material-lots")
    assert lots_b and ids["lot_id"] not in {lot["id"] for lot in lots_b}
    queue_a = {r["batch_id"] for r in get("pharmacist", "a", "/api/v1/release/pending")}
    queue_b = {r["batch_id"] for r in get("pharmacist", "b", "/api/v1/release/pending")}
    assert ids["batch_id"] in queue_a and ids["batch_id"] not in queue_b
    trace_b = get("pharmacist", "b", f"/api/v1/trace/lots/{ids['lot']}")
    trace_a = get("pharmacist", "a", f"/api/v1/trace/lots/{ids['lot']}")
    assert trace_a["units"] and not trace_b["units"]
    machines_b = {m["machine_id"] for m in get("operator", "b", "/api/v1/telemetry/machines")}
    assert ids["machine_id"] not in machines_b
    # asking for another site's list by name is refused, not quietly emptied
    r = world.client.get(
        "/api/v1/alarms",
        params={"site_id": ids["site_id"]},
        headers={"Authorization": f"Bearer {world.tokens[('operator', 'b')]}"},
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "other_site"


def test_annex11_s12_patient_identity_only_for_the_roles_and_sites_that_need_it(
    world: World,
) -> None:
    url = f"/api/v1/patients/{world.ids['patient_id']}/identity"
    for (role, where), token in world.tokens.items():
        r = world.client.get(url, headers={"Authorization": f"Bearer {token}"})
        allowed = role in ("pharmacist", "clinician") and where in ("a", "net")
        assert (r.status_code == 200) is allowed, (role, where, r.status_code)
        if allowed:
            assert set(r.json()) & {"name", "family", "given", "nhs_number", "birth_date"}
    trail = world.client.get(
        "/api/v1/audit",
        params={"entity_type": "patient", "entity_id": world.ids["patient_id"]},
        headers={"Authorization": f"Bearer {world.tokens[('auditor', 'net')]}"},
    )
    assert trail.status_code == 200, trail.text  # every read of identity is on record
    body = trail.json()
    rows = body if isinstance(body, list) else body["items"]
    assert any(e["action"] == "read_identity" for e in rows), body


def test_a_scanned_pack_is_the_one_the_world_made(world: World) -> None:
    # guards the fixture: the dispense and verify rows above act on a real pack of site A
    ident = parse_scan(world.ids["scan"])
    with world.app.uow() as uow:
        unit = world.app.custody.get_unit(uow, world.ids["unit_id"])
    assert (ident.gtin, ident.serial) == (unit.gtin, unit.serial)


def test_the_matrix_in_docs_security_md_is_the_code() -> None:
    from nearfab.identity.permissions import matrix_markdown

    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    table = doc.split("<!-- matrix:start -->")[1].split("<!-- matrix:end -->")[0].strip()
    assert table == matrix_markdown(), "regenerate the table with matrix_markdown()"
    assert set(MATRIX) == set(Permission)
