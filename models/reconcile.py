"""Nightly reconciliation runs: their window, progress (to resume) and report."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class ReconcileRun(SQLModel, table=True):
    __tablename__ = "reconcile_runs"
    __table_args__ = (Index("ix_reconcile_runs_status_window_end", "status", "window_end"),)

    id: int | None = Field(default=None, primary_key=True)
    window_start: datetime = Field(sa_type=UTCDateTime)
    window_end: datetime = Field(sa_type=UTCDateTime)
    status: str = Field(default="running", max_length=16)  # running | done | failed
    # JSON: per listed resource, the last object id reached, so a crashed run resumes from there.
    cursors: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    # JSON: counts so far (seen, added, already_present, missed_webhooks, api_calls).
    counts: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    report: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ReconcilePending(SQLModel, table=True):
    """What a run's pages changed and whose customers it has not refreshed yet.

    A run stores its pages first and refreshes each customer they concern once, at the end
    (handlers/reconcile.py): refreshing after every page re-read and rebuilt a customer's whole
    history once per page that touched it, about three times a customer. The set is kept here, in
    the same transaction as the page that adds to it, so a run that dies still refreshes them when it
    resumes, and memory stays flat however many customers a run concerns.

    kind: `charge`, `subscription` or `dispute` (an id whose customers are still to be found),
    `email` (a customer to refresh), or `unowned` (key ""; the rows of payments nobody owns are to be
    rebuilt).
    """

    __tablename__ = "reconcile_pending"

    kind: str = Field(primary_key=True, max_length=16)
    key: str = Field(primary_key=True, max_length=320)
