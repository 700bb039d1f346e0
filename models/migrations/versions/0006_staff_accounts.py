"""staff accounts, audit log and failed sign-ins (the dashboard)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import models.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_string = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "staff_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", _string(length=320), nullable=False),
        sa.Column("role", _string(length=16), nullable=False),
        sa.Column("password_hash", _string(length=200), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("language", _string(length=8), nullable=True),
        sa.Column("failed_sign_ins", sa.Integer(), nullable=False),
        sa.Column("locked_until", models.types.UTCDateTime(), nullable=True),
        sa.Column("session_version", sa.Integer(), nullable=False),
        sa.Column("created_at", models.types.UTCDateTime(), nullable=False),
        sa.Column("last_sign_in_at", models.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", models.types.UTCDateTime(), nullable=False),
        sa.Column("actor", _string(length=320), nullable=False),
        sa.Column("action", _string(length=40), nullable=False),
        sa.Column("target", _string(length=320), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("client_address", _string(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"], unique=False)
    op.create_table(
        "sign_in_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_address", _string(length=64), nullable=False),
        sa.Column("at", models.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_sign_in_failures_address_at", "sign_in_failures", ["client_address", "at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_sign_in_failures_address_at", table_name="sign_in_failures")
    op.drop_table("sign_in_failures")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("staff_users")
