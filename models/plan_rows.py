"""Plans, materialized: one row per `handlers.plans.PlanRow`, for the dashboard's Plans page.

Built by the same refresh that keeps `sales_rows` (handlers/sales_rows.py), from the same facts, so
the page is an indexed query rather than building every customer's plans in Python (seconds at 100k
payments).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime


class PlanRowRecord(SQLModel, table=True):
    __tablename__ = "plan_rows"
    __table_args__ = (
        Index("ix_plan_rows_status_customer_email", "status", "customer_email"),
        Index("ix_plan_rows_customer_email", "customer_email"),
        Index("ix_plan_rows_subscription_id", "subscription_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account: str = Field(default="", max_length=255)
    subscription_id: str = Field(max_length=255)
    customer_email: str | None = Field(default=None, max_length=320)
    product: str | None = Field(default=None, max_length=1000)
    funnel_purchase_id: str | None = Field(default=None, max_length=255)
    kind: str = Field(max_length=16)  # installment | subscription
    installments_paid: int = 0
    installments_total: int | None = None
    failed_payments: int = 0
    status: str = Field(max_length=16)  # active | past_due | unpaid | completed | cancelled
    next_payment_attempt: datetime | None = Field(default=None, sa_type=UTCDateTime)
    access_ends_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    canceled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    unpaid_invoices: int = 0
