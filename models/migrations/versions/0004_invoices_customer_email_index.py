"""index invoices by customer email

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

The sales view for one customer starts from their invoices; without this index every customer refresh
(one per refund the nightly run finds) scanned the whole table.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index("ix_invoices_customer_email", ["customer_email"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_invoices_customer_email")
