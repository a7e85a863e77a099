"""order integrity: every order belongs to a site; a prescription is taken once per patient

- `orders.site_id` becomes NOT NULL, a foreign key to `sites`. An order stored before without a
  site gets one derived from the record itself: the ordering site of the same patient's other
  orders (when they agree on one point-of-care site), else the point-of-care site whose machine
  made it (its job). An order with neither is not guessed: the migration stops and names it
  (set its site by hand, then run the upgrade again). docs/prescriptions.md.
- `orders.resubmit_of`: the cancelled order an order submits again.
- `prescriptions.identifier_system`, `identifier_value`, `resubmission` and the unique key
  (patient, identifier system, identifier value, resubmission): two submissions of the same
  prescription cannot both be stored, even at the same moment. Prescriptions received before
  this revision keep no identifier (the received resource is encrypted) and are not matched.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")


def _derived_site(
    conn: sa.Connection, order_id: str, patient_id: str, point_of_care: set[str]
) -> tuple[str, str] | None:
    """(site id, where it came from), or None when the record does not tell."""
    siblings = {
        row[0]
        for row in conn.execute(
            sa.text(
                "SELECT DISTINCT site_id FROM orders WHERE patient_id = :p AND site_id IS NOT NULL"
            ),
            {"p": patient_id},
        )
    } & point_of_care
    if len(siblings) == 1:
        return next(iter(siblings)), "the patient's other orders"
    made_at = {
        row[0]
        for row in conn.execute(
            sa.text("SELECT DISTINCT site_id FROM jobs WHERE order_id = :o"), {"o": order_id}
        )
    } & point_of_care
    if len(made_at) == 1:
        return next(iter(made_at)), "the site whose job made it"
    return None


def _derive_sites() -> None:
    conn = op.get_bind()
    missing = [
        (row[0], row[1])
        for row in conn.execute(
            sa.text("SELECT id, patient_id FROM orders WHERE site_id IS NULL ORDER BY id")
        )
    ]
    if not missing:
        return
    point_of_care = {
        row[0] for row in conn.execute(sa.text("SELECT id FROM sites WHERE kind <> 'control'"))
    }
    # rounds until nothing more can be told: an order resolved in one round (from its job) can
    # give its site to the same patient's other orders in the next
    unresolved = list(missing)
    progress = True
    while unresolved and progress:
        progress, left = False, []
        for order_id, patient_id in unresolved:
            found = _derived_site(conn, order_id, patient_id, point_of_care)
            if found is None:
                left.append((order_id, patient_id))
                continue
            site, source = found
            conn.execute(
                sa.text("UPDATE orders SET site_id = :s WHERE id = :o"),
                {"s": site, "o": order_id},
            )
            log.warning(
                "0013: order %s had no ordering site; set to %s (%s)", order_id, site, source
            )
            progress = True
        unresolved = left
    if unresolved:
        names = [order_id for order_id, _ in unresolved]
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        raise RuntimeError(
            f"0013: {len(unresolved)} order(s) have no ordering site and none can be derived "
            f"(no other order of the patient, no job at a point-of-care site): {shown}. "
            "Set each one's site (UPDATE orders SET site_id = '<site id>' "
            "WHERE id = '<order id>'), then run the upgrade again; nothing was changed."
        )


# SQLite cannot add NOT NULL or a foreign key to a column without rebuilding the table, and
# rebuilding `orders` (which jobs, batches and packs reference) under foreign_keys=ON fails:
# on SQLite the same two rules are triggers instead; PostgreSQL gets the real constraints.
SQLITE_TRIGGERS = {
    "orders_site_required_insert": "BEFORE INSERT ON orders",
    "orders_site_required_update": "BEFORE UPDATE OF site_id ON orders",
}
SITE_RULE = "orders.site_id: every order belongs to a site (NOT NULL, a sites.id)"


def upgrade() -> None:
    _derive_sites()
    dialect = op.get_bind().dialect.name
    op.add_column("orders", sa.Column("resubmit_of", sa.String(length=32), nullable=True))
    if dialect == "sqlite":
        for name, when in SQLITE_TRIGGERS.items():
            op.execute(
                sa.text(
                    f"CREATE TRIGGER {name} {when} FOR EACH ROW WHEN NEW.site_id IS NULL "
                    "OR NOT EXISTS (SELECT 1 FROM sites WHERE id = NEW.site_id) "
                    f"BEGIN SELECT RAISE(ABORT, '{SITE_RULE}'); END"
                )
            )
    else:
        op.alter_column("orders", "site_id", existing_type=sa.String(length=32), nullable=False)
        op.create_foreign_key("fk_orders_site_id_sites", "orders", "sites", ["site_id"], ["id"])
    op.add_column(
        "prescriptions", sa.Column("identifier_system", sa.String(length=255), nullable=True)
    )
    op.add_column(
        "prescriptions", sa.Column("identifier_value", sa.String(length=255), nullable=True)
    )
    op.add_column(
        "prescriptions",
        sa.Column("resubmission", sa.Integer(), nullable=False, server_default="0"),
    )
    # a unique index (not a table constraint): SQLite adds it without rebuilding the table
    op.create_index(
        "uq_prescriptions_identifier",
        "prescriptions",
        ["patient_id", "identifier_system", "identifier_value", "resubmission"],
        unique=True,
    )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_index("uq_prescriptions_identifier", table_name="prescriptions")
    with op.batch_alter_table("prescriptions") as batch:
        batch.drop_column("resubmission")
        batch.drop_column("identifier_value")
        batch.drop_column("identifier_system")
    if dialect == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(sa.text(f"DROP TRIGGER IF EXISTS {name}"))
    else:
        op.drop_constraint("fk_orders_site_id_sites", "orders", type_="foreignkey")
        op.alter_column("orders", "site_id", existing_type=sa.String(length=32), nullable=True)
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("resubmit_of")
