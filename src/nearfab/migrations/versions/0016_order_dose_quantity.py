"""orders: the prescribed dose as a quantity with its unit (not milligrams)

Family kit (issue 15), part owned by orders: `orders.dose_mg` becomes `dose_value` + `dose_unit`
(the dose as the product family accepted it). Every order made before this revision was a
solid_dose order dosed in mg, so each keeps its number with the unit "mg". The downgrade goes
back only when every order's dose is in mg (it names the first one that is not, and changes
nothing).

SQLite: rebuilding `orders` (batch mode's copy-and-move) under foreign_keys=ON fails once jobs,
batches and packs reference it, and would drop 0013's triggers; so, as 0013 does, the columns
are added and dropped in place (ALTER TABLE ... DROP COLUMN, SQLite 3.35+) and NOT NULL is a
pair of triggers. PostgreSQL gets real NOT NULL columns.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DOSE_RULE = "orders.dose_value, dose_unit: every order has its dose with a unit (NOT NULL)"
MG_RULE = "orders.dose_mg: every order has its dose in mg (NOT NULL)"


def _not_null_triggers(name: str, columns: tuple[str, ...], rule: str) -> None:
    """SQLite: refuse an order row without `columns`, on insert and on update."""
    missing = " OR ".join(f"NEW.{c} IS NULL" for c in columns)
    for suffix, when in (
        ("insert", "BEFORE INSERT ON orders"),
        ("update", f"BEFORE UPDATE OF {', '.join(columns)} ON orders"),
    ):
        op.execute(
            sa.text(
                f"CREATE TRIGGER {name}_{suffix} {when} FOR EACH ROW WHEN {missing} "
                f"BEGIN SELECT RAISE(ABORT, '{rule}'); END"
            )
        )


def _drop_triggers(name: str) -> None:
    for suffix in ("insert", "update"):
        op.execute(sa.text(f"DROP TRIGGER IF EXISTS {name}_{suffix}"))


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column("orders", sa.Column("dose_value", sa.Double(), nullable=True))
    op.add_column("orders", sa.Column("dose_unit", sa.String(length=32), nullable=True))
    op.execute(sa.text("UPDATE orders SET dose_value = dose_mg, dose_unit = 'mg'"))
    if sqlite:
        _drop_triggers("orders_dose_mg_required")  # left by a downgrade
        op.execute(sa.text("ALTER TABLE orders DROP COLUMN dose_mg"))
        _not_null_triggers("orders_dose_required", ("dose_value", "dose_unit"), DOSE_RULE)
    else:
        op.alter_column("orders", "dose_value", existing_type=sa.Double(), nullable=False)
        op.alter_column("orders", "dose_unit", existing_type=sa.String(length=32), nullable=False)
        op.drop_column("orders", "dose_mg")


def downgrade() -> None:
    other = (
        op.get_bind()
        .execute(sa.text("SELECT id, dose_unit FROM orders WHERE dose_unit <> 'mg' LIMIT 1"))
        .first()
    )
    if other is not None:
        raise RuntimeError(
            f"order {other[0]} is dosed in {other[1]!r}: before 0016 every dose was in mg; "
            "remove or migrate such orders first (nothing was changed)"
        )
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column("orders", sa.Column("dose_mg", sa.Double(), nullable=True))
    op.execute(sa.text("UPDATE orders SET dose_mg = dose_value"))
    if sqlite:
        _drop_triggers("orders_dose_required")
        op.execute(sa.text("ALTER TABLE orders DROP COLUMN dose_unit"))
        op.execute(sa.text("ALTER TABLE orders DROP COLUMN dose_value"))
        _not_null_triggers("orders_dose_mg_required", ("dose_mg",), MG_RULE)
    else:
        op.alter_column("orders", "dose_mg", existing_type=sa.Double(), nullable=False)
        op.drop_column("orders", "dose_unit")
        op.drop_column("orders", "dose_value")
