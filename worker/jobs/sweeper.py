"""Re-enqueue events whose queue message was lost.

The receiver commits before it enqueues, so a Redis outage or a crash between the two leaves a row
`received` with no message. The sweeper finds such rows and enqueues them again. A second message for
an event is harmless (the actor skips finished events and handlers are idempotent), but to avoid
flooding a busy queue it only looks at young `received` rows when the queue is empty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, or_
from sqlmodel import select

from models import Database, Event, EventStatus
from models.types import utcnow
from worker.receiver.intake import Enqueue
from worker.settings import Settings

log = logging.getLogger(__name__)

BATCH = 500


@dataclass
class SweepResult:
    enqueued: dict[str, int] = field(default_factory=dict)
    errors: int = 0

    @property
    def total(self) -> int:
        return sum(self.enqueued.values())


def _stranded(settings: Settings, now: datetime, queue_is_empty: bool):
    # With messages still waiting, a young `received` row is most likely just behind them.
    received_grace = (
        settings.sweep_received_grace_seconds if queue_is_empty else settings.sweep_processing_stale_seconds
    )
    return or_(
        and_(
            Event.status == EventStatus.RECEIVED, Event.received_at < now - timedelta(seconds=received_grace)
        ),
        and_(
            Event.status == EventStatus.PROCESSING,
            Event.updated_at < now - timedelta(seconds=settings.sweep_processing_stale_seconds),
        ),
        and_(
            Event.status == EventStatus.FAILED,
            Event.updated_at < now - timedelta(seconds=settings.sweep_failed_stale_seconds),
        ),
    )


def sweep(
    db: Database, enqueue: Enqueue, settings: Settings, *, queue_depth: int, now: datetime | None = None
) -> SweepResult:
    """Enqueue every stranded event once; returns how many, by status."""
    now = now or utcnow()
    result = SweepResult()
    condition = _stranded(settings, now, queue_is_empty=queue_depth == 0)
    last_key: tuple[datetime, str, str] | None = None
    while True:
        query = select(Event.received_at, Event.id, Event.account, Event.status).where(condition)
        if last_key is not None:
            received_at, event_id, account = last_key
            query = query.where(
                or_(
                    Event.received_at > received_at,
                    and_(Event.received_at == received_at, Event.id > event_id),
                    and_(Event.received_at == received_at, Event.id == event_id, Event.account > account),
                )
            )
        query = query.order_by(Event.received_at, Event.id, Event.account).limit(BATCH)
        with db.session() as session:
            rows = session.exec(query).all()
        for _received_at, event_id, account, status in rows:
            try:
                enqueue(event_id, account)
            except Exception as exc:
                # Redis is still down: stop, the next sweep tries again.
                log.warning("sweep could not enqueue (%s); will retry next sweep", type(exc).__name__)
                result.errors += 1
                return result
            result.enqueued[status] = result.enqueued.get(status, 0) + 1
        if len(rows) < BATCH:
            return result
        last_key = (rows[-1][0], rows[-1][1], rows[-1][2])
