"""How the event log stands right now: what `/metrics` and `doctor` report about processing.

Events are processed in the worker processes, often on other machines, and the database is the one
place that sees every one of them. Reading it when asked is exact, survives restarts of any process,
and needs neither a directory shared between processes (prometheus_client's multiprocess mode) nor an
extra write per event.

The log is kept forever, so nothing here reads the whole table: open events (received, processing,
failed, dead) are found through the (status, received_at) index, finished ones only within RECENT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, func
from sqlmodel import col, select

from models import Database, Event, EventStatus
from models.types import utcnow

RECENT = timedelta(hours=1)  # the metrics' names say "last_hour"
OPEN_STATUSES = (EventStatus.RECEIVED, EventStatus.PROCESSING, EventStatus.FAILED, EventStatus.DEAD)
SETTLED_STATUSES = (EventStatus.DONE, EventStatus.IGNORED)  # nothing left to do: counted only in RECENT
# Still to be applied: the oldest of these says how far behind processing is. (`dead` waits for a
# person, not for a worker, and is counted on its own.)
UNPROCESSED_STATUSES = (EventStatus.RECEIVED, EventStatus.PROCESSING, EventStatus.FAILED)
# The delay sample is the newest events only, so a flood cannot make one scrape slow.
DELAY_SAMPLE_LIMIT = 10_000


@dataclass
class EventLogStats:
    open: dict[tuple[str, str], int] = field(default_factory=dict)  # (status, type): every open event
    recent: dict[tuple[str, str], int] = field(default_factory=dict)  # (status, type): received in RECENT
    oldest_unprocessed_age: float = 0.0  # seconds; 0 when nothing is waiting
    delays: list[float] = field(default_factory=list)  # sorted; received -> done, events received in RECENT

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile of `delays`; None when no event finished recently."""
        if not self.delays:
            return None
        return self.delays[max(0, math.ceil(q * len(self.delays)) - 1)]


def read_stats(db: Database, now: datetime | None = None) -> EventLogStats:
    now = now or utcnow()
    since = now - RECENT
    # Two index range scans rather than one query with an OR, which SQLite answers with a full scan.
    open_events = (
        select(
            Event.status,
            Event.type,
            func.count(),
            func.sum(case((Event.received_at >= since, 1), else_=0)),
            func.min(Event.received_at),
        )
        .where(col(Event.status).in_(OPEN_STATUSES))
        .group_by(Event.status, Event.type)
    )
    settled_recently = (
        select(Event.status, Event.type, func.count())
        .where(col(Event.status).in_(SETTLED_STATUSES), Event.received_at >= since)
        .group_by(Event.status, Event.type)
    )
    delays = (
        select(Event.received_at, Event.processed_at)
        .where(Event.status == EventStatus.DONE, Event.received_at >= since)
        .order_by(col(Event.received_at).desc())
        .limit(DELAY_SAMPLE_LIMIT)
    )
    stats = EventLogStats()
    oldest: datetime | None = None
    with db.session() as session:
        for status, event_type, total, recent, first in session.exec(open_events):
            stats.open[(status, event_type)] = total
            if recent:
                stats.recent[(status, event_type)] = int(recent)
            if status in UNPROCESSED_STATUSES and (oldest is None or first < oldest):
                oldest = first
        for status, event_type, count in session.exec(settled_recently):
            stats.recent[(status, event_type)] = count
        stats.delays = sorted(
            max(0.0, (processed - received).total_seconds())
            for received, processed in session.exec(delays)
            if processed is not None
        )
    if oldest is not None:
        stats.oldest_unprocessed_age = max(0.0, (now - oldest).total_seconds())
    return stats
