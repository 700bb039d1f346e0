"""stripe note mirrors: what was last written to each Stripe customer's metadata

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import models.types

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_string = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "stripe_note_mirrors",
        sa.Column("stripe_customer_id", _string(length=255), nullable=False),
        sa.Column("account", _string(length=255), nullable=False),
        sa.Column("content_hash", _string(length=64), nullable=True),
        sa.Column("mirrored_at", models.types.UTCDateTime(), nullable=True),
        sa.Column("refused_hash", _string(length=64), nullable=True),
        sa.Column("checked_through", models.types.UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("attempted_at", models.types.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("stripe_customer_id"),
    )


def downgrade() -> None:
    op.drop_table("stripe_note_mirrors")
