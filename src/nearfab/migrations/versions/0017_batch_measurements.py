"""batch records: the family's measurement document instead of per-unit mass columns

- `batch_records.measurements` (JSON): the measurement document of the run, made and validated
  by the product family's machines part. Every batch stored before this revision is a
  solid_dose batch: its `unit_masses_mg` list becomes the document {"unit_masses_mg": [...]}.
- `batch_records.units_made`: how many units the machine made (the length of that list).
- `batch_records.unit_masses_mg` is dropped.

Columns are added and dropped in place (ALTER TABLE ... ADD / DROP COLUMN: PostgreSQL, and
SQLite since 3.35), not by a batch table rebuild: rebuilding `batch_records` drops the table,
and SQLite with foreign_keys=ON (as nearfab connects) refuses to drop a table that batch steps,
reviews and packs reference.

The downgrade moves the solid_dose documents back into `unit_masses_mg`; it stops, naming the
batch and changing nothing, when a batch holds another family's document (that evidence has no
column to go back to).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "unit_masses_mg"

_batches = sa.table(
    "batch_records",
    sa.column("id", sa.String),
    sa.column(OLD, sa.JSON),
    sa.column("measurements", sa.JSON),
    sa.column("units_made", sa.Integer),
)


def _drop(table: str, column: str) -> None:
    op.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))


def upgrade() -> None:
    op.add_column("batch_records", sa.Column("measurements", sa.JSON(), nullable=True))
    op.add_column("batch_records", sa.Column("units_made", sa.Integer(), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.select(_batches.c.id, _batches.c[OLD])).all()
    for batch_id, masses in rows:
        if masses is None:
            continue
        conn.execute(
            _batches.update()
            .where(_batches.c.id == batch_id)
            .values(measurements={OLD: list(masses)}, units_made=len(masses))
        )
    _drop("batch_records", OLD)


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(_batches.c.id, _batches.c.measurements)).all()
    moved: list[tuple[str, list[float]]] = []
    for batch_id, document in rows:
        if document is None:
            continue
        if not isinstance(document, dict) or set(document) - {OLD}:
            raise RuntimeError(
                f"batch {batch_id} holds a measurement document that is not solid_dose's "
                f"({sorted(document) if isinstance(document, dict) else type(document).__name__}"
                f"): there is no column to move it back to; nothing was changed"
            )
        if document.get(OLD) is not None:
            moved.append((batch_id, list(document[OLD])))
    op.add_column("batch_records", sa.Column(OLD, sa.JSON(), nullable=True))
    for batch_id, masses in moved:
        conn.execute(_batches.update().where(_batches.c.id == batch_id).values({OLD: masses}))
    _drop("batch_records", "units_made")
    _drop("batch_records", "measurements")
