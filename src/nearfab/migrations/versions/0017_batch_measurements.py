"""batch records: the family's measurement document instead of per-unit mass columns

Family kit (issue 15), part owned by production: fill upgrade()/downgrade(); a no-op until then.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from collections.abc import Sequence

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
