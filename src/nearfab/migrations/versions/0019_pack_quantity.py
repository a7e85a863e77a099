"""serial units: the pack's quantity of units, not a tablet count

Family kit (issue 15), part owned by custody: `serial_units.tablets` becomes `quantity` (how
many of the family's units the pack holds; the family words them on labels and pages). The
count keeps its value; the downgrade gives the old name back.

A rename in place (ALTER TABLE ... RENAME COLUMN: PostgreSQL, and SQLite since 3.25), not a
batch table rebuild: rebuilding `serial_units` drops the table, and SQLite with
foreign_keys=ON (as nearfab connects) refuses to drop a table that dispenses, containers and
recalls reference (tests/custody/test_pack_quantity_migration.py has such a database).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.text("ALTER TABLE serial_units RENAME COLUMN tablets TO quantity"))


def downgrade() -> None:
    op.execute(sa.text("ALTER TABLE serial_units RENAME COLUMN quantity TO tablets"))
