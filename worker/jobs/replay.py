"""Replaying events on demand: re-running handlers, which never duplicates what they wrote.

Replay runs in the calling process so on-call staff see each result at once. An id that is not in the
local log is fetched from Stripe's Events API (which reaches back 30 days) and stored first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from models import Database, Event
from worker import runtime
from worker.jobs import processing
from worker.ops.eventlog import find_by_id
from worker.ops.logs import redact
from worker.receiver.intake import store_event
from worker.receiver.stripe_events import NotAStripeEvent, event_from_dict

log = logging.getLogger(__name__)

# Fetches one event from Stripe as raw JSON text: (event_id, account) -> str.
FetchEvent = Callable[[str, str], str]


@dataclass
class ReplayResult:
    id: str
    account: str | None
    type: str | None
    status_before: str | None
    status_after: str | None
    fetched_from_stripe: bool = False
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def replay_events(db: Database, events: list[Event], *, max_attempts: int) -> list[ReplayResult]:
    return [
        _run(db, event.id, event.account, event.type, event.status, max_attempts=max_attempts)
        for event in events
    ]


def replay_ids(
    db: Database, event_ids: list[str], *, fetch: FetchEvent | None, account: str = "", max_attempts: int
) -> list[ReplayResult]:
    """Replay each id; ids unknown locally are fetched from Stripe (when `fetch` is given) first."""
    results: list[ReplayResult] = []
    for event_id in event_ids:
        local = [e for e in find_by_id(db, event_id) if not account or e.account == account]
        if local:
            results.extend(replay_events(db, local, max_attempts=max_attempts))
            continue
        results.append(_fetch_and_run(db, event_id, account, fetch, max_attempts=max_attempts))
    return results


def _fetch_and_run(
    db: Database, event_id: str, account: str, fetch: FetchEvent | None, *, max_attempts: int
) -> ReplayResult:
    missing = ReplayResult(event_id, account or None, None, None, None)
    if fetch is None:
        missing.error = "not in the event log, and STRIPE_API_KEY is not set to fetch it from Stripe"
        return missing
    try:
        raw = fetch(event_id, account)
        parsed = event_from_dict(json.loads(raw))
    except NotAStripeEvent as exc:
        missing.error = f"Stripe returned something that is not an event: {exc}"
        return missing
    except Exception as exc:
        missing.error = redact(f"could not fetch from Stripe: {type(exc).__name__}: {exc}")
        return missing
    store_event(db, parsed, raw)
    result = _run(db, parsed.id, parsed.account, parsed.type, None, max_attempts=max_attempts)
    result.fetched_from_stripe = True
    return result


def _run(
    db: Database, event_id: str, account: str, event_type: str, before: str | None, *, max_attempts: int
) -> ReplayResult:
    result = ReplayResult(event_id, account or None, event_type, before, None)
    try:
        outcome = processing.process_event(
            db,
            event_id,
            account,
            max_attempts=max_attempts,
            force=True,
            stripe=runtime.stripe_reader,
            on_alerts=_send_alerts,
        )

        result.status_after = outcome.status
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, processing.EventGaveUp) and exc.__cause__ else exc
        result.error = redact(f"{type(cause).__name__}: {cause}")
        rows = [e for e in find_by_id(db, event_id) if e.account == account]
        result.status_after = rows[0].status if rows else None
    return result


def _send_alerts(alert_ids: list[int]) -> None:
    from worker.jobs.actors import send_alerts

    send_alerts(alert_ids)
