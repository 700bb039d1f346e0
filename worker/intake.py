"""Storing an accepted event and handing it to the queue: the receiver's one piece of real work."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from handlers import handler_for
from handlers.funnel import FunnelPayloadError, funnel_event_id, funnel_event_type, purchase_rows
from models import Database, Event, EventStatus, insert_ignore
from models.types import from_unix, utcnow
from worker.stripe_events import ParsedEvent

log = logging.getLogger(__name__)

Enqueue = Callable[[str, str], None]


def store_event(db: Database, event: ParsedEvent, raw_payload: str) -> tuple[bool, str]:
    """Insert the event row (a duplicate id is a no-op); return (whether it was new, its status)."""
    status = EventStatus.RECEIVED if handler_for(event.type) is not None else EventStatus.IGNORED
    now = utcnow()
    with db.session() as session:
        new = insert_ignore(
            session,
            Event,
            {
                "id": event.id,
                "account": event.account,
                "type": event.type,
                "api_version": event.api_version,
                "livemode": event.livemode,
                "created": from_unix(event.created),
                "payload": raw_payload,
                "status": status,
                "attempts": 0,
                "received_at": now,
                "updated_at": now,
            },
        )
    return new, status


def accept_event(db: Database, enqueue: Enqueue, event: ParsedEvent, raw_payload: str) -> tuple[bool, bool]:
    """Store, commit, then enqueue by id. Returns (new, enqueued).

    A failed enqueue is logged, not raised: the row is committed, so Stripe gets its 200 and the
    sweeper enqueues the event once Redis is back.
    """
    new, status = store_event(db, event, raw_payload)
    if not new or status != EventStatus.RECEIVED:
        return new, False
    try:
        enqueue(event.id, event.account)
    except Exception as exc:
        log.warning(
            "event stored but not enqueued (%s); the sweeper will enqueue it",
            type(exc).__name__,
            extra={"event_id": event.id, "event_type": event.type},
        )
        return new, False
    return new, True


def funnel_event(body: bytes) -> tuple[ParsedEvent, str]:
    """A ClickFunnels purchase webhook as an event-log entry; FunnelPayloadError when it is malformed.

    The purchase is validated here, so a malformed one is refused with a 400 and never stored. It is
    stored wrapped in an event envelope so the actors, `events` and `replay` treat it like any other.
    """
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FunnelPayloadError("body is not valid JSON") from exc
    purchase_rows(payload)
    event = ParsedEvent(
        id=funnel_event_id(body),
        account="",
        type=funnel_event_type(payload),
        api_version=None,
        livemode=False,
        created=int(time.time()),
        data={"object": payload},
    )
    envelope = {
        "id": event.id,
        "object": "event",
        "source": "clickfunnels",
        "type": event.type,
        "created": event.created,
        "data": event.data,
    }
    return event, json.dumps(envelope)
