"""The sales view, materialized: one row per `handlers.sales_view.SaleRow`, for the dashboard's Sales page.

The view itself is derived from the stored facts (handlers/sales_view.py); this table is a copy of it
kept current by `handlers.sales_rows` (each customer refresh replaces that customer's rows; `python -m
worker sales rebuild` rebuilds it all), so a page of 50 sales out of 100,000 is an indexed query rather
than building the whole view in Python.

`position` is the view's own time order as one sortable string: rows with a time first (by time, then
by payment id), rows without one last; `ORDER BY position, id` is the order `SalesFacts.view()` gives.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime


class SalesRowRecord(SQLModel, table=True):
    __tablename__ = "sales_rows"
    __table_args__ = (
        Index("ix_sales_rows_paid_at", "paid_at"),
        Index("ix_sales_rows_position", "position", "id"),
        Index("ix_sales_rows_customer_email_paid_at", "customer_email", "paid_at"),
        # Product first for its filter; the rest make it cover the page's totals (product, currency and
        # the money): summing 100,000 rows reads this index alone, about ten times faster on SQLite.
        Index("ix_sales_rows_product", "product", "currency", "status", "amount", "refunded_amount"),
        Index("ix_sales_rows_status", "status"),
        Index("ix_sales_rows_kind", "kind"),
        Index("ix_sales_rows_currency_paid_at", "currency", "paid_at"),
        # A refresh replaces the rows of the payments it rebuilt (one whose customer became known).
        Index("ix_sales_rows_charge_id", "charge_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account: str = Field(default="", max_length=255)
    position: str = Field(max_length=300)
    charge_id: str | None = Field(default=None, max_length=255)
    payment_intent_id: str | None = Field(default=None, max_length=255)
    customer_email: str | None = Field(default=None, max_length=320)
    product: str | None = Field(default=None, max_length=1000)  # as long as the facts allow
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    paid_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    source: str = Field(max_length=16)  # funnel | stripe
    kind: str = Field(max_length=16)  # one_time | installment | subscription
    installment: int | None = None
    installments_total: int | None = None
    subscription_id: str | None = Field(default=None, max_length=255)
    invoice_id: str | None = Field(default=None, max_length=255)
    refunded_amount: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    funnel_purchase_id: str | None = Field(default=None, max_length=255)
    stripe_customer_id: str | None = Field(default=None, max_length=255)
    found_by: str | None = Field(default=None, max_length=16)  # webhook | reconcile | funnel
    status: str = Field(max_length=32)
    dispute_id: str | None = Field(default=None, max_length=255)
    dispute_status: str | None = Field(default=None, max_length=32)
    failure_message: str | None = Field(default=None, max_length=500)
