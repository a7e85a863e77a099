"""Change control of a master file (issue 19 part 3) on the seeded demo network, SQLite and
PostgreSQL: the impact on every site counted by hand from the seed, refusals naming the field,
the QP's e-signed decision, and the new version made effective only through the approved
change control (docs/central-qa.md)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import Forbidden, NotFound, Refused, ValidationFailed
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import AuditEntry, Signature
from nearfab.masterfiles import ChangeControl, MasterFile

seeded = fh.seeded


def _draft_v2(app: App, **changes: Any) -> str:
    with app.uow() as uow:
        data = app.master_files.effective_for_code(uow, HYDROCORTISONE).content()
    data.pop("version")
    data.update(changes)
    with app.uow() as uow:
        return app.master_files.draft(uow, fh.actor(app, "qp"), data).id


def _raise(app: App, mf_id: str, username: str = "qp", **extra: Any) -> ChangeControl:
    with app.uow() as uow:
        row = app.change_controls.raise_change(
            uow,
            fh.actor(app, username),
            {
                "proposed_master_file_id": mf_id,
                "title": "MOB-1 leaves the product",
                "description": "the mobile unit no longer makes it",
                "reason": "the mobile unit's route ends",
                **extra,
            },
        )
        uow.session.expunge(row)
        return row


def test_change_control_lists_the_impact_on_every_site(seeded: App) -> None:
    app = seeded
    gstt, man, mob = (fh.site_id(app, c) for c in ("GSTT-PH", "MAN-PH", "MOB-1"))
    # work under version 1: two orders of the GSTT-PH clinician, one of them made into a
    # batch (awaiting its disposition), the other only designed
    batch_id = fh.make_batch(app, ready=False)
    fh.submit(app)
    making_site = fh.batch(app, batch_id).site_id
    v2 = _draft_v2(app, allowed_site_ids=[gstt, man])
    cc = _raise(app, v2)
    impact = {r["site_code"]: r for r in cc.impact}
    # seed (nearfab.demo): MF-HC allowed at GSTT-PH, MAN-PH, MOB-1; machines qualified for it:
    # GSTT printer A and B, MAN printer A, Mobile printer; CTRL is not allowed (not listed)
    assert set(impact) == {"GSTT-PH", "MAN-PH", "MOB-1"}
    assert [impact[s]["change"] for s in ("GSTT-PH", "MAN-PH", "MOB-1")] == [
        "stays",
        "stays",
        "leaves",
    ]
    assert impact["GSTT-PH"]["qualified_machines"] == ["GSTT printer A", "GSTT printer B"]
    assert impact["MAN-PH"]["qualified_machines"] == ["MAN printer A"]
    assert impact["MOB-1"]["qualified_machines"] == ["Mobile printer"]
    # orders are counted at the ordering site: 2 at GSTT-PH (designed + awaiting release)
    assert [impact[s]["open_orders"] for s in ("GSTT-PH", "MAN-PH", "MOB-1")] == [2, 0, 0]
    # the one batch, made and not yet dispositioned, at the site that made it
    by_id = {r["site_id"]: r["batches_in_progress"] for r in cc.impact}
    assert by_id == {gstt: 0, man: 0, mob: 0} | {making_site: 1}
    assert cc.from_version == 1 and cc.to_version == 2 and cc.status == "raised"
    with app.uow() as uow:
        [created] = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_type == "change_control", AuditEntry.entity_id == cc.id
            )
        )
    assert created.action == "create" and created.reason == "the mobile unit's route ends"


def test_refusals_name_the_field(seeded: App) -> None:
    app = seeded
    v2 = _draft_v2(app)
    with pytest.raises(ValidationFailed) as blank:
        _raise(app, v2, title="  ")
    assert blank.value.field == "change_control.title"
    with pytest.raises(ValidationFailed) as extra:
        _raise(app, v2, colour="red")
    assert extra.value.field == "change_control.colour"
    with pytest.raises(NotFound) as missing:
        _raise(app, "mf_nope")
    assert missing.value.field == "proposed_master_file_id"
    with app.uow() as uow:
        v1 = app.master_files.effective_for_code(uow, HYDROCORTISONE).id
    with pytest.raises(Refused) as effective:
        _raise(app, v1)
    assert effective.value.field == "proposed_master_file_id"
    # site staff may not raise one (a network record); the pharmacist holds no role for it
    with pytest.raises(Forbidden) as pharmacist:
        _raise(app, v2, username="pharmacist")
    assert pharmacist.value.code == "forbidden"
    cc = _raise(app, v2)
    with pytest.raises(Refused) as twice:
        _raise(app, v2)
    assert twice.value.field == "proposed_master_file_id" and twice.value.code == "duplicate"
    with app.uow() as uow:
        assert len(app.change_controls.list(uow, fh.actor(app, "qp"))) == 1
    # deciding needs a reason and the right password; nothing is written otherwise
    decision = {"approve": True, "reason": "", "password": fh.TEST_PASSWORD}
    with app.uow() as uow, pytest.raises(ValidationFailed) as no_reason:
        app.change_controls.decide(uow, fh.actor(app, "qp"), cc.id, decision)
    assert no_reason.value.field == "decision.reason"
    with app.uow() as uow, pytest.raises(Exception) as wrong:
        app.change_controls.decide(
            uow, fh.actor(app, "qp"), cc.id, decision | {"reason": "ok", "password": "nope"}
        )
    assert getattr(wrong.value, "field", None) == "password"
    with app.uow() as uow:
        assert app.change_controls.get(uow, cc.id).status == "raised"


def test_the_new_version_becomes_effective_through_the_approved_change(seeded: App) -> None:
    app = seeded
    qp = fh.actor(app, "qp")
    v2 = _draft_v2(app, shelf_life_days=20)
    cc = _raise(app, v2)
    with app.uow() as uow, pytest.raises(Refused) as early:
        app.change_controls.implement(uow, qp, cc.id)
    assert early.value.field == "status" and early.value.code == "not_approved"
    with app.uow() as uow:
        app.change_controls.decide(
            uow,
            qp,
            cc.id,
            {"approve": True, "reason": "impact accepted", "password": fh.TEST_PASSWORD},
        )
    # the version itself is still a draft: its own QP approval comes first
    with app.uow() as uow, pytest.raises(Refused) as draft:
        app.change_controls.implement(uow, qp, cc.id)
    assert draft.value.field == "proposed_master_file_id"
    with app.uow() as uow:
        app.master_files.approve(uow, qp, v2, password=fh.TEST_PASSWORD)
    with app.uow() as uow:
        app.change_controls.implement(uow, qp, cc.id)
    with app.uow() as uow:
        rows = {
            m.version: m.status
            for m in uow.session.scalars(
                select(MasterFile).where(MasterFile.code == HYDROCORTISONE)
            )
        }
        row = app.change_controls.get(uow, cc.id)
        sig = uow.session.get(Signature, row.signature_id)
        trail = [
            (a.action, (a.new or {}).get("status"))
            for a in uow.session.scalars(
                select(AuditEntry)
                .where(AuditEntry.entity_type == "change_control", AuditEntry.entity_id == cc.id)
                .order_by(AuditEntry.id)
            )
        ]
    assert rows == {1: "superseded", 2: "effective"}
    assert row.status == "implemented" and row.implemented_by == qp.user_id
    assert sig is not None and sig.meaning == "QP approval of change control"
    # the signature writes its own "sign" row (identity), then the transitions
    assert trail == [
        ("create", None),
        ("sign", None),
        ("transition", "approved"),
        ("transition", "implemented"),
    ]
    # an implemented change is not decided again
    with app.uow() as uow, pytest.raises(Refused) as again:
        app.change_controls.decide(
            uow, qp, cc.id, {"approve": False, "reason": "x", "password": fh.TEST_PASSWORD}
        )
    assert again.value.field == "status"
