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
