"""The event log: one row per Stripe event, kept forever as the audit trail on-call staff replay from."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class EventStatus(StrEnum):
    RECEIVED = "received"  # stored by the receiver, not yet picked up
    PROCESSING = "processing"  # an actor has started on it
    DONE = "done"  # its handler ran and committed
    IGNORED = "ignored"  # no handler for its type; kept so it can be replayed after an upgrade
    FAILED = "failed"  # the last attempt raised; another attempt is scheduled
    DEAD = "dead"  # out of attempts, or unprocessable; needs a person (see `worker replay --failed`)


# Statuses that mean "nothing more will happen unless someone replays it".
FINISHED_STATUSES = (EventStatus.DONE, EventStatus.IGNORED, EventStatus.DEAD)


class Event(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_status_received_at", "status", "received_at"),
        Index("ix_events_type_received_at", "type", "received_at"),
        Index("ix_events_received_at", "received_at"),
    )

    id: str = Field(primary_key=True, max_length=255)
    # Connect platforms receive the same kind of event for many accounts; "" is the platform's own.
    account: str = Field(default="", primary_key=True, max_length=255)
    type: str = Field(max_length=255)
    api_version: str | None = Field(default=None, max_length=64)
    livemode: bool = False
    created: datetime | None = Field(default=None, sa_type=UTCDateTime)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default=EventStatus.RECEIVED, max_length=16)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    last_traceback: str | None = Field(default=None, sa_column=Column(Text))
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    processed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
