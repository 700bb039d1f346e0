"""What the complete sales view is built from: funnel purchases, and Stripe's invoices and invoice payments.

Facts are stored as they arrive, each keyed by its own id; the links between them (which invoice a
charge paid, which funnel purchase a payment belongs to, which installment it was) are derived when
the view is read. So events that arrive out of order, or twice, cannot leave a wrong link behind.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, Text
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class FunnelPurchase(SQLModel, table=True):
    """One product of one ClickFunnels purchase, from its webhook or a sales export."""

    __tablename__ = "funnel_purchases"
    __table_args__ = (
        Index("ix_funnel_purchases_subscription_id", "subscription_id"),
        Index("ix_funnel_purchases_charge_id", "charge_id"),
        Index("ix_funnel_purchases_customer_email", "customer_email"),
    )

    purchase_id: str = Field(primary_key=True, max_length=255)
    product_key: str = Field(primary_key=True, max_length=255)  # funnel product id, or its name
    product_name: str = Field(max_length=500)
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))  # minor units
    currency: str = Field(max_length=3)
    customer_email: str | None = Field(default=None, max_length=320)
    customer_name: str | None = Field(default=None, max_length=500)
    stripe_plan: str | None = Field(default=None, max_length=255)
    # N for a payment plan of N payments; None for one-time purchases and open-ended subscriptions.
    installments_total: int | None = None
    is_subscription: bool = False
    subscription_id: str | None = Field(default=None, max_length=255)
    charge_id: str | None = Field(default=None, max_length=255)  # a ch_ or a pi_, as the funnel stores it
    status: str | None = Field(default=None, max_length=64)
    purchased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    origin: str = Field(default="webhook", max_length=16)  # webhook | import
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Invoice(SQLModel, table=True):
    __tablename__ = "invoices"
    __table_args__ = (
        Index("ix_invoices_subscription_id", "subscription_id"),
        Index("ix_invoices_charge_id", "charge_id"),
        Index("ix_invoices_payment_intent_id", "payment_intent_id"),
        # The sales view for one customer starts here; without it every refresh scanned the table.
        Index("ix_invoices_customer_email", "customer_email"),
    )

    id: str = Field(primary_key=True, max_length=255)
    account: str = Field(default="", max_length=255)
    subscription_id: str | None = Field(default=None, max_length=255)
    customer: str | None = Field(default=None, max_length=255)
    customer_email: str | None = Field(default=None, max_length=320)
    billing_reason: str | None = Field(default=None, max_length=64)
    status: str | None = Field(default=None, max_length=32)
    amount_paid: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    # What the invoice asks for: a failed installment's amount (nothing was paid yet).
    amount_due: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    currency: str = Field(max_length=3)
    product: str | None = Field(default=None, sa_column=Column(Text))
    # Failed payments: how many attempts were made, and when Stripe tries again (None: no more tries).
    attempt_count: int = 0
    next_payment_attempt: datetime | None = Field(default=None, sa_type=UTCDateTime)
    price_id: str | None = Field(default=None, max_length=255)
    # Only in payloads before API version 2025-03-31; later ones link through invoice payments.
    charge_id: str | None = Field(default=None, max_length=255)
    payment_intent_id: str | None = Field(default=None, max_length=255)
    paid_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created: datetime | None = Field(default=None, sa_type=UTCDateTime)
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class InvoicePayment(SQLModel, table=True):
    """The link from an invoice to the payment that paid it (API versions from 2025-03-31 on)."""

    __tablename__ = "invoice_payments"
    __table_args__ = (
        Index("ix_invoice_payments_invoice_id", "invoice_id"),
        Index("ix_invoice_payments_payment_intent_id", "payment_intent_id"),
        Index("ix_invoice_payments_charge_id", "charge_id"),
    )

    id: str = Field(primary_key=True, max_length=255)
    invoice_id: str = Field(max_length=255)
    payment_intent_id: str | None = Field(default=None, max_length=255)
    charge_id: str | None = Field(default=None, max_length=255)
    amount_paid: int | None = Field(default=None, sa_column=Column(BigInteger))
    currency: str | None = Field(default=None, max_length=3)
    status: str | None = Field(default=None, max_length=32)
    paid_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Subscription(SQLModel, table=True):
    """A Stripe subscription as its last `customer.subscription.*` event (or the nightly run) showed it.

    A ClickFunnels payment plan is a subscription the funnel cancels after N paid invoices; whether a
    cancellation completed a plan or ended it early is decided from its paid invoices (handlers.plans).
    """

    __tablename__ = "subscriptions"
    __table_args__ = (Index("ix_subscriptions_customer", "customer"),)

    id: str = Field(primary_key=True, max_length=255)
    account: str = Field(default="", max_length=255)
    customer: str | None = Field(default=None, max_length=255)
    status: str = Field(max_length=32)  # active | past_due | unpaid | canceled | incomplete | trialing ...
    cancel_at_period_end: bool = False
    canceled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # End of the period paid for: `current_period_end` before 2025-03-31, per item from basil on.
    current_period_end: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancellation_reason: str | None = Field(default=None, max_length=64)
    created: datetime | None = Field(default=None, sa_type=UTCDateTime)
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
