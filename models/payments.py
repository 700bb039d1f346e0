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
