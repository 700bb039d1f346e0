"""Group commit for the receiver: one thread stores accepted events in batches, then enqueues them.

Each webhook must be committed before it is answered 200. Committing each one in its own transaction
costs a whole ORM session and an fsync per request, and with SQLite many connections then fight over
the write lock (the losers sleep in SQLite's busy handler: a 1.5 s p99). Instead every request hands
its event to this one writer and waits; the writer takes everything that is waiting, inserts it on one
raw DB-API connection in one transaction, commits once, enqueues the new events, and wakes the
requests. Under load a batch holds many events for one fsync; when idle a batch is one event.

A failed write closes every connection this process holds to the database, not only the one that
failed: SQLite opens a file it may not write read-only and that connection stays read-only after the
file is writable again (within one process even a fresh connection does, while an old one is open), a
PostgreSQL connection can be left on a server that became a read-only standby, and a connection that
saw a disk I/O error is suspect. The next batch then opens a fresh connection, so the receiver recovers
by itself once the cause is gone. The writer keeps its last outcome (`writer_healthy`,
`last_write_error`) for /readyz and metrics, and `probe()` commits a write through the same path so
/readyz can tell whether writes work now, even when no webhook has arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import event as sa_event
from sqlalchemy.pool import StaticPool

from models import Database, EventStatus
from worker.receiver.intake import Enqueue, initial_status
from worker.receiver.stripe_events import ParsedEvent

log = logging.getLogger(__name__)

MAX_BATCH = 256
RECEIVER_BUSY_TIMEOUT_MS = 5_000
# How long /readyz waits for the writer's probe: longer than a write may wait for SQLite's lock.
READINESS_PROBE_TIMEOUT_SECONDS = RECEIVER_BUSY_TIMEOUT_MS / 1000 + 3
# The row the write probe inserts and deletes in one transaction: no webhook can carry this id or
# account (Stripe's are evt_/acct_ followed by letters and digits, the funnel's cfevt_ and hex).
PROBE_KEY = ("receiver:write-probe", "receiver:write-probe")
# Set in a pooled connection's `info` once it has the receiver's busy timeout.
_BUSY_TIMEOUT_SET = "event_writer_busy_timeout"

T = TypeVar("T")

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
    """The batch could not be committed; nothing of it was stored. The message is the one-line reason."""


@dataclass
class _Pending:
    event: ParsedEvent | None  # None: a write probe (`EventWriter.probe`)
    raw: str
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


def write_error_reason(exc: BaseException) -> str:
    """One line saying why a write failed, safe to show on /readyz (no host names, no values)."""
    error = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    if isinstance(error, sqlite3.Error):
        text = str(error)  # SQLite's messages are fixed phrases: "attempt to write a readonly database"
    else:
        sqlstate = getattr(error, "sqlstate", None)
        primary = getattr(getattr(error, "diag", None), "message_primary", None)
        text = type(error).__name__
        if sqlstate:  # a server-side PostgreSQL error: its primary message names no host
            text += f" {sqlstate}" + (f": {primary}" if primary else "")
    return " ".join(text.split())[:200] or type(error).__name__


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
        self._delete_probe = f"DELETE FROM events WHERE id = {placeholder} AND account = {placeholder}"
        self._values = f"({', '.join([placeholder] * len(_COLUMNS))})"
        self._insert_sql: dict[int, str] = {}  # batch size -> its INSERT (at most MAX_BATCH of them)

        # The last write's outcome (a batch or a probe), written by the writer thread only.
        self.last_write_error: str | None = None
        self.last_write_error_at: float | None = None  # time.time() of that failure
        self.last_write_ok_at: float | None = None

        # An in-memory SQLite database lives in its one shared connection (StaticPool): never closed.
        self._discards = not isinstance(db.engine.pool, StaticPool)
        # How many times connections were discarded; each pooled connection notes (in its pool `info`)
        # the count it was opened under, once the first discard has set the listeners up.
        self._generation = 0
        self._generation_key = f"event_writer_generation_{id(self)}"
        self._listening = False

    @property
    def writer_healthy(self) -> bool:
        """False while the last write (a batch of events or a probe) failed; True before any write."""
        return self.last_write_error is None

    async def submit(self, event: ParsedEvent, raw: str) -> bool:
        """Store the event (committed when this returns); True when it was new, not a duplicate."""
        return await self._hand_over(event, raw)

    async def probe(self) -> None:
        """Commit a write through the writer now; DatabaseUnavailable (with the reason) when it fails.

        The probe inserts a row and deletes it in one committed transaction (nothing is left behind),
        so a read-only file, a full or failing disk and a lock held too long all show. A probe that
        arrives with webhooks is answered by their commit.
        """
        try:
            await asyncio.wait_for(self._hand_over(None, ""), READINESS_PROBE_TIMEOUT_SECONDS)
        except TimeoutError:
            raise DatabaseUnavailable(
                f"the event writer did not answer within {READINESS_PROBE_TIMEOUT_SECONDS:g} s"
            ) from None

    async def _hand_over(self, event: ParsedEvent | None, raw: str) -> Any:
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
            events = [pending for pending in batch if pending.event is not None]
            probes = [pending for pending in batch if pending.event is None]
            try:
                results = self._store(events) if events else []
                if probes and not events:
                    self._probe()
            except Exception as exc:
                reason = write_error_reason(exc)
                self.last_write_error, self.last_write_error_at = reason, time.time()
                log.error("database unavailable, %d event(s) not stored (%s)", len(events), reason)
                self._settle(batch, error=DatabaseUnavailable(reason))
                continue
            if self.last_write_error is not None:
                log.warning("database writes work again (after: %s)", self.last_write_error)
            self.last_write_error, self.last_write_ok_at = None, time.time()
            self._enqueue_new(events, results)
            self._settle(events, results=results)
            self._settle(probes, results=[True] * len(probes))

    def _store(self, batch: list[_Pending]) -> list[bool]:
        """Insert the batch in one statement and commit it; for each event, whether it was new.

        One multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING id, account: the rows it returns are
        the new ones (an id twice in one batch: the first is new, the second a duplicate, as when each
        row was inserted on its own). On SQLite the statement is its own transaction (the connection is
        in autocommit mode): one call into SQLite, which releases the GIL once for the insert and its
        commit, instead of once per row plus BEGIN and COMMIT; each of those waits for the event loop
        to give the GIL back.
        """
        # Rows first, outside the transaction: nothing about one event can then fail the others.
        now = datetime.now(UTC).replace(tzinfo=None)  # stored as naive UTC, like UTCDateTime does
        params: list = []
        for pending in batch:
            params.extend(self._row(pending, now))
        sql = self._insert_many(len(batch))

        def insert(cursor) -> list[bool]:
            cursor.execute(sql, params)
            inserted = set(map(tuple, cursor.fetchall()))
            results = []
            for pending in batch:
                key = (pending.event.id, pending.event.account)
                results.append(key in inserted)
                inserted.discard(key)  # the same id later in this batch is a duplicate
            return results

        return self._transaction(insert, single_statement=True)

    def _insert_many(self, count: int) -> str:
        sql = self._insert_sql.get(count)
        if sql is None:
            sql = self._insert_sql[count] = (
                f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES "
                + ", ".join([self._values] * count)
                + " ON CONFLICT (id, account) DO NOTHING RETURNING id, account"
            )
        return sql

    def _probe(self) -> None:
        """Insert the probe row and delete it, committed: a real write that leaves nothing behind."""
        now = datetime.now(UTC).replace(tzinfo=None)
        status = str(EventStatus.IGNORED)
        row = (*PROBE_KEY, "receiver.write_probe", None, False, now, "{}", status, 0, now, now)

        def insert_and_delete(cursor) -> None:
            cursor.execute(self._insert, row)
            if cursor.rowcount == 1:  # never delete a row this transaction did not insert
                cursor.execute(self._delete_probe, PROBE_KEY)

        self._transaction(insert_and_delete)

    def _transaction(self, work: Callable[[Any], T], *, single_statement: bool = False) -> T:
        """Run `work(cursor)` in one committed transaction on a pooled connection.

        `single_statement`: `work` runs one statement, which on SQLite is then its own transaction
        (autocommit) rather than wrapped in BEGIN IMMEDIATE ... COMMIT.
        """
        sqlite = self.db.dialect == "sqlite"
        if not self.writer_healthy:
            # While writes fail, other threads (readiness, metrics) may pool connections opened in the
            # meantime, read-only like the file was: start every attempt from fresh ones.
            self.db.engine.dispose()
        # One pooled connection per batch, given back after: the writer holds none while idle.
        connection = self.db.engine.raw_connection()
        cursor = connection.cursor()
        try:
            if sqlite:
                if not connection.info.get(_BUSY_TIMEOUT_SET):
                    # Stripe waits for our answer: a database locked for longer than this gets a 503
                    # (Stripe retries) rather than holding its request for the pool's default 30 s.
                    cursor.execute(f"PRAGMA busy_timeout = {RECEIVER_BUSY_TIMEOUT_MS}")
                    connection.info[_BUSY_TIMEOUT_SET] = True
                explicit = not single_statement or connection.dbapi_connection.in_transaction
                if explicit:
                    cursor.execute("BEGIN IMMEDIATE")  # the connection is in autocommit mode (models/db.py)
            result = work(cursor)
            if sqlite:
                if explicit:
                    cursor.execute("COMMIT")
            else:
                connection.commit()
            return result
        except BaseException:
            # A broken connection cannot roll back: closing it (below) rolls back.
            with contextlib.suppress(Exception):
                if not sqlite:
                    connection.rollback()
                elif connection.dbapi_connection.in_transaction:
                    cursor.execute("ROLLBACK")
            with contextlib.suppress(Exception):
                cursor.close()
            # Even when the rollback worked, the connection may be the cause (opened read-only, on a
            # standby, after an I/O error): never hand it out again, nor its siblings.
            self._discard_connections(connection)
            raise
        finally:
            with contextlib.suppress(Exception):
                cursor.close()  # already closed after a failure, with its connection
            connection.close()

    # --- after a failed write: every connection of this process goes -------------------------------

    def _discard_connections(self, connection) -> None:
        if not self._discards:
            return
        if not self._listening:  # set up at the first failure: a healthy receiver pays nothing
            sa_event.listen(self.db.engine, "connect", self._stamp)
            sa_event.listen(self.db.engine, "checkin", self._close_if_stale)
            self._listening = True
        self._generation += 1
        connection.invalidate()  # this one: closed now, its pool entry reconnects when next used
        self.db.engine.dispose()  # the idle ones: closed now; the engine opens new ones on demand
        # Those other threads are using now (a /readyz ping, a metrics scrape) close when given back.

    def _stamp(self, _dbapi_connection, record) -> None:
        record.info[self._generation_key] = self._generation

    def _close_if_stale(self, dbapi_connection, record) -> None:
        if dbapi_connection is None or record is None:
            return  # invalidated already
        if record.info.get(self._generation_key, 0) != self._generation:
            record.invalidate()  # opened before the last failed write: closed, never pooled again

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
            # A closed loop has nobody waiting any more; the writer thread must live on regardless.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, items, error)


def _wake(items: list[tuple[asyncio.Future, bool | None]], error: Exception | None) -> None:
    for future, result in items:
        if future.done():
            continue  # the request was cancelled (client went away)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
