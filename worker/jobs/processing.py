"""Running one stored event through its handler: the body of the `process_event` actor and of replay.

Claiming an event marks it `processing` and counts the attempt. The handler's writes and the `done`
mark always commit together or not at all. An event whose handler only touches the database is
claimed, applied and marked done in one transaction. One whose handler calls Stripe (which can take
seconds) is claimed in a short transaction of its own first, so on-call staff see it being worked on
and the attempt counts even if the process dies inside the call. A failure is recorded in a
transaction of its own and re-raised for Dramatiq to retry; after the last attempt the event is `dead`
and stays so in the database (Dramatiq's own dead-letter set expires after 7 days).
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NoReturn

from sqlalchemy import bindparam, case, select, update
from sqlmodel import Session

from handlers import FetchContext, Handler, HandlerContext, UnprocessableEvent, handler_for
from handlers.context import StripeLookup
from models import FINISHED_STATUSES, Database, Event, EventStatus
from models.db import execute
from models.prepared import Prepared
from models.types import utcnow
from worker.ops.logs import bind_event, event_context, redact

log = logging.getLogger(__name__)


# Raised by a handler reading a payload of the wrong shape (a list where an object belongs, a number
# out of range, text no database takes): the same payload fails the same way every time, so the event
# is dead at once, with the error, rather than retried for an hour. Replay re-runs it after a fix.
PAYLOAD_SHAPE_ERRORS = (TypeError, AttributeError, KeyError, ValueError, OverflowError)

# Event transactions in psycopg's pipeline mode on PostgreSQL (models.db.Database.session). Turned off
# only by the benchmarks that measure what it changes (tests/bench/process_cost.py --compare,
# tests/bench/pipeline_bench.py --unpipelined, which sets this variable for the worker).
PIPELINED_TRANSACTIONS = os.environ.get("WORKER_PIPELINED_TRANSACTIONS", "1") != "0"


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

    Every line logged meanwhile carries the event's id, account, type and attempt.
    """
    with event_context(event_id, account):
        return _process_event(
            db, event_id, account, max_attempts=max_attempts, force=force, stripe=stripe, on_alerts=on_alerts
        )


def _process_event(
    db: Database,
    event_id: str,
    account: str,
    *,
    max_attempts: int,
    force: bool,
    stripe: Callable[[], StripeLookup | None],
    on_alerts: Callable[[list[int]], None],
) -> Outcome:
    claim = None
    try:
        # Pipelined on PostgreSQL (models.db.Database.session): the writes that return nothing travel
        # with the next statement that reads, so an event's ~20 statements take about half as many
        # round trips; the claim's BEGIN goes with the claim itself.
        with db.session(pipelined=PIPELINED_TRANSACTIONS) as session:
            claim = _claim(session, event_id, account, force=force, stripe=stripe)
            if claim.skipped is not None:
                return claim.skipped
            if not claim.calls_stripe:
                # Only the database is touched: the claim, the handler's writes and the done mark commit
                # together, in one transaction.
                claim.fetched = claim.fetch(lambda: nullcontext(session))
                status = _apply(session, claim)
        if claim.calls_stripe:
            # The claim is committed first, so on-call staff see the event `processing` and the attempt
            # counts even if the process dies during a Stripe call that can take seconds; the Stripe
            # calls run outside any transaction (see handlers.context).
            # Its reads take no write lock on SQLite and no transaction on PostgreSQL (db.lookups).
            claim.fetched = claim.fetch(db.lookups)
            with db.session(pipelined=PIPELINED_TRANSACTIONS) as session:
                status = _apply(session, claim)
    except Exception as exc:
        if claim is None or claim.skipped is not None:
            raise  # the database failed before the event was claimed: Dramatiq retries the message
        _give_up_or_retry(db, claim, exc, max_attempts)
    log.info("event %s", status, extra=claim.log_context)
    if claim.new_alert_ids:
        _hand_over(on_alerts, claim.new_alert_ids)
    return Outcome(event_id, account, claim.event_type, status, claim.attempt)


@dataclass
class _Claim:
    """An event taken for processing: what was stored, and what its handler needs and produced."""

    event_id: str
    account: str
    attempt: int = 0
    event_type: str = ""
    payload: str = ""
    handler: Handler | None = None
    reader: StripeLookup | None = None
    skipped: Outcome | None = None  # set when there is nothing to do
    fetched: Any = None
    new_alert_ids: list[int] = field(default_factory=list)

    @property
    def key(self) -> dict[str, str]:
        """The event row's key, as the statements below name their parameters."""
        return {"event_id": self.event_id, "event_account": self.account}

    @property
    def calls_stripe(self) -> bool:
        return self.reader is not None

    @property
    def log_context(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "account": self.account,
            "attempt": self.attempt,
        }

    def fetch(self, session_factory: Callable[[], Any]) -> Any:
        """The handler's first half: what the payload lacks, read from the database or Stripe."""
        if self.handler is None or self.handler.fetch is None:
            return None
        context = FetchContext(
            event=self.document, account=self.account, session_factory=session_factory, stripe=self.reader
        )
        return self.handler.fetch(context)

    @cached_property
    def document(self) -> dict[str, Any]:
        return json.loads(self.payload)


def _claim(
    session: Session, event_id: str, account: str, *, force: bool, stripe: Callable[[], StripeLookup | None]
) -> _Claim:
    """Mark the event `processing` and count the attempt; unless `force`, a finished event is skipped."""
    claim = _Claim(event_id, account)
    claimed = execute(session, _CLAIM if force else _CLAIM_UNFINISHED, {**claim.key, "now": utcnow()}).first()
    if claimed is None:
        stored = execute(session, _STATUS, claim.key).first()
        if stored is None:
            raise EventNotFound(f"event {claim.event_id} is not in the event log")
        claim.skipped = Outcome(
            claim.event_id, claim.account, stored.type, stored.status, stored.attempts, skipped=True
        )
        return claim
    claim.attempt, claim.event_type, claim.payload = claimed
    bind_event(event_type=claim.event_type, attempt=claim.attempt)
    claim.handler = handler_for(claim.event_type)
    if claim.handler is not None and claim.handler.fetch is not None:
        claim.reader = stripe()
    return claim


def _apply(session: Session, claim: _Claim) -> EventStatus:
    """The handler's second half (writes only) and the done mark, in the caller's transaction."""
    if claim.handler is None:
        status = EventStatus.IGNORED
    else:
        context = HandlerContext(
            event=claim.document, account=claim.account, session=session, fetched=claim.fetched
        )
        claim.handler.apply(context)
        claim.new_alert_ids = context.new_alert_ids
        status = EventStatus.DONE
    execute(session, _FINISH, {**claim.key, "new_status": status, "now": utcnow()})
    return status


def _give_up_or_retry(db: Database, claim: _Claim, exc: Exception, max_attempts: int) -> NoReturn:
    """Record the failure (its transaction rolled back) and raise what tells Dramatiq what to do next."""
    if isinstance(exc, PAYLOAD_SHAPE_ERRORS) and not isinstance(exc, UnprocessableEvent):
        shape_error = exc
        exc = UnprocessableEvent(f"payload of an unexpected shape ({type(exc).__name__}: {exc})")
        exc.__cause__ = shape_error
    gave_up = isinstance(exc, UnprocessableEvent) or claim.attempt >= max_attempts

    _record_failure(db, claim, exc, dead=gave_up)
    log.warning("event failed: %s", redact(f"{type(exc).__name__}: {exc}"), extra=claim.log_context)
    if gave_up:
        raise EventGaveUp(f"event {claim.event_id} is dead after {claim.attempt} attempt(s)") from exc
    raise exc


def _hand_over(on_alerts: Callable[[list[int]], None], alert_ids: list[int]) -> None:
    """Pass committed alerts to the sink; if that fails, the clock's delivery sweep sends them later."""
    try:
        on_alerts(alert_ids)
    except Exception as exc:
        log.warning("alerts %s stored but not handed to the sink (%s)", alert_ids, type(exc).__name__)


def _record_failure(db: Database, claim: _Claim, exc: Exception, *, dead: bool) -> None:
    try:
        with db.session() as session:
            execute(
                session,
                _FAIL,
                {
                    **claim.key,
                    "attempt": claim.attempt,
                    "new_status": EventStatus.DEAD if dead else EventStatus.FAILED,
                    "error": redact(f"{type(exc).__name__}: {exc}")[:2000],
                    "trace": redact("".join(traceback.format_exception(exc)))[-20000:],
                    "now": utcnow(),
                },
            )
    except Exception:
        # The database itself is failing; Dramatiq's retry (or the sweeper) will come back to it.
        log.exception("could not record the failure of event %s", claim.event_id)


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
_CLAIM_UNFINISHED = Prepared(_CLAIM.where(_EVENTS.c.status.not_in(FINISHED_STATUSES)))
_CLAIM = Prepared(_CLAIM)
_STATUS = Prepared(select(_EVENTS.c.type, _EVENTS.c.status, _EVENTS.c.attempts).where(_THIS_EVENT))
_FINISH = Prepared(
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
_FAIL = Prepared(
    update(_EVENTS)
    .where(_THIS_EVENT)
    .values(
        status=bindparam("new_status"),
        # The attempt is counted here too when its claim was rolled back with the handler's writes
        # (never lowered: another delivery may have claimed the event since).
        attempts=case(
            (_EVENTS.c.attempts < bindparam("attempt"), bindparam("attempt")), else_=_EVENTS.c.attempts
        ),
        last_error=bindparam("error"),
        last_traceback=bindparam("trace"),
        updated_at=bindparam("now"),
    )
)
