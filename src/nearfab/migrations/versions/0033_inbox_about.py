"""replication inbox: what each record is about, in an indexed column

Issue 17: the control's node page lists what the site nodes refused or still hold
(`replication/outcomes.py`) and a site node lists the control's records waiting there
(`replication/decisions.py`, `waiting_at`); both found their rows by a text scan of the
records' JSON payloads (`LIKE '%"entity_type":"…"%'`), which grows with the sites' trails
and takes for one a record that merely carries the text in another field. The column `about`
says what a record is about: an audit row's `entity_type`, a ledger entry's `kind`; NULL for
the other kinds (batch, telemetry, dossier and alert summaries) and for a payload that is not
a JSON object naming it. The inbox fills it as it stores a record (`services.record_about`);
here the rows stored before are filled from their payloads by the same rule, 1,000 at a time
in id order (the same on SQLite and PostgreSQL: a payload that is not JSON, which the inbox
stores all the same, would make a cast in SQL fail). The downgrade drops the index and the
column.

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-08
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0033"
down_revision: str | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# as `replication.services.ABOUT_FIELDS` when this was written (a migration does not follow
# the code after it)
_FIELDS = {"audit": "entity_type", "ledger": "kind"}
_CHUNK = 1000


def _about(kind: str, payload: str) -> str | None:
    name = _FIELDS.get(kind)
    if name is None:
        return None
    try:
        row = json.loads(payload)
    except ValueError:
        return None
    value = row.get(name) if isinstance(row, dict) else None
    return value[:64] if isinstance(value, str) and value else None


def upgrade() -> None:
    with op.batch_alter_table("replication_inbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("about", sa.String(length=64), nullable=True))
    inbox = sa.table(
        "replication_inbox",
        sa.column("id", sa.String()),
        sa.column("kind", sa.String()),
        sa.column("payload", sa.Text()),
        sa.column("about", sa.String()),
    )
    conn = op.get_bind()
    last = ""
    while True:
        rows = conn.execute(
            # by the key alone (a condition on the kind would lead SQLite to the kind's
            # index and a sort of every row at each step)
            sa.select(inbox.c.id, inbox.c.kind, inbox.c.payload)
            .where(inbox.c.id > last)
            .order_by(inbox.c.id)
            .limit(_CHUNK)
        ).all()
        if not rows:
            break
        values = [
            {"ident": ident, "value": about}
            for ident, kind, payload in rows
            if (about := _about(kind, payload)) is not None
        ]
        if values:
            conn.execute(
                inbox.update().where(inbox.c.id == sa.bindparam("ident")),
                [{"ident": v["ident"], "about": v["value"]} for v in values],
            )
        last = rows[-1][0]
    op.create_index(
        "ix_replication_inbox_about", "replication_inbox", ["about", "origin_site", "seq"]
    )


def downgrade() -> None:
    op.drop_index("ix_replication_inbox_about", table_name="replication_inbox")
    with op.batch_alter_table("replication_inbox", schema=None) as batch_op:
        batch_op.drop_column("about")
