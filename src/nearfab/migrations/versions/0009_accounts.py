"""accounts: password ageing, lockout, TOTP, sessions, role grants

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    # users: ageing, temporary passwords, lockout, TOTP
    op.add_column("users", _time("password_changed_at", nullable=True))
    op.add_column(
        "users",
        sa.Column("must_change_password", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "users", sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("users", _time("locked_at", nullable=True))
    op.add_column("users", sa.Column("totp_secret", sa.String(length=300), nullable=True))
    op.add_column("users", _time("totp_enabled_at", nullable=True))
    op.add_column("users", sa.Column("totp_last_step", sa.Integer(), nullable=True))
    op.execute("UPDATE users SET password_changed_at = created_at")

    op.create_table(
        "user_sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        _time("created_at"),
        _time("last_used_at"),
        _time("expires_at"),
        sa.Column("pending", sa.String(length=16), nullable=True),
        _time("ended_at", nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        _time("first_signed_at", nullable=True),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_user_sessions_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_user_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_user_sessions_token_hash"),
    )
    op.create_index("ix_user_sessions_user", "user_sessions", ["user_id"])
    # API tokens are sessions now (kind "api"); tokens issued before the upgrade end with it
    op.drop_table("api_tokens")

    op.create_table(
        "password_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        _time("set_at"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_password_history_user_id_users"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_password_history"),
    )
    op.create_index("ix_password_history_user", "password_history", ["user_id"])
    op.execute(
        "INSERT INTO password_history (user_id, password_hash, set_at) "
        "SELECT id, password_hash, created_at FROM users"
    )

    op.create_table(
        "security_alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _time("raised_at"),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_security_alerts"),
    )

    # signatures: the binding hash over the signature's own fields, and how it was given
    op.add_column("signatures", sa.Column("signature_hash", sa.String(length=64), nullable=True))
    op.add_column("signatures", sa.Column("components", sa.String(length=64), nullable=True))
    op.add_column("signatures", sa.Column("session_id", sa.String(length=32), nullable=True))
    _bind_existing_signatures()

    # sites and master files may demand a TOTP code with every e-signature
    for table in ("sites", "master_files"):
        op.add_column(
            table,
            sa.Column("totp_for_signing", sa.Boolean(), nullable=False, server_default=sa.false()),
        )


def _bind_existing_signatures() -> None:
    """Signatures made before this revision get their binding hash now (same function as new
    ones), so that validity checking can require it on every row."""
    from nearfab.identity.services.signatures import signature_hash

    sigs = sa.table(
        "signatures",
        sa.column("id", sa.String()),
        sa.column("signer_id", sa.String()),
        sa.column("signer_name", sa.String()),
        sa.column("meaning", sa.String()),
        sa.column("signed_at", nearfab.db.UTCDateTime(timezone=True)),
        sa.column("record_type", sa.String()),
        sa.column("record_id", sa.String()),
        sa.column("record_hash", sa.String()),
        sa.column("signature_hash", sa.String()),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(sigs)).mappings().all()
    if not rows:
        return
    # signatures are append-only (triggers of 0008): lift them for this one backfill
    triggers = _signature_triggers(conn)
    for name, _ddl in triggers:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text(f'DROP TRIGGER IF EXISTS "{name}" ON signatures'))
        else:
            conn.execute(sa.text(f'DROP TRIGGER IF EXISTS "{name}"'))
    for row in rows:
        conn.execute(
            sigs.update()
            .where(sigs.c.id == row["id"])
            .values(
                signature_hash=signature_hash(
                    signer_id=row["signer_id"],
                    signer_name=row["signer_name"],
                    meaning=row["meaning"],
                    signed_at=row["signed_at"],
                    record_type=row["record_type"],
                    record_id=row["record_id"],
                    record_hash=row["record_hash"],
                )
            )
        )
    for _name, ddl in triggers:
        conn.execute(sa.text(ddl))


def _signature_triggers(conn: sa.Connection) -> list[tuple[str, str]]:
    """(name, CREATE statement) of the triggers on `signatures`, to put them back as they were."""
    if conn.dialect.name == "postgresql":
        found = conn.execute(
            sa.text(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE tgrelid = 'signatures'::regclass AND NOT tgisinternal"
            )
        )
    else:
        found = conn.execute(
            sa.text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name = 'signatures'"
            )
        )
    return [(str(name), str(ddl)) for name, ddl in found]


def downgrade() -> None:
    for table in ("master_files", "sites"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("totp_for_signing")
    with op.batch_alter_table("signatures") as batch:
        batch.drop_column("session_id")
        batch.drop_column("components")
        batch.drop_column("signature_hash")
    op.drop_table("security_alerts")
    op.drop_index("ix_password_history_user", table_name="password_history")
    op.drop_table("password_history")
    op.create_table(
        "api_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        _time("created_at"),
        _time("expires_at"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_api_tokens_user_id_users"),
        sa.PrimaryKeyConstraint("token_hash", name="pk_api_tokens"),
    )
    op.drop_index("ix_user_sessions_user", table_name="user_sessions")
    op.drop_table("user_sessions")
    with op.batch_alter_table("users") as batch:
        for column in (
            "totp_last_step",
            "totp_enabled_at",
            "totp_secret",
            "locked_at",
            "failed_attempts",
            "must_change_password",
            "password_changed_at",
        ):
            batch.drop_column(column)
