"""Database protection of the audit trail: triggers that refuse UPDATE and DELETE on
`audit_entries`, `signatures` and `audit_checkpoints`, and let `audit_chain_head` only move
forward onto the last row. Created by migration 0008 (and 0014), and with create_all."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, event, text

from nearfab.identity.models import Signature
from nearfab.identity.services.auditchain import CHECKPOINTS, ENTRIES, GENESIS, HEAD

APPEND_ONLY_TABLES = ("audit_entries", "signatures")


def append_only_ddl(dialect: str, table: str) -> list[str]:
    """Triggers refusing UPDATE and DELETE (and TRUNCATE on PostgreSQL) on `table`."""
    if dialect == "postgresql":
        return [
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION nearfab_append_only()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION nearfab_append_only()",
        ]
    return [
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} BEGIN "
        f"SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} BEGIN "
        f"SELECT RAISE(ABORT, '{table} is append-only: DELETE refused'); END",
    ]


def drop_append_only_ddl(dialect: str, table: str) -> list[str]:
    if dialect == "postgresql":
        return [
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        ]
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_update",
        f"DROP TRIGGER IF EXISTS {table}_no_delete",
    ]


PG_FUNCTIONS = [
    """CREATE OR REPLACE FUNCTION nearfab_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$""",
    """CREATE OR REPLACE FUNCTION nearfab_audit_head_forward() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'UPDATE' THEN
    RAISE EXCEPTION 'audit_chain_head: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.id = OLD.id AND NEW.seq = OLD.seq AND NEW.hash = OLD.hash THEN
    RETURN NEW;
  END IF;
  IF NEW.id <> OLD.id OR NEW.seq <= OLD.seq
     OR NOT EXISTS (SELECT 1 FROM audit_entries WHERE seq = NEW.seq AND row_hash = NEW.hash)
     OR EXISTS (SELECT 1 FROM audit_entries WHERE seq > NEW.seq) THEN
    RAISE EXCEPTION 'audit_chain_head only moves forward, onto the last audit row (% -> %)',
      OLD.seq, NEW.seq USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$""",
]


def head_ddl(dialect: str) -> list[str]:
    """The head may only move forward, onto the last audit row; it cannot be deleted."""
    if dialect == "postgresql":
        return [
            "CREATE TRIGGER audit_chain_head_forward BEFORE UPDATE OR DELETE ON audit_chain_head "
            "FOR EACH ROW EXECUTE FUNCTION nearfab_audit_head_forward()",
            "CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON audit_chain_head "
            "FOR EACH STATEMENT EXECUTE FUNCTION nearfab_audit_head_forward()",
        ]
    return [
        "CREATE TRIGGER audit_chain_head_forward BEFORE UPDATE ON audit_chain_head "
        "WHEN NOT (NEW.id = OLD.id AND ((NEW.seq = OLD.seq AND NEW.hash = OLD.hash) OR "
        "(NEW.seq > OLD.seq "
        "AND NEW.hash = COALESCE((SELECT row_hash FROM audit_entries WHERE seq = NEW.seq), '') "
        "AND NOT EXISTS (SELECT 1 FROM audit_entries WHERE seq > NEW.seq)))) "
        "BEGIN SELECT RAISE(ABORT, 'audit_chain_head only moves forward, onto the last audit "
        "row'); END",
        "CREATE TRIGGER audit_chain_head_no_delete BEFORE DELETE ON audit_chain_head "
        "BEGIN SELECT RAISE(ABORT, 'audit_chain_head: DELETE refused'); END",
    ]


def drop_head_ddl(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [
            "DROP TRIGGER IF EXISTS audit_chain_head_forward ON audit_chain_head",
            "DROP TRIGGER IF EXISTS audit_chain_head_no_truncate ON audit_chain_head",
        ]
    return [
        "DROP TRIGGER IF EXISTS audit_chain_head_forward",
        "DROP TRIGGER IF EXISTS audit_chain_head_no_delete",
    ]


def _on_create(statements: Any) -> Any:
    def listener(target: Any, connection: Connection, **_kw: Any) -> None:
        dialect = connection.dialect.name
        if dialect == "postgresql":
            for fn in PG_FUNCTIONS:
                connection.execute(text(fn))
        for statement in statements(dialect):
            connection.execute(text(statement))

    return listener


def _head_created(target: Any, connection: Connection, **kw: Any) -> None:
    connection.execute(HEAD.insert().values(id=1, seq=0, hash=GENESIS))
    _on_create(head_ddl)(target, connection, **kw)


# a schema made from the metadata (Base.metadata.create_all) gets the same protection as one
# made by the migrations
event.listen(ENTRIES, "after_create", _on_create(lambda d: append_only_ddl(d, "audit_entries")))
event.listen(
    Signature.__table__, "after_create", _on_create(lambda d: append_only_ddl(d, "signatures"))
)
event.listen(HEAD, "after_create", _head_created)
event.listen(
    CHECKPOINTS, "after_create", _on_create(lambda d: append_only_ddl(d, "audit_checkpoints"))
)
