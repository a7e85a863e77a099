"""identity/reads.py `audit_entries_on`: the audit rows about several entities of several
types, read by other domains (quality's audit-trail review) in one statement, by id. Rows
about other ids of the same type, or other types with the same id, are not about them. Both
databases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.identity import AuditAction, audit, system_actor
from nearfab.identity.reads import audit_entries_on

seeded = fh.seeded


def test_audit_entries_on_reads_the_rows_about_the_named_entities_in_one_statement(
    seeded: App,
) -> None:
    actor = system_actor("test")
    # written in this order, so their ids rise in this order
    written = [
        ("batch", "B-1"),
        ("job", "J-1"),
        ("batch", "B-2"),  # another batch: not asked for
        ("order", "B-1"),  # the same id under another type: not asked for
        ("job", "J-2"),
        ("batch", "B-1"),
    ]
    with seeded.uow() as uow:
        entries = [
            audit(uow, actor, AuditAction.CREATE, kind, key, new={"n": n})
            for n, (kind, key) in enumerate(written)
        ]
        uow.flush()  # the ids are given at the flush
        ids = [e.id for e in entries]
        uow.commit()
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, sql: str, *_rest: Any) -> None:
        statements.append(sql)

    with seeded.uow() as uow:
        event.listen(seeded.engine, "before_cursor_execute", count)
        try:
            rows = audit_entries_on(
                uow.session, {"batch": ["B-1"], "job": ["J-1", "J-2", "J-none"], "deviation": []}
            )
            nothing = audit_entries_on(uow.session, {"batch": [], "job": []})
        finally:
            event.remove(seeded.engine, "before_cursor_execute", count)
        # by hand from the list above: rows 0, 1, 4 and 5, in the order written
        assert [(r.entity_type, r.entity_id, r.new) for r in rows] == [
            ("batch", "B-1", {"n": 0}),
            ("job", "J-1", {"n": 1}),
            ("job", "J-2", {"n": 4}),
            ("batch", "B-1", {"n": 5}),
        ]
        assert [r.id for r in rows] == [ids[0], ids[1], ids[4], ids[5]]
        assert nothing == []
    assert len(statements) == 1  # the first call; nothing asked for, nothing read
