"""Statements the worker runs for every event, compiled once and run straight on the driver.

SQLAlchemy's execution layer (cache key, execution context, result set-up) costs several times what
SQLite or PostgreSQL take to run one of these small statements, and the worker runs about ten per
event. A `Prepared` statement is compiled once per dialect by SQLAlchemy itself, so the SQL, the
parameter style and every type conversion (our UTC datetimes, SQLite's text dates, booleans) are
exactly what SQLAlchemy would have used; only the per-execution bookkeeping is skipped. It runs on the
session's own connection, inside the session's transaction.

Driver errors are re-raised as SQLAlchemy's `DBAPIError` subclasses, as from any other statement.
"""

from __future__ import annotations

import copy
from collections import namedtuple
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import Executable
from sqlmodel import Session


class Prepared:
    """A Core statement built once at import time, compiled once per dialect on first use."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[Any, _Compiled] = {}

    def run(self, session: Session, params: dict[str, Any] | None = None) -> Rows:
        return self.start(session, params).rows()

    def start(self, session: Session, params: dict[str, Any] | None = None) -> Pending:
        """Send the statement; its rows are read by `Pending.rows()`.

        In a pipelined transaction (PostgreSQL, models.db.Database.session) the statement is only
        queued: statements started one after another and read afterwards reach the server together
        and their rows come back in one round trip, where reading each before starting the next costs
        one round trip each. The server still runs them in the order they were started. Elsewhere the
        statement runs at once, as `run` does.
        """
        connection = _connection(session)
        dialect = connection.dialect
        params = params or {}
        # An INSERT's SQL depends on which columns it is given (SQLAlchemy compiles it per key set).
        shape = (dialect.name, tuple(params)) if self.statement.is_insert else dialect.name
        compiled = self._compiled.get(shape)
        if compiled is None:
            compiled = self._compiled[shape] = _Compiled(self.statement, dialect, list(params))
        sql, parameters = compiled.expand(params)
        driver = connection.connection.driver_connection  # the session's own connection
        pending = Pending(compiled, sql, parameters, dialect, compiled.cursor(driver))
        error_type = dialect.loaded_dbapi.Error
        try:
            pending.cursor.execute(sql, parameters)
        except error_type as error:
            pending.close()
            raise DBAPIError.instance(sql, parameters, error, error_type, dialect=dialect) from error
        except BaseException:
            pending.close()
            raise
        if compiled.row_type is None or not _pipelined(driver):
            pending.rows()  # read now: nothing to wait for, or no pipeline to queue in
        return pending

    def run_many(self, session: Session, many: Sequence[dict[str, Any]]) -> bool:
        """Run the statement once per parameter set, on the driver (`executemany`); False, having run
        nothing, when it cannot: a statement that returns rows or has IN lists, or sets of other keys.

        A refresh writes a few rows at a time (a customer's new sales rows, their plans); through
        SQLAlchemy's executemany each cost more than the statement, and in a pipelined transaction it
        waited for the server (models.db._results_at_once_in_pipelines). Queued here, they do not.
        """
        keys = tuple(many[0])
        if any(tuple(params) != keys for params in many):
            return False
        connection = _connection(session)
        dialect = connection.dialect
        # Compiled as for executemany: an INSERT then does not return its new ids (RETURNING), which
        # would make each row a statement to wait for.
        shape = (dialect.name, keys, "many") if self.statement.is_insert else (dialect.name, "many")
        compiled = self._compiled.get(shape)
        if compiled is None:
            compiled = self._compiled[shape] = _Compiled(self.statement, dialect, list(keys), many=True)
        if compiled.row_type is not None or compiled.expands:
            return False
        expanded = [compiled.expand(params) for params in many]
        sql = expanded[0][0]
        cursor, driver_error = (
            compiled.cursor(connection.connection.driver_connection),
            dialect.loaded_dbapi.Error,
        )
        try:
            cursor.executemany(sql, [parameters for _, parameters in expanded])
        except driver_error as error:
            raise DBAPIError.instance(sql, many, error, driver_error, dialect=dialect) from error
        finally:
            cursor.close()
        return True


def _pipelined(driver: Any) -> bool:
    """Whether a driver connection is in psycopg's pipeline mode (sqlite3 has none)."""
    pgconn = getattr(driver, "pgconn", None)
    return pgconn is not None and pgconn.pipeline_status != 0  # psycopg.pq.PipelineStatus.OFF


class Pending:
    """A started statement (`Prepared.start`): its rows, read on the first call to `rows()`."""

    def __init__(self, compiled: _Compiled, sql: str, parameters: Any, dialect: Dialect, cursor: Any) -> None:
        self.compiled, self.sql, self.parameters, self.dialect = compiled, sql, parameters, dialect
        self.cursor: Any = cursor
        self.result: Rows | None = None

    def rows(self) -> Rows:
        if self.result is None:
            error_type = self.dialect.loaded_dbapi.Error
            try:
                raw = self.cursor.fetchall() if self.compiled.row_type is not None else []
            except error_type as error:
                raise DBAPIError.instance(
                    self.sql, self.parameters, error, error_type, dialect=self.dialect
                ) from error
            finally:
                self.close()
            self.result = Rows(self.compiled.rows(raw))
        return self.result

    def close(self) -> None:
        if self.cursor is not None:
            self.cursor.close()
            self.cursor = None


def _connection(session: Session) -> Connection:
    """The session's connection in its current transaction (beginning one when there is none).

    Remembered for the transaction: asking the session again costs more than most of these statements.
    """
    transaction = session.get_transaction()
    remembered = session.info.get("prepared_connection")
    if transaction is None or remembered is None or remembered[0] is not transaction:
        connection = session.connection()
        session.info["prepared_connection"] = (session.get_transaction(), connection)
        return connection
    return remembered[1]


# psycopg's own dialect, but compiling `$1` placeholders (SQLAlchemy's "numeric_dollar", as for
# asyncpg), by the engine's dialect: see `_Compiled`.
_numbered: dict[Dialect, Dialect] = {}


def _numbered_dialect(dialect: Dialect) -> Dialect:
    numbered = _numbered.get(dialect)
    if numbered is None:
        numbered = copy.copy(dialect)  # as initialised for the server: same types, features, casts
        numbered.paramstyle, numbered.positional = "numeric_dollar", True
        _numbered[dialect] = numbered
    return numbered


class _Compiled:
    """A statement compiled for one dialect (and, for an INSERT, one set of columns).

    On PostgreSQL through psycopg the SQL has numbered placeholders (`$1`) and runs on a `RawCursor`,
    which sends it as it is: a plain cursor rewrites `%(name)s` into `$1` on every execution, keeping
    the rewritten SQL only of statements under 4 kB, and the customer refresh's longest ones (reading
    several tables in one statement) are three times that.
    """

    def __init__(
        self, statement: Executable, dialect: Dialect, keys: list[str], *, many: bool = False
    ) -> None:
        self.raw = dialect.name == "postgresql" and dialect.driver == "psycopg"
        if self.raw:
            dialect = _numbered_dialect(dialect)
        # Columns an INSERT is not given take their Python-side defaults, as SQLAlchemy would fill them.
        self.defaults = {}
        if statement.is_insert:
            self.defaults = {
                column.key: column.default
                for column in statement.table.columns
                if column.default is not None and column.key not in keys
            }
            self.compiled = statement.compile(
                dialect=dialect, column_keys=[*keys, *self.defaults], for_executemany=many
            )
        else:
            self.compiled = statement.compile(dialect=dialect, for_executemany=many)
        self.positional = self.compiled.positional
        # Only a statement with IN lists needs its SQL rewritten per execution, and the rewritten SQL
        # depends only on the lists' lengths: it is kept per lengths (see _expand_lists).
        self.expands = bool(self.compiled.post_compile_params or self.compiled.literal_execute_params)
        late = self.compiled.post_compile_params | self.compiled.literal_execute_params
        self.lists = sorted({self.compiled.bind_names[p] for p in late if p.expanding})
        self.lists_only = self.expands and all(p.expanding for p in late)
        self.expansions: dict[tuple[int, ...], tuple[str, Sequence[str] | None, dict]] = {}
        # Only the parameters that have a conversion (most have none).
        self.bind_processors = {
            name: process for name, process in self.compiled._bind_processors.items() if process is not None
        }
        columns = self.compiled._result_columns  # (key, name, objects, type) of each returned column
        self.row_type = namedtuple("Row", [c[0] for c in columns]) if columns else None
        self.result_processors = [c[3]._cached_result_processor(dialect, None) for c in columns]
        # (position, conversion) of the columns that have one: a wide row (several tables read
        # together, handlers.sales_view.TablesTogether) has a few among dozens of columns.
        self.converted = [(i, process) for i, process in enumerate(self.result_processors) if process]

    def cursor(self, driver: Any) -> Any:
        if self.raw:
            from psycopg import RawCursor

            return RawCursor(driver)
        return driver.cursor()

    def expand(self, params: dict[str, Any]) -> tuple[str, Any]:
        """The SQL with IN lists expanded, and its parameters converted as SQLAlchemy would."""
        if self.defaults:
            params = {**params}
            for key, default in self.defaults.items():
                params[key] = default.arg(None) if default.is_callable else default.arg
        if self.expands:
            sql, values, positions, extra_processors = self._expand_lists(params)
        else:
            sql, values = self.compiled.string, self.compiled.construct_params(params)
            positions, extra_processors = self.compiled.positiontup, {}
        for processors in (self.bind_processors, extra_processors):
            for name, process in processors.items():
                if name in values and process is not None:
                    values[name] = process(values[name])
        if self.positional:
            return sql, tuple(values[name] for name in positions)
        return sql, values

    def _expand_lists(self, params: dict[str, Any]) -> tuple[str, dict, Sequence[str] | None, dict]:
        # The lists' values as SQLAlchemy binds them: the caller's, or constants built into the statement.
        values = self.compiled.construct_params(params)
        lengths = tuple(len(values[name]) for name in self.lists) if self.lists_only else None
        known = self.expansions.get(lengths) if lengths is not None else None
        if known is not None:
            sql, positions, processors = known
            return sql, self._spread(values), positions, processors
        state = self.compiled.construct_expanded_state(params)
        # Keep this expansion only if spreading the lists ourselves gives exactly SQLAlchemy's values.
        if lengths is not None and self._spread(values) == state.parameters:
            self.expansions[lengths] = (state.statement, state.positiontup, state.processors)
        # state.processors: those of the parameters an IN list became
        return state.statement, state.parameters, state.positiontup, state.processors

    def _spread(self, values: dict[str, Any]) -> dict[str, Any]:
        """Each IN list's items as the parameters SQLAlchemy names them: name_1, name_2, ..."""
        for name in self.lists:
            values.update((f"{name}_{i}", item) for i, item in enumerate(values.pop(name), start=1))
        return values

    def rows(self, raw: Sequence[tuple]) -> list[tuple]:
        if self.row_type is None:
            return []
        make, converted = self.row_type._make, self.converted
        if not converted:
            return [make(row) for row in raw]
        rows = []
        for row in raw:
            values = list(row)
            for i, process in converted:
                values[i] = process(values[i])
            rows.append(make(values))
        return rows


class Rows:
    """The slice of SQLAlchemy's `Result` interface the hot path uses."""

    def __init__(self, rows: list[tuple]) -> None:
        self._rows = rows

    def __iter__(self) -> Iterator[tuple]:
        return iter(self._rows)

    def all(self) -> list[tuple]:
        return self._rows

    def first(self) -> tuple | None:
        return self._rows[0] if self._rows else None

    def scalars(self) -> Rows:
        return Rows([row[0] for row in self._rows])

    def scalar_one(self) -> Any:
        if len(self._rows) != 1:
            raise LookupError(f"expected exactly one row, got {len(self._rows)}")
        return self._rows[0][0] if isinstance(self._rows[0], tuple) else self._rows[0]
