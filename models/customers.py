"""Customer records: one per normalised email, with their refund notes, access alerts and access ends.

ClickFunnels 1.0 can create a new Stripe customer for every order, so a person is their email, and
every `cus_` id seen for it is linked here. Notes and alerts are keyed by what caused them (a refund
id, a dispute id), so the several events one refund fires give one note and at most one alert.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class Customer(SQLModel, table=True):
    __tablename__ = "customers"

    email: str = Field(primary_key=True, max_length=320)
    name: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CustomerStripeId(SQLModel, table=True):
    __tablename__ = "customer_stripe_ids"

    stripe_customer_id: str = Field(primary_key=True, max_length=255)
    email: str = Field(max_length=320, index=True)
    first_seen_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CustomerNote(SQLModel, table=True):
    """A note on a customer's record. Never deleted; a refund's note is updated as its status changes."""

    __tablename__ = "customer_notes"
    __table_args__ = (Index("ix_customer_notes_email_created_at", "email", "created_at"),)

    key: str = Field(primary_key=True, max_length=300)  # "refund:re_...", "subscription_end:sub_..."
    email: str = Field(max_length=320)
    kind: str = Field(max_length=32)  # refund | subscription_end
    refund_id: str | None = Field(default=None, max_length=255)
    charge_id: str | None = Field(default=None, max_length=255)
    amount: int | None = Field(default=None, sa_column=Column(BigInteger))
    currency: str | None = Field(default=None, max_length=3)
    status: str | None = Field(default=None, max_length=32)
    text: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Alert(SQLModel, table=True):
    """Something on-call staff must act on; delivered to the alert sink, kept here until resolved."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("key", name="uq_alerts_key"),
        Index("ix_alerts_status_created_at", "status", "created_at"),
        Index("ix_alerts_delivery_status", "delivery_status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=300)  # "access_revocation:re_...", "dispute:dp_..."
    kind: str = Field(max_length=32)  # access_revocation | dispute | payment_failed
    status: str = Field(default="open", max_length=16)  # open | acknowledged | resolved
    customer_email: str | None = Field(default=None, max_length=320)
    product: str | None = Field(default=None, max_length=500)
    refund_id: str | None = Field(default=None, max_length=255)
    charge_id: str | None = Field(default=None, max_length=255)
    kept_charge_id: str | None = Field(default=None, max_length=255)
    amount: int | None = Field(default=None, sa_column=Column(BigInteger))
    currency: str | None = Field(default=None, max_length=3)
    message: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # What the alert's subject last was (a dispute's status, a failed invoice's status): a change of it
    # is news worth sending again; filling in a fact that arrived late is not.
    state: str | None = Field(default=None, max_length=32)
    # When what the alert says last changed (a fact that arrived later, a dispute's new status).
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    acknowledged_by: str | None = Field(default=None, max_length=200)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolved_by: str | None = Field(default=None, max_length=200)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolution_note: str | None = Field(default=None, sa_column=Column(Text))
    # Delivery to ALERT_WEBHOOK_URL: pending | sending | sent | not_configured
    delivery_status: str = Field(default="pending", max_length=16)
    delivery_attempts: int = 0
    last_delivery_error: str | None = Field(default=None, sa_column=Column(Text))
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # when a deliverer took it
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class SubscriptionEnd(SQLModel, table=True):
    """When access should end after a subscription was cancelled (the platform's documented rule)."""

    __tablename__ = "subscription_ends"

    subscription_id: str = Field(primary_key=True, max_length=255)
    customer_email: str | None = Field(default=None, max_length=320, index=True)
    stripe_customer_id: str | None = Field(default=None, max_length=255)
    canceled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    access_ends_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    rule: str = Field(max_length=32)  # immediately_unpaid | end_of_paid_period | plan_completed
    unpaid_invoices: int = 0
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
