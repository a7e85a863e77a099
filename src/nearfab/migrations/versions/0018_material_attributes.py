"""material lots: family-validated attributes instead of a drug-loading column

Family kit (issue 15), owned by materials: `material_lots.drug_loading` becomes `attributes`, a
JSON object whose schema the family of the lot's products owns (solid_dose:
{"drug_loading": 0.1}). Each lot's drug loading moves into its attributes unchanged; the
downgrade moves it back, and stops, naming the lots, when a lot's attributes hold no drug
loading (a lot of another family's material has nothing to put in the old column).

Plain ADD/DROP COLUMN on both databases (SQLite 3.35+): a batch "move and copy" of
`material_lots` would drop a table that batch records reference, which SQLite refuses with
foreign keys on. The new column is NOT NULL with the empty object as its server default.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

import math
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOTS = sa.table(
    "material_lots",
    sa.column("id", sa.String()),
    sa.column("drug_loading", sa.Double()),
    sa.column("attributes", sa.JSON()),
)


def upgrade() -> None:
    op.add_column(
        "material_lots",
        sa.Column("attributes", sa.JSON(), nullable=False, server_default=sa.text("'{}'")),
    )
    conn = op.get_bind()
    for lot_id, loading in conn.execute(sa.select(LOTS.c.id, LOTS.c.drug_loading)).all():
        conn.execute(
            LOTS.update()
            .where(LOTS.c.id == lot_id)
            .values(attributes={"drug_loading": float(loading)})
        )
    op.drop_column("material_lots", "drug_loading")


def _loadings(conn: sa.Connection) -> dict[str, float]:
    """Each lot's drug loading from its attributes; RuntimeError naming the lots without one
    (nothing is changed)."""
    loadings: dict[str, float] = {}
    missing: list[str] = []
    rows = conn.execute(sa.select(LOTS.c.id, LOTS.c.attributes).order_by(LOTS.c.id)).all()
    for lot_id, attributes in rows:
        value = (attributes or {}).get("drug_loading")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            missing.append(lot_id)
        else:
            loadings[lot_id] = float(value)
    if missing:
        shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise RuntimeError(
            f"0018 downgrade: {len(missing)} material lot(s) have no drug loading in their"
            f" attributes: {shown}. The old schema needs one per lot; nothing was changed."
        )
    return loadings


def downgrade() -> None:
    conn = op.get_bind()
    loadings = _loadings(conn)
    op.add_column(
        "material_lots",
        sa.Column("drug_loading", sa.Double(), nullable=False, server_default=sa.text("0")),
    )
    for lot_id, loading in loadings.items():
        conn.execute(LOTS.update().where(LOTS.c.id == lot_id).values(drug_loading=loading))
    op.drop_column("material_lots", "attributes")
