"""Charges and refunds as Stripe last described them to us.

Rows are upserted with "newest event wins" (`version` is the `created` time of the event that wrote the
row), so events delivered twice or out of order converge on the same row.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class Charge(SQLModel, table=True):
    __tablename__ = "charges"

    id: str = Field(primary_key=True, max_length=255)
    account: str = Field(default="", max_length=255)
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    amount_refunded: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    status: str = Field(max_length=32)
    paid: bool = False
    refunded: bool = False
    customer: str | None = Field(default=None, max_length=255, index=True)
    payment_intent: str | None = Field(default=None, max_length=255, index=True)
    description: str | None = None
    customer_email: str | None = Field(default=None, max_length=320, index=True)
    # Only in payloads before API version 2025-03-31 (`charge.invoice`); later ones link through
    # invoice payments, which the sales view reads.
    invoice_id: str | None = Field(default=None, max_length=255, index=True)
    # True once Stripe said this payment belongs to no invoice (a one-time sale): later events of the
    # same charge then ask nothing (test mode allows 25 requests a second).
    no_invoice: bool = False
    failure_code: str | None = Field(default=None, max_length=64)
    failure_message: str | None = Field(default=None, max_length=500)
    livemode: bool = False
    created: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # How we first learnt of it: "webhook", or "reconcile" when the nightly run found a charge no
    # webhook had delivered. Never overwritten.
    found_by: str = Field(default="webhook", max_length=16)
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    last_event_id: str | None = Field(default=None, max_length=255)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Refund(SQLModel, table=True):
    __tablename__ = "refunds"

    id: str = Field(primary_key=True, max_length=255)
    account: str = Field(default="", max_length=255)
    charge: str | None = Field(default=None, max_length=255, index=True)
    payment_intent: str | None = Field(default=None, max_length=255)
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    status: str | None = Field(default=None, max_length=32)
    reason: str | None = Field(default=None, max_length=64)
    created: datetime | None = Field(default=None, sa_type=UTCDateTime)
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    last_event_id: str | None = Field(default=None, max_length=255)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Dispute(SQLModel, table=True):
    """A dispute (chargeback or inquiry) as its last `charge.dispute.*` event showed it."""

    __tablename__ = "disputes"

    id: str = Field(primary_key=True, max_length=255)
    account: str = Field(default="", max_length=255)
    charge: str | None = Field(default=None, max_length=255, index=True)
    payment_intent: str | None = Field(default=None, max_length=255)
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    # warning_needs_response | warning_under_review | warning_closed (an inquiry), needs_response |
    # under_review | won | lost | prevented (a chargeback)
    status: str = Field(max_length=32)
    reason: str | None = Field(default=None, max_length=64)
    due_by: datetime | None = Field(default=None, sa_type=UTCDateTime)
    is_charge_refundable: bool = False
    created: datetime | None = Field(default=None, sa_type=UTCDateTime)
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
