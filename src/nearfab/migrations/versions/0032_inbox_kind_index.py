"""replication inbox: an index by record kind

Issue 17, release across the network: the control site finds the release dossiers its sites
sent (records of kind `dossier`, docs/replication.md) among every record it holds; the index
keeps that a look-up whatever the size of the inbox.

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0032"
down_revision: str | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_replication_inbox_kind", "replication_inbox", ["kind", "origin_site", "seq"]
    )


def downgrade() -> None:
    op.drop_index("ix_replication_inbox_kind", table_name="replication_inbox")
