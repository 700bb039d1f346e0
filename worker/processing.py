"""Running one stored event through its handler: the body of the `process_event` actor and of replay.

Two short transactions: the first claims the event (status `processing`, one more attempt) so on-call
staff can see it is being worked on; the second runs the handler and marks the event done, so the
handler's writes and the `done` mark commit together or not at all. A failure is recorded in a third
transaction and re-raised for Dramatiq to retry; after the last attempt the event is `dead` and stays
so in the database (Dramatiq's own dead-letter set expires after 7 days).
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import bindparam, select, update

from handlers import FetchContext, HandlerContext, UnprocessableEvent, handler_for
from handlers.context import StripeLookup
from models import FINISHED_STATUSES, Database, Event, EventStatus
from models.db import execute
from models.types import utcnow
from worker.logs import redact

log = logging.getLogger(__name__)


# Raised by a handler reading a payload of the wrong shape (a list where an object belongs, a number
# out of range, text no database takes): the same payload fails the same way every time, so the event
# is dead at once, with the error, rather than retried for an hour. Replay re-runs it after a fix.
PAYLOAD_SHAPE_ERRORS = (TypeError, AttributeError, KeyError, ValueError, OverflowError)


class EventGaveUp(Exception):
    """The event is now `dead`: out of attempts or unprocessable. Dramatiq must not retry it."""


class EventNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Outcome:
    event_id: str
    account: str
    type: str
    status: str
    attempts: int
    skipped: bool = False


def process_event(
    db: Database,
    event_id: str,
    account: str = "",
    *,
    max_attempts: int,
    force: bool = False,
    stripe: Callable[[], StripeLookup | None] = lambda: None,
    on_alerts: Callable[[list[int]], None] = lambda ids: None,
) -> Outcome:
    """Apply a stored event. Without `force`, an event that is already finished is left alone.

    `stripe` gives the Stripe reader for handlers that must fetch what a payload lacks (None when no
    API key is configured); it is only called when a handler needs it. `on_alerts` receives the ids of
    alerts the event raised, after they are committed.

    """
    key = {"event_id": event_id, "event_account": account}
    with db.session() as session:
        claimed = execute(session, _CLAIM if force else _CLAIM_UNFINISHED, {**key, "now": utcnow()}).first()
        if claimed is None:
            stored = execute(session, _STATUS, key).first()
            if stored is None:
                raise EventNotFound(f"event {event_id} is not in the event log")
            return Outcome(event_id, account, stored.type, stored.status, stored.attempts, skipped=True)
        attempt, event_type, payload = claimed

    context = {"event_id": event_id, "event_type": event_type, "account": account, "attempt": attempt}
    handler = handler_for(event_type)
    try:
        document = json.loads(payload)
        fetched = None
        if handler is not None and handler.fetch is not None:
            fetched = handler.fetch(
                FetchContext(event=document, account=account, session_factory=db.session, stripe=stripe())
            )
        handler_context = None
        with db.session() as session:
            if handler is not None:
                handler_context = HandlerContext(
                    event=document, account=account, session=session, fetched=fetched
                )
                handler.apply(handler_context)
            status = EventStatus.DONE if handler is not None else EventStatus.IGNORED
            execute(session, _FINISH, {**key, "new_status": status, "now": utcnow()})
    except Exception as exc:
        if isinstance(exc, PAYLOAD_SHAPE_ERRORS) and not isinstance(exc, UnprocessableEvent):
            shape_error = exc
            exc = UnprocessableEvent(f"payload of an unexpected shape ({type(exc).__name__}: {exc})")
            exc.__cause__ = shape_error
        gave_up = isinstance(exc, UnprocessableEvent) or attempt >= max_attempts

        _record_failure(db, key, exc, dead=gave_up)
        log.warning("event failed: %s", redact(f"{type(exc).__name__}: {exc}"), extra=context)
        if gave_up:
            raise EventGaveUp(f"event {event_id} is dead after {attempt} attempt(s)") from exc
        raise
    log.info("event %s", status, extra=context)
    if handler_context is not None and handler_context.new_alert_ids:
        _hand_over(on_alerts, handler_context.new_alert_ids)
    return Outcome(event_id, account, event_type, status, attempt)


def _hand_over(on_alerts: Callable[[list[int]], None], alert_ids: list[int]) -> None:
    """Pass committed alerts to the sink; if that fails, the clock's delivery sweep sends them later."""
    try:
        on_alerts(alert_ids)
    except Exception as exc:
        log.warning("alerts %s stored but not handed to the sink (%s)", alert_ids, type(exc).__name__)


def _record_failure(db: Database, key: dict[str, str], exc: Exception, *, dead: bool) -> None:
    try:
        with db.session() as session:
            execute(
                session,
                _FAIL,
                {
                    **key,
                    "new_status": EventStatus.DEAD if dead else EventStatus.FAILED,
                    "error": redact(f"{type(exc).__name__}: {exc}")[:2000],
                    "trace": redact("".join(traceback.format_exception(exc)))[-20000:],
                    "now": utcnow(),
                },
            )
    except Exception:
        # The database itself is failing; Dramatiq's retry (or the sweeper) will come back to it.
        log.exception("could not record the failure of event %s", key["event_id"])


# The event row's statements, built once. Claiming is one UPDATE ... RETURNING: it checks the status,
# counts the attempt and reads the payload in a single round trip.
_EVENTS = Event.__table__
_THIS_EVENT = (_EVENTS.c.id == bindparam("event_id")) & (_EVENTS.c.account == bindparam("event_account"))
_CLAIM = (
    update(_EVENTS)
    .where(_THIS_EVENT)
    .values(status=EventStatus.PROCESSING, attempts=_EVENTS.c.attempts + 1, updated_at=bindparam("now"))
    .returning(_EVENTS.c.attempts, _EVENTS.c.type, _EVENTS.c.payload)
)
_CLAIM_UNFINISHED = _CLAIM.where(_EVENTS.c.status.not_in(FINISHED_STATUSES))
_STATUS = select(_EVENTS.c.type, _EVENTS.c.status, _EVENTS.c.attempts).where(_THIS_EVENT)
_FINISH = (
    update(_EVENTS)
    .where(_THIS_EVENT)
    .values(
        status=bindparam("new_status"),
        processed_at=bindparam("now"),
        updated_at=bindparam("now"),
        last_error=None,
        last_traceback=None,
    )
)
_FAIL = (
    update(_EVENTS)
    .where(_THIS_EVENT)
    .values(
        status=bindparam("new_status"),
        last_error=bindparam("error"),
        last_traceback=bindparam("trace"),
        updated_at=bindparam("now"),
    )
)
