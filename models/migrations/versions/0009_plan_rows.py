"""plan rows: the dashboard's materialized plans

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Created empty; `python -m worker sales rebuild` fills it (with sales_rows), and every customer refresh
keeps it current afterwards.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import models.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_string = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "plan_rows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", _string(length=255), nullable=False),
        sa.Column("subscription_id", _string(length=255), nullable=False),
        sa.Column("customer_email", _string(length=320), nullable=True),
        sa.Column("product", _string(length=1000), nullable=True),
        sa.Column("funnel_purchase_id", _string(length=255), nullable=True),
        sa.Column("kind", _string(length=16), nullable=False),
        sa.Column("installments_paid", sa.Integer(), nullable=False),
        sa.Column("installments_total", sa.Integer(), nullable=True),
        sa.Column("failed_payments", sa.Integer(), nullable=False),
        sa.Column("status", _string(length=16), nullable=False),
        sa.Column("next_payment_attempt", models.types.UTCDateTime(), nullable=True),
        sa.Column("access_ends_at", models.types.UTCDateTime(), nullable=True),
        sa.Column("canceled_at", models.types.UTCDateTime(), nullable=True),
        sa.Column("unpaid_invoices", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_plan_rows_status_customer_email", "plan_rows", ["status", "customer_email"])
    op.create_index("ix_plan_rows_customer_email", "plan_rows", ["customer_email"])
    op.create_index("ix_plan_rows_subscription_id", "plan_rows", ["subscription_id"])


def downgrade() -> None:
    op.drop_index("ix_plan_rows_subscription_id", table_name="plan_rows")
    op.drop_index("ix_plan_rows_customer_email", table_name="plan_rows")
    op.drop_index("ix_plan_rows_status_customer_email", table_name="plan_rows")
    op.drop_table("plan_rows")
