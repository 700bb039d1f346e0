"""reconcile pending: the customers a nightly run has stored changes for and not yet refreshed

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

A run now refreshes each customer once, after its pages are stored, instead of after every page; the
set it still has to refresh is kept here so that a run that dies refreshes them when it resumes.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_string = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "reconcile_pending",
        sa.Column("kind", _string(length=16), nullable=False),
        sa.Column("key", _string(length=320), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key"),
    )


def downgrade() -> None:
    op.drop_table("reconcile_pending")
