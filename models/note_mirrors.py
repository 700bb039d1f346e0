"""What was last written to each Stripe customer's metadata (MIRROR_NOTES_TO_STRIPE).

One row per `cus_` id the clock has looked at. It is how the mirror knows what is already in Stripe
(`content_hash`), which notes it has already seen (`checked_through`), and which idempotency key its
next request uses (`attempts` is part of the key; see handlers/stripe_notes_mirror.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime


class StripeNoteMirror(SQLModel, table=True):
    __tablename__ = "stripe_note_mirrors"

    stripe_customer_id: str = Field(primary_key=True, max_length=255)
    # The Connect account the customer lives in; "": the platform's own.
    account: str = Field(default="", max_length=255)
    # sha256 of the metadata Stripe last accepted; None: nothing written yet.
    content_hash: str | None = Field(default=None, max_length=64)
    mirrored_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # sha256 of a history Stripe refused for this customer (no such customer, 50 keys already): not
    # sent again; a changed history is.
    refused_hash: str | None = Field(default=None, max_length=64)
    # Refund notes updated after this are looked at again (a little before the last look, so a note
    # committed late by a slow transaction is still seen).
    checked_through: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Requests recorded so far (sent and answered, or failed); each one's idempotency key includes it.
    attempts: int = 0
    attempted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
