"""Reading the event log for on-call staff: filters, and the JSON shape the CLI prints."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import col, select

from models import Database, Event
from models.types import iso


def find_events(
    db: Database,
    *,
    statuses: Sequence[str] = (),
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[Event]:
    """Events by received time, oldest first (`events` lists newest first); `since` inclusive,
    `until` exclusive. `limit` keeps the first ones in that order."""
    query = select(Event)
    if statuses:
        query = query.where(col(Event.status).in_(list(statuses)))
    if event_type:
        query = query.where(Event.type == event_type)
    if since:
        query = query.where(Event.received_at >= since)
    if until:
        query = query.where(Event.received_at < until)
    if newest_first:
        query = query.order_by(col(Event.received_at).desc(), col(Event.id).desc())
    else:
        query = query.order_by(Event.received_at, Event.id)
    if limit:
        query = query.limit(limit)
    with db.session() as session:
        return list(session.exec(query).all())


def find_by_id(db: Database, event_id: str) -> list[Event]:
    """Every row with this id (one per Connect account that sent it)."""
    with db.session() as session:
        return list(session.exec(select(Event).where(Event.id == event_id)).all())


def event_summary(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "account": event.account or None,
        "type": event.type,
        "status": event.status,
        "attempts": event.attempts,
        "api_version": event.api_version,
        "livemode": event.livemode,
        "created": iso(event.created),
        "received_at": iso(event.received_at),
        "processed_at": iso(event.processed_at),
        "last_error": event.last_error,
    }


def event_detail(event: Event) -> dict[str, Any]:
    detail = event_summary(event)
    detail["updated_at"] = iso(event.updated_at)
    detail["last_traceback"] = event.last_traceback
    detail["payload"] = json.loads(event.payload)
    return detail
