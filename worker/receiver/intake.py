"""Turning an accepted request into an event-log entry (Stripe events and funnel purchases)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from handlers import handler_for
from handlers.funnel import FunnelPayloadError, funnel_event_id, funnel_event_type, purchase_rows
from models import Database, Event, EventStatus, insert_ignore
from models.types import from_unix, utcnow
from worker.receiver.stripe_events import (
    NotAStripeEvent,
    ParsedEvent,
    check_storable,
    decode_body,
    parse_json,
)

Enqueue = Callable[[str, str], None]


def initial_status(event_type: str) -> EventStatus:
    """`received` when a handler will apply it; `ignored` (kept, answered 200, never enqueued) otherwise."""
    return EventStatus.RECEIVED if handler_for(event_type) is not None else EventStatus.IGNORED


def store_event(db: Database, event: ParsedEvent, raw_payload: str) -> tuple[bool, str]:
    """Insert the event row (a duplicate id is a no-op); return (whether it was new, its status).

    The receiver stores through `worker.receiver.event_writer` (batched); this is for replay and tests.
    """
    status = initial_status(event.type)
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


def funnel_event(body: bytes) -> tuple[ParsedEvent, str]:
    """A ClickFunnels purchase webhook as an event-log entry; FunnelPayloadError when it is malformed.

    The purchase is validated here, so a malformed one is refused with a 400 and never stored. It is
    stored wrapped in an event envelope so the actors, `events` and `replay` treat it like any other.
    """
    try:
        text = decode_body(body)
        payload = parse_json(text)  # strict: NaN, Infinity and out-of-range numbers are refused
        check_storable(text, payload, allow_nul=True)  # purchase_rows strips control characters

    except NotAStripeEvent as exc:
        raise FunnelPayloadError(str(exc)) from exc
    except (ValueError, RecursionError) as exc:
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
    try:
        return event, json.dumps(envelope)
    except RecursionError as exc:
        # The envelope adds three levels: a body just under the parser's limit would otherwise be a 500.
        raise FunnelPayloadError("body is nested too deeply") from exc
