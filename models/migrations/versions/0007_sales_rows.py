"""sales rows: the dashboard's materialized sales view

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

One row per sales-view row (models/sales_rows.py), with the indexes the Sales page filters on. The
upgrade creates the table empty: `python -m worker sales rebuild` fills it from the stored facts (it
can take a while on a large database, so it is not run inside a deploy's migration), and every
customer refresh keeps it current from then on.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import models.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_string = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "sales_rows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", _string(length=255), nullable=False),
        sa.Column("position", _string(length=300), nullable=False),
        sa.Column("charge_id", _string(length=255), nullable=True),
        sa.Column("payment_intent_id", _string(length=255), nullable=True),
        sa.Column("customer_email", _string(length=320), nullable=True),
        sa.Column("product", _string(length=1000), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", _string(length=3), nullable=False),
        sa.Column("paid_at", models.types.UTCDateTime(), nullable=True),
        sa.Column("source", _string(length=16), nullable=False),
        sa.Column("kind", _string(length=16), nullable=False),
        sa.Column("installment", sa.Integer(), nullable=True),
        sa.Column("installments_total", sa.Integer(), nullable=True),
        sa.Column("subscription_id", _string(length=255), nullable=True),
        sa.Column("invoice_id", _string(length=255), nullable=True),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False),
        sa.Column("funnel_purchase_id", _string(length=255), nullable=True),
        sa.Column("stripe_customer_id", _string(length=255), nullable=True),
        sa.Column("found_by", _string(length=16), nullable=True),
        sa.Column("status", _string(length=32), nullable=False),
        sa.Column("dispute_id", _string(length=255), nullable=True),
        sa.Column("dispute_status", _string(length=32), nullable=True),
        sa.Column("failure_message", _string(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sales_rows_paid_at", "sales_rows", ["paid_at"], unique=False)
    op.create_index("ix_sales_rows_position", "sales_rows", ["position", "id"], unique=False)
    op.create_index(
        "ix_sales_rows_customer_email_paid_at", "sales_rows", ["customer_email", "paid_at"], unique=False
    )
    op.create_index(
        "ix_sales_rows_product",
        "sales_rows",
        ["product", "currency", "status", "amount", "refunded_amount"],
        unique=False,
    )
    op.create_index("ix_sales_rows_status", "sales_rows", ["status"], unique=False)
    op.create_index("ix_sales_rows_kind", "sales_rows", ["kind"], unique=False)
    op.create_index("ix_sales_rows_currency_paid_at", "sales_rows", ["currency", "paid_at"], unique=False)
    op.create_index("ix_sales_rows_charge_id", "sales_rows", ["charge_id"], unique=False)


def downgrade() -> None:
    for name in (
        "ix_sales_rows_charge_id",
        "ix_sales_rows_currency_paid_at",
        "ix_sales_rows_kind",
        "ix_sales_rows_status",
        "ix_sales_rows_product",
        "ix_sales_rows_customer_email_paid_at",
        "ix_sales_rows_position",
        "ix_sales_rows_paid_at",
    ):
        op.drop_index(name, table_name="sales_rows")
    op.drop_table("sales_rows")
