"""Issue 17: the use cases only the control site may run are refused at a site node, by the
services themselves (common/node.py), so a new one cannot be missed silently.

The control site's decisions, from the issue and docs/replication.md: a QP release or
rejection, and a master-file change (draft, approval, making effective, withdrawal). Every
function of the product that authorizes one of those permissions is found by reading the
source (not by asking the code under test), must ask the node role before that check, and is
called here on a site node, where it must refuse with `control_site_only`, on record."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.replication import test_replication_mqtt as base

from nearfab.bootstrap import App
from nearfab.common.errors import Refused
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import AuditEntry
from nearfab.replication.releases import ControlReleases

nodes = base.nodes  # the fixture: a site node GSTT-PH and the control node, each its own db

SRC = Path(__file__).resolve().parents[2] / "src" / "nearfab"
# the permissions of the control site's decisions (issue 17: "QP release, master-file changes")
CONTROL_PERMISSIONS = {
    "RELEASE_DECIDE",
    "MASTER_FILE_DRAFT",
    "MASTER_FILE_APPROVE",
    "MASTER_FILE_EFFECTIVE",
    "MASTER_FILE_WITHDRAW",
    # and what governs them: who signs a product's batches, how signatures are made, the
    # change controls of master files, and the approval of a build at a supervised site
    "MASTER_FILE_QP_ASSIGN",
    "SIGNING_POLICY",
    "CHANGE_CONTROL_RAISE",
    "CHANGE_CONTROL_APPROVE",
    "BUILD_APPROVE",
}
RELEASE = "a QP release or rejection needs the control site: this node is a site node"
MASTER_FILE = "a master-file change needs the control site: this node is a site node"
SITE_POLICY = "a change of a site's signing policy needs the control site: this node is a site node"
BUILD = "a home build's approval needs the control site: this node is a site node"

# every control-only use case: where it is, and how a site node's QP would call it
UseCase = Callable[[App, Any, dict[str, str]], object]
USE_CASES: dict[str, tuple[str, UseCase]] = {
    "quality/services.py:QualityService.decide": (
        RELEASE,
        lambda app, uow, ids: app.quality.decide(
            uow,
            fh.actor(app, "qp"),
            ids["batch"],
            decision="release",
            password=fh.TEST_PASSWORD,
            meaning="QP certification: batch released",
        ),
    ),
    # a site node's batch released across the network (quality/remote.py): at a site node
    # the control's entry point, replication's ControlReleases, refuses before anything
    "quality/remote.py:RemoteRelease.sign": (
        RELEASE,
        lambda app, uow, ids: ControlReleases(base.repl(app), app.quality.remote).decide(
            uow,
            fh.actor(app, "qp"),
            ids["batch"],
            decision="release",
            password=fh.TEST_PASSWORD,
            meaning="QP certification: batch released",
            shown_hash="0" * 64,
        ),
    ),
    "masterfiles/services.py:MasterFileService.draft": (
        MASTER_FILE,
        lambda app, uow, ids: app.master_files.draft(
            uow, fh.actor(app, "qp"), {"code": HYDROCORTISONE}
        ),
    ),
    "masterfiles/services.py:MasterFileService.approve": (
        MASTER_FILE,
        lambda app, uow, ids: app.master_files.approve(
            uow, fh.actor(app, "qp"), ids["master_file"], password=fh.TEST_PASSWORD
        ),
    ),
    "masterfiles/services.py:MasterFileService.make_effective": (
        MASTER_FILE,
        lambda app, uow, ids: app.master_files.make_effective(
            uow, fh.actor(app, "qp"), ids["master_file"]
        ),
    ),
    "masterfiles/services.py:MasterFileService.withdraw": (
        MASTER_FILE,
        lambda app, uow, ids: app.master_files.withdraw(
            uow, fh.actor(app, "qp"), ids["master_file"], reason="superseded"
        ),
    ),
    "masterfiles/changecontrol.py:ChangeControlService.implement": (
        MASTER_FILE,
        lambda app, uow, ids: app.change_controls.implement(uow, fh.actor(app, "qp"), "cc_x"),
    ),
    "masterfiles/changecontrol.py:ChangeControlService.raise_change": (
        MASTER_FILE,
        lambda app, uow, ids: app.change_controls.raise_change(
            uow,
            fh.actor(app, "qp"),
            {"proposed_master_file_id": ids["master_file"], "reason": "new die"},
        ),
    ),
    "masterfiles/changecontrol.py:ChangeControlService.decide": (
        MASTER_FILE,
        lambda app, uow, ids: app.change_controls.decide(
            uow, fh.actor(app, "qp"), "cc_x", {"decision": "approve"}
        ),
    ),
    "masterfiles/services.py:MasterFileService.set_signing_policy": (
        MASTER_FILE,
        lambda app, uow, ids: app.master_files.set_signing_policy(
            uow, fh.actor(app, "admin"), ids["master_file"], totp_for_signing=True, reason="x"
        ),
    ),
    "masterfiles/services.py:MasterFileService.assign_qp": (
        MASTER_FILE,
        lambda app, uow, ids: app.master_files.assign_qp(
            uow, fh.actor(app, "admin"), HYDROCORTISONE, "pharmacist", reason="cover"
        ),
    ),
    "masterfiles/services.py:MasterFileService.unassign_qp": (
        MASTER_FILE,
        lambda app, uow, ids: app.master_files.unassign_qp(
            uow, fh.actor(app, "admin"), HYDROCORTISONE, "qp", reason="left"
        ),
    ),
    "network/services.py:NetworkService.set_signing_policy": (
        SITE_POLICY,
        lambda app, uow, ids: app.network.set_signing_policy(
            uow, fh.actor(app, "admin"), ids["site"], totp_for_signing=False, reason="x"
        ),
    ),
    "production/services/ticketing.py:TicketDesk.approve": (
        BUILD,
        lambda app, uow, ids: app.production.approve_build(
            uow, fh.actor(app, "qp"), ids["job"], password=fh.TEST_PASSWORD
        ),
    ),
}


def _permission_checks(node: ast.AST) -> set[str]:
    """The control permissions a function passes to `authorize` / `authorize_network`."""
    found = set()
    for call in ast.walk(node):
        if not isinstance(call, ast.Call):
            continue
        name = getattr(call.func, "id", None) or getattr(call.func, "attr", None)
        if name not in ("authorize", "authorize_network"):
            continue
        for arg in call.args:
            if isinstance(arg, ast.Attribute) and arg.attr in CONTROL_PERMISSIONS:
                found.add(arg.attr)
    return found


def _asks_node_first(function: ast.FunctionDef) -> bool:
    """`require_control(...)` is called before the first permission check (by line)."""
    asks = [
        c.lineno
        for c in ast.walk(function)
        if isinstance(c, ast.Call) and getattr(c.func, "attr", None) == "require_control"
    ]
    checks = [
        c.lineno
        for c in ast.walk(function)
        if isinstance(c, ast.Call)
        and (getattr(c.func, "id", None) or getattr(c.func, "attr", None))
        in ("authorize", "authorize_network")
    ]
    return bool(asks) and min(asks) <= min(checks)


def control_use_cases_in_source() -> dict[str, bool]:
    """Every function of src/nearfab that authorizes a control permission -> whether it asks
    the node role before (the API routes and pages only declare them: `can`, `allowed`)."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
            for fn in cls.body:
                if isinstance(fn, ast.FunctionDef) and _permission_checks(fn):
                    key = f"{path.relative_to(SRC).as_posix()}:{cls.name}.{fn.name}"
                    out[key] = _asks_node_first(fn)
        for fn in tree.body:  # module-level functions too
            if isinstance(fn, ast.FunctionDef) and _permission_checks(fn):
                out[f"{path.relative_to(SRC).as_posix()}:{fn.name}"] = _asks_node_first(fn)
    return out


def test_every_use_case_that_authorizes_a_control_decision_asks_the_node_role_first() -> None:
    found = control_use_cases_in_source()
    # a new one fails here until it asks the node role and is called below
    assert set(found) == set(USE_CASES), "control-only use cases changed: list and guard them"
    assert [name for name, asks in found.items() if not asks] == []


def refusals(app: App) -> int:
    with app.uow() as uow:
        return int(
            uow.session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(
                    AuditEntry.action == "refuse",
                    AuditEntry.reason.like("%needs the control site%"),
                )
            )
            or 0
        )


def test_no_control_only_use_case_is_reachable_at_a_site_node(nodes: tuple[App, App]) -> None:
    site, control = nodes
    batch_id = fh.make_batch(site)
    mf_id = fh.master_file_id(site, HYDROCORTISONE)
    site_id = fh.site_id(site, "GSTT-PH")
    ids = {
        "batch": batch_id,
        "master_file": mf_id,
        "site": site_id,
        "job": fh.batch(site, batch_id).job_id,
    }
    with site.uow() as uow:
        mf_before = site.master_files.get(uow, mf_id).status
        policy = site.master_files.get(uow, mf_id).totp_for_signing
        site_policy = site.network.get_site(uow, site_id).totp_for_signing
        qp_assigned = site.master_files.is_assigned_qp(
            uow, HYDROCORTISONE, fh.actor(site, "qp").user_id, "qp"
        )
        drafts = len(site.master_files.list_all(uow))
    for name, (message, call) in USE_CASES.items():
        on_record = refusals(site)
        with pytest.raises(Refused) as caught, site.uow() as uow:
            call(site, uow, ids)
        error = caught.value
        assert (error.code, error.field, error.message) == (
            "control_site_only",
            "node",
            message,
        ), name
        assert refusals(site) == on_record + 1, f"{name}: the refusal is not on record"
    # nothing was done: the batch still waits for its decision, the master file is as it was
    assert fh.batch(site, batch_id).status == "completed"
    with site.uow() as uow:
        assert site.master_files.get(uow, mf_id).status == mf_before == "effective"
        assert len(site.master_files.list_all(uow)) == drafts  # no draft written
        assert site.master_files.get(uow, mf_id).totp_for_signing == policy
        assert site.network.get_site(uow, site_id).totp_for_signing == site_policy
        assert qp_assigned and site.master_files.is_assigned_qp(
            uow, HYDROCORTISONE, fh.actor(site, "qp").user_id, "qp"
        )
    # the control node is not a site node: the same services, not refused
    assert not control.quality.node.site_node and not control.master_files.node.site_node
