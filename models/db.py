"""The database engine and session, and the two conflict-safe writes every handler uses.

SQLite (the embedded default) runs in WAL mode and opens every transaction with BEGIN IMMEDIATE, so
the receiver and several worker processes queue up for the write lock (bounded by busy_timeout)
instead of failing when a read-only transaction later tries to write. PostgreSQL is used through
psycopg 3 when DATABASE_URL says so.

The SQLite file holds customer emails and payloads: it is made 0600 (the folders made for it 0700)
whatever the process umask, before SQLite opens it. SQLite gives its -wal and -shm files the main
file's mode, so all three end 0600; existing ones readable by others are tightened, with a log line.
"""

from __future__ import annotations

import logging
import os
import select
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import case, event, func, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, Result, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.expression import Executable
from sqlmodel import Session, SQLModel, create_engine

from models.prepared import Prepared, Rows

SQLITE_BUSY_TIMEOUT_SECONDS = 30
# A pooled PostgreSQL connection is pinged before use only when it has sat idle this long (or the server
# has sent it something meanwhile, as it does when it shuts down): under load each is reused within
# milliseconds, and a ping before every transaction was one round trip in every event's ~20.
PING_AFTER_IDLE_SECONDS = 1.0
# Up to this many parameter sets of a Prepared write run on the driver, one statement each (queued in
# a pipelined transaction); more go through SQLAlchemy, whose multi-row INSERTs cost less per row (the
# nightly run, `sales rebuild`).
DRIVER_MANY_ROWS = 20
# Files that hold customer data or secrets, and the folders made for them: their owner's alone.
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700

log = logging.getLogger(__name__)


def make_private_dirs(folder: str | Path) -> None:
    """Create `folder` and its missing parents 0700 whatever the umask; existing ones are left alone."""
    missing: list[Path] = []
    current = Path(folder)
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # another process made it first
        os.chmod(path, PRIVATE_DIR_MODE)  # mkdir's mode is cut by the umask


def open_private(path: str | Path, flags: int) -> int:
    """`os.open` a file only its owner may read: a new one is made 0600 whatever the umask; an existing
    one that others may read is tightened (and a log line says so). Returns the descriptor."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        fd = os.open(path, flags & ~(os.O_CREAT | os.O_EXCL))
        try:
            _tighten(path, os.fstat(fd).st_mode, lambda mode: os.fchmod(fd, mode))
        except BaseException:
            os.close(fd)
            raise
        return fd
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # the mode given to open() is cut by the umask too
    except BaseException:
        os.close(fd)
        raise
    return fd


def tighten_existing(path: str | Path) -> None:
    """Take group and other permissions off `path` if it is a file that has them (and say so)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    _tighten(path, mode, lambda new: os.chmod(path, new))


def _tighten(path: str | Path, mode: int, chmod: Callable[[int], None]) -> None:
    current = stat.S_IMODE(mode)
    if not stat.S_ISREG(mode) or not current & 0o077:
        return  # a pipe or terminal (`--csv /dev/stdout`), or already the owner's alone
    try:
        chmod(current & 0o700)
    except PermissionError:
        log.warning(
            "%s can be read by other users (mode %04o) and this user may not change that: chmod 600 it",
            path,
            current,
        )
        return
    log.warning(
        "tightened %s from mode %04o to %04o: only its owner may read it", path, current, current & 0o700
    )


def _private_sqlite_files(database: str) -> None:
    """Create the database file 0600 before SQLite does (SQLite's own default is 0644 less the umask,
    and it copies the main file's mode to -wal and -shm); tighten leftovers that others can read."""
    path = Path(database)
    make_private_dirs(path.parent)
    os.close(open_private(path, os.O_RDONLY))
    for suffix in ("-wal", "-shm", "-journal"):
        tighten_existing(path.with_name(path.name + suffix))


def normalise_url(url: str) -> str:
    """Accept the `postgres://` and `postgresql://` forms hosting platforms hand out; use psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str, *, sqlite_synchronous: str = "FULL", reader: bool = False) -> Engine:
    """`reader`: an engine for read-only pages; on SQLite its transactions take no write lock (WAL
    lets them read beside the writer), where every other transaction begins IMMEDIATE."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_size=5, max_overflow=10)
        _ping_when_idle(engine)
        _results_at_once_in_pipelines(engine)
        return engine

    in_memory = parsed.database in (None, "", ":memory:")
    if in_memory:
        # One shared connection, so every session of a test sees the same in-memory database.
        engine = create_engine(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
    else:
        if parsed.query.get("uri") not in ("true", "1"):  # a `file:` URI names no plain path
            _private_sqlite_files(parsed.database)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
        )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN, instead of pysqlite's deferred BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn) -> None:
        # Straight on the driver: every event's transaction starts here, and SQLAlchemy's execution
        # layer costs several times what BEGIN does. Errors reach callers as SQLAlchemy raises them.
        try:
            conn.connection.driver_connection.execute("BEGIN" if reader else "BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise DBAPIError.instance("BEGIN IMMEDIATE", (), error, sqlite3.Error) from error

    return engine


def _ping_when_idle(engine: Engine) -> None:
    """`pool_pre_ping`, but only for a connection idle for PING_AFTER_IDLE_SECONDS or with unread input.

    A connection that fails its ping is replaced (DisconnectionError: the pool connects a new one).
    One used a moment ago that the server has since dropped without a word fails its next statement
    instead, as any connection lost mid-transaction does: the event is retried.
    """

    @event.listens_for(engine, "connect")
    def _connected(_dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()
        if dbapi_connection is not None and getattr(dbapi_connection, "autocommit", False):
            with _suppress_driver_errors():
                dbapi_connection.autocommit = False  # a pipelined session left it on (see below)

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy) -> None:
        idle_since = record.info.get("idle_since")
        if (
            idle_since is not None
            and time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS
            and not _has_input(dbapi_connection)
        ):
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"connection failed its ping: {exc}") from exc


def _has_input(dbapi_connection) -> bool:
    """Whether the server sent an idle connection something (a shutdown notice, or EOF)."""
    try:
        return bool(select.select([dbapi_connection.fileno()], [], [], 0)[0])
    except (OSError, ValueError, AttributeError):
        return True


@contextmanager
def _suppress_driver_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # the connection is broken; the pool's reset or next ping deals with it
        log.debug("ignored on a broken connection: %s", exc)


# --- pipelined transactions (PostgreSQL) ----------------------------------------------------------

# Where a pipelined session's psycopg Pipeline is kept, in its connection's `info` while it is active.
_PIPELINE = "stripe_worker_pipeline"


def _results_at_once_in_pipelines(engine: Engine) -> None:
    """A statement SQLAlchemy itself runs inside a pipelined session gets its results at once.

    In psycopg's pipeline mode a cursor has no `description` (nor `rowcount`) until the pipeline is
    synced, and SQLAlchemy reads both right after executing: so its statements sync (one round trip
    each, as without a pipeline). Only `Prepared` statements that return no rows (models/prepared.py,
    the hot path's writes and advisory locks) are left queued, to travel with the next one that does.
    """

    @event.listens_for(engine, "after_cursor_execute")
    def _sync(conn, _cursor, _statement, _parameters, _context, _executemany) -> None:
        pipeline = conn.info.get(_PIPELINE)
        if pipeline is not None:
            pipeline.sync()


class _PipelinedTransaction:
    """One PostgreSQL transaction in psycopg's pipeline mode, with BEGIN and COMMIT queued too.

    Statements that return no rows are sent without waiting for the server; the next one whose rows
    are read (or the COMMIT) collects every result so far in the same round trip. The server runs them
    in order, as it would one by one, and the first error is raised at that next read (its message is
    the server's own; the statement SQLAlchemy names with it may be a later one). psycopg would BEGIN
    with a round trip of its own (and sync the pipeline after it), so the connection is in autocommit
    mode for the session and the BEGIN is queued like any statement.
    """

    def __init__(self, session: Session) -> None:
        self.connection = session.connection()
        self.driver = self.connection.connection.driver_connection
        # The connection's own dict, kept: SQLAlchemy refuses `connection.info` once it has invalidated
        # the connection (a lost server), which is when abandon() must still clean up.
        self.info = self.connection.info
        self.error = self.connection.dialect.loaded_dbapi.Error
        self.driver.autocommit = True
        self._mode = self.driver.pipeline()  # a context manager: entered here, left in _leave
        self.pipeline = self._mode.__enter__()
        self.info[_PIPELINE] = self.pipeline
        self._send("BEGIN")

    def _send(self, sql: str) -> None:
        cursor = self.driver.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()

    def commit(self) -> None:
        """Queue COMMIT and leave pipeline mode: one round trip collects every result left."""
        try:
            self._send("COMMIT")
            self._leave(raise_errors=True)
        except self.error as error:
            raise DBAPIError.instance(
                "COMMIT", None, error, self.error, dialect=self.connection.dialect
            ) from error
        self._end()

    def abandon(self) -> None:
        """Leave pipeline mode after an error and roll back on the driver (SQLAlchemy's rollback that
        follows then finds nothing to do); a connection that cannot is invalidated."""
        try:
            self._leave(raise_errors=False)
            self.driver.rollback()
            self._end()
        except Exception:
            if not self.connection.invalidated:
                with _suppress_driver_errors():
                    self.connection.invalidate()

    def _leave(self, *, raise_errors: bool) -> None:
        self.info.pop(_PIPELINE, None)
        mode, self._mode = self._mode, None
        if mode is None:
            return
        try:
            mode.__exit__(None, None, None)
        except self.error:
            if raise_errors:
                raise

    def _end(self) -> None:
        self.driver.autocommit = False  # the transaction is over (IDLE): psycopg allows it


class Database:
    """An engine plus the session factory handlers and the receiver share."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.engine = make_engine(url, sqlite_synchronous=sqlite_synchronous)
        # Every SQLite transaction takes the database's one write lock (BEGIN IMMEDIATE). Threads of
        # one process that wait for it inside SQLite sleep in its busy handler for up to 100 ms at a
        # time, long after the lock came free; waiting here instead hands it over at once. Other
        # processes (the receiver, more workers) still queue in SQLite, bounded by busy_timeout.
        file_backed = self.dialect == "sqlite" and self.engine.url.database not in (None, "", ":memory:")
        self._turns = threading.RLock() if file_backed else None
        self._url, self._synchronous = url, sqlite_synchronous
        self._reader: Engine | None = None
        self._autocommit: Engine | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, pipelined: bool = False) -> Iterator[Session]:
        """A unit of work: committed when the block ends normally, rolled back when it raises.

        `pipelined` (PostgreSQL; ignored on SQLite): the transaction runs in psycopg's pipeline mode
        (see _PipelinedTransaction): the worker's event transactions, which run about twenty short
        statements, half of which return nothing.
        """
        with self._turn(), Session(self.engine, expire_on_commit=False) as session:
            pipeline = None
            try:
                if pipelined and self.dialect == "postgresql":
                    pipeline = _PipelinedTransaction(session)
                yield session
                if pipeline is not None:
                    session.flush()  # ORM writes, if any, belong inside the COMMIT below
                    pipeline.commit()
                session.commit()
            except BaseException:
                if pipeline is not None:
                    pipeline.abandon()
                session.rollback()
                raise

    @contextmanager
    def lookups(self) -> Iterator[Session]:
        """A session for a handler's fetch reads (a few lookups between Stripe calls): on SQLite the
        reader engine's (no write lock, see `reading`), on PostgreSQL with no transaction at all, so
        each SELECT is one round trip rather than four (ping, BEGIN, SELECT, ROLLBACK)."""
        if self.dialect != "postgresql":
            with self.reading() as session:
                yield session
            return
        if self._autocommit is None:
            self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        with Session(self._autocommit, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only unit of work for dashboard pages: rolled back at the end, and on SQLite it never
        waits for (or holds) the write lock the receiver and workers take turns on."""
        if self.dialect != "sqlite" or self._turns is None:
            engine = self.engine
        else:
            if self._reader is None:
                self._reader = make_engine(self._url, sqlite_synchronous=self._synchronous, reader=True)
            engine = self._reader
        # Closing (not rolling back) ends the transaction and keeps what was read usable afterwards.
        with Session(engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def _turn(self) -> Iterator[None]:
        if self._turns is None:
            yield
            return
        if not self._turns.acquire(timeout=SQLITE_BUSY_TIMEOUT_SECONDS):
            # The error SQLite itself would have raised, as SQLAlchemy hands it to callers.
            locked = sqlite3.OperationalError("database is locked (by another thread of this process)")
            raise OperationalError("BEGIN IMMEDIATE", None, locked)
        try:
            yield
        finally:
            self._turns.release()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def create_all(self) -> None:
        """Create the tables directly from the models; tests use this, deployments use migrations."""
        import models  # noqa: F401  (registers every table on the metadata)

        SQLModel.metadata.create_all(self.engine)

    def dispose(self) -> None:
        if self._reader is not None:
            self._reader.dispose()
        self.engine.dispose()


def dialect_insert(session: Session):
    """The INSERT construct with ON CONFLICT support for the session's database."""
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def execute(session: Session, statement: Executable | Prepared, params: Any = None) -> Result | Rows:
    """Run a Core statement on the session's connection, in its transaction.

    The hot path (every event) uses this rather than `session.execute`: handlers write only through
    Core statements, so there is no pending ORM state to flush, and the ORM's execution layer costs
    more per statement than the statement itself. A `Prepared` statement skips SQLAlchemy's execution
    layer too (models/prepared.py); so does a short list of parameter sets (one statement each, on the
    driver), while a long one is left to SQLAlchemy, which sends it as a few multi-row INSERTs.
    """
    if isinstance(statement, Prepared):
        if not isinstance(params, list):
            return statement.run(session, params)
        if 0 < len(params) <= DRIVER_MANY_ROWS and statement.run_many(session, params):
            return Rows([])
        statement = statement.statement
    return session.connection().execute(statement, params)


# Built statements by shape. Building an INSERT ... ON CONFLICT (its `excluded` alias copies every
# column) costs several times more than running it, so each shape is built once per process.
_statements: dict[tuple, Prepared] = {}


def built_once(key: tuple, build: Callable[[], Executable]) -> Prepared:
    """The statement built for `key`, building it on first use."""
    statement = _statements.get(key)
    if statement is None:
        statement = _statements[key] = Prepared(build())
    return statement


def insert_ignore(
    session: Session,
    model: type[SQLModel],
    values: dict[str, Any],
    *,
    conflict_on: Sequence[str] | None = None,
) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True when the row was new.

    Never check-then-insert: two processes racing on the same key must both succeed, once.
    `conflict_on` names a unique constraint's columns when the key is not the primary key.
    """
    table = model.__table__
    keys = tuple(conflict_on or [c.name for c in table.primary_key.columns])
    insert = dialect_insert(session)

    def build() -> Executable:
        return (
            insert(table)
            .on_conflict_do_nothing(index_elements=list(keys))
            .returning(*[table.c[k] for k in keys])
        )

    statement = built_once(("ignore", insert, table.name, tuple(values), keys), build)
    return execute(session, statement, values).first() is not None


Rank = Callable[[Any], Any]


def upsert_newer(
    session: Session,
    model: type[SQLModel],
    values: dict[str, Any],
    *,
    version_column: str = "version",
    keep_on_update: Sequence[str] = (),
    fill_only: Sequence[str] = (),
    rank_on_tie: dict[str, Rank] | None = None,
) -> None:
    """Insert the row, or overwrite it when `values` are at least as new as what is stored.

    Stripe delivers events in no order; comparing the event's `created` time keeps a stale event from
    undoing a newer one, and makes applying the same event twice a no-op. Columns in `keep_on_update`
    keep their first value; columns in `fill_only` are only written where the incoming value is not
    null (a payload that lacks a link must not erase one another payload supplied).

    Stripe's `created` has whole-second resolution, so two events about one object can tie. For the
    columns in `rank_on_tie` a tie keeps whichever value ranks higher (a larger refunded amount, a
    later refund status), so the outcome does not depend on which of the two was processed last.
    """
    upsert_many(
        session,
        model,
        [values],
        version_column=version_column,
        keep_on_update=keep_on_update,
        fill_only=fill_only,
        rank_on_tie=rank_on_tie,
    )


def upsert_many(
    session: Session,
    model: type[SQLModel],
    rows: Sequence[dict[str, Any]],
    *,
    version_column: str = "version",
    keep_on_update: Sequence[str] = (),
    fill_only: Sequence[str] = (),
    rank_on_tie: dict[str, Rank] | None = None,
) -> None:
    """`upsert_newer` for many rows with the same columns, sent as one batched statement."""
    if not rows:
        return
    table = model.__table__
    columns = tuple(rows[0])
    insert = dialect_insert(session)
    ranks = tuple(sorted((rank_on_tie or {}).items()))

    def build() -> Executable:
        keys = [c.name for c in table.primary_key.columns]
        statement = insert(table)
        newer = statement.excluded[version_column] > table.c[version_column]
        updates = {}
        for name in columns:
            if name in keys or name in keep_on_update:
                continue
            incoming, existing = statement.excluded[name], table.c[name]
            if name in fill_only:
                incoming = func.coalesce(incoming, existing)
            if rank_on_tie and name in rank_on_tie:
                rank = rank_on_tie[name]
                incoming = case(
                    (newer, incoming), (rank(incoming) > rank(existing), incoming), else_=existing
                )
            updates[name] = incoming
        return statement.on_conflict_do_update(
            index_elements=keys,
            set_=updates,
            where=table.c[version_column] <= statement.excluded[version_column],
        )

    shape = (table.name, columns, version_column, tuple(keep_on_update), tuple(fill_only), ranks)
    statement = built_once(("upsert", insert, *shape), build)
    execute(session, statement, rows[0] if len(rows) == 1 else list(rows))


def advisory_lock(session: Session, key: str) -> None:
    """Hold a lock named `key` until this transaction ends (PostgreSQL; a no-op on SQLite).

    SQLite's BEGIN IMMEDIATE already runs writers one at a time. Under PostgreSQL's READ COMMITTED,
    two events about one charge (or one customer) applied at once could each miss the other's
    uncommitted rows and write a note from a stale read; taking this lock before reading anything
    makes them take turns. Take a charge's lock before a customer's, customers' in sorted order.
    """
    if session.get_bind().dialect.name == "postgresql":
        execute(session, _ADVISORY_LOCK, {"key": key})


_ADVISORY_LOCK = Prepared(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"))
