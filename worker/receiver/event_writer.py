"""Group commit for the receiver: one thread stores accepted events in batches, then enqueues them.

Each webhook must be committed before it is answered 200. Committing each one in its own transaction
costs a whole ORM session and an fsync per request, and with SQLite many connections then fight over
the write lock (the losers sleep in SQLite's busy handler: a 1.5 s p99). Instead every request hands
its event to this one writer and waits; the writer takes everything that is waiting, inserts it on one
raw DB-API connection in one transaction, commits once, enqueues the new events, and wakes the
requests. Under load a batch holds many events for one fsync; when idle a batch is one event.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from models import Database, EventStatus
from worker.receiver.intake import Enqueue, initial_status
from worker.receiver.stripe_events import ParsedEvent

log = logging.getLogger(__name__)

MAX_BATCH = 256
RECEIVER_BUSY_TIMEOUT_MS = 5_000

_COLUMNS = (
    "id",
    "account",
    "type",
    "api_version",
    "livemode",
    "created",
    "payload",
    "status",
    "attempts",
    "received_at",
    "updated_at",
)


class DatabaseUnavailable(RuntimeError):
    """The batch could not be committed; nothing of it was stored."""


@dataclass
class _Pending:
    event: ParsedEvent
    raw: str
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class EventWriter:
    def __init__(self, db: Database, enqueue: Enqueue, enqueue_many=None) -> None:
        self.db = db
        self.enqueue = enqueue
        # Optional: enqueue a whole batch in one round trip (`worker.jobs.broker.enqueue_many`).
        self.enqueue_many = enqueue_many

        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        placeholder = "%s" if db.dialect == "postgresql" else "?"
        self._insert = (
            f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES ({', '.join([placeholder] * len(_COLUMNS))}) "
            "ON CONFLICT (id, account) DO NOTHING"
        )

    async def submit(self, event: ParsedEvent, raw: str) -> bool:
        """Store the event (committed when this returns); True when it was new, not a duplicate."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Pending(event, raw, future, loop))
        return await future

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                results = self._store(batch)
            except Exception as exc:
                log.error("database unavailable, %d event(s) not stored (%s)", len(batch), type(exc).__name__)
                self._settle(batch, error=DatabaseUnavailable(str(type(exc).__name__)))
                continue
            self._enqueue_new(batch, results)
            self._settle(batch, results=results)

    def _store(self, batch: list[_Pending]) -> list[bool]:
        # Rows first, outside the transaction: nothing about one event can then fail the others.
        now = datetime.now(UTC).replace(tzinfo=None)  # stored as naive UTC, like UTCDateTime does
        rows = [self._row(pending, now) for pending in batch]
        sqlite = self.db.dialect == "sqlite"
        # One pooled connection per batch, given back after: the writer holds none while idle.
        connection = self.db.engine.raw_connection()
        cursor = connection.cursor()
        try:
            if sqlite:
                # Stripe waits for our answer: a database locked for longer than this gets a 503
                # (Stripe retries) rather than holding its request for the pool's default 30 s.
                cursor.execute(f"PRAGMA busy_timeout = {RECEIVER_BUSY_TIMEOUT_MS}")
                cursor.execute("BEGIN IMMEDIATE")  # the connection is in autocommit mode (models/db.py)
            results = []
            for row in rows:
                cursor.execute(self._insert, row)
                results.append(cursor.rowcount == 1)
            if sqlite:
                cursor.execute("COMMIT")
            else:
                connection.commit()
            return results
        except BaseException:
            # If the connection itself is broken, rolling back fails too: drop it from the pool.
            try:
                cursor.execute("ROLLBACK") if sqlite else connection.rollback()
            except Exception:
                connection.invalidate()
            raise
        finally:
            cursor.close()
            connection.close()

    @staticmethod
    def _row(pending: _Pending, now: datetime) -> tuple:
        event = pending.event
        status = initial_status(event.type)
        created = datetime.fromtimestamp(event.created, UTC).replace(tzinfo=None)
        return (
            event.id,
            event.account,
            event.type,
            event.api_version,
            event.livemode,
            created,
            pending.raw,
            str(status),
            0,
            now,
            now,
        )

    def _enqueue_new(self, batch: list[_Pending], results: list[bool]) -> None:
        keys = [
            (pending.event.id, pending.event.account)
            for pending, new in zip(batch, results, strict=True)
            if new and initial_status(pending.event.type) == EventStatus.RECEIVED
        ]
        if not keys:
            return
        try:
            if self.enqueue_many is not None:
                self.enqueue_many(keys)
            else:
                for event_id, account in keys:
                    self.enqueue(event_id, account)
        except Exception as exc:
            # Committed already: Stripe gets its 200 and the sweeper enqueues what is missing once
            # Redis is back. Stop here rather than wait out a timeout for every event of the batch.
            log.warning(
                "%d event(s) stored, not all enqueued (%s); the sweeper will enqueue them",
                len(keys),
                type(exc).__name__,
            )

    @staticmethod
    def _settle(
        batch: list[_Pending], *, results: list[bool] | None = None, error: Exception | None = None
    ) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, bool | None]]] = {}
        for index, pending in enumerate(batch):
            by_loop.setdefault(pending.loop, []).append((pending.future, results[index] if results else None))
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_wake, items, error)


def _wake(items: list[tuple[asyncio.Future, bool | None]], error: Exception | None) -> None:
    for future, result in items:
        if future.done():
            continue  # the request was cancelled (client went away)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
