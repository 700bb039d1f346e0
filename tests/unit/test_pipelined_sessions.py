"""The worker's pipelined transactions and the pool's ping after idleness (models/db.py).

On SQLite `session(pipelined=True)` is an ordinary session; these tests mean something on PostgreSQL
(TEST_DATABASE_URL), where the transaction runs in psycopg's pipeline mode with BEGIN and COMMIT queued.
They pin what the event path relies on: queued writes are applied in order and seen by later reads,
an error in a queued statement surfaces at the next read and rolls back everything, a Python error
rolls back what was queued, and the connection goes back to the pool usable (not in autocommit).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from models import Charge, Database, Event, insert_ignore, upsert_newer
from models.db import execute


def _charge(charge_id: str, amount: int = 100) -> dict:
    return {
        "id": charge_id,
        "account": "",
        "amount": amount,
        "amount_refunded": 0,
        "currency": "usd",
        "status": "succeeded",
        "version": 1,
        "updated_at": datetime.now(UTC),
    }


def _event_row(event_id: str) -> dict:
    now = datetime.now(UTC)
    return {
        "id": event_id,
        "account": "",
        "type": "charge.succeeded",
        "api_version": "2024-06-20",
        "livemode": False,
        "attempts": 0,
        "created": now,
        "payload": "{}",
        "status": "received",
        "received_at": now,
        "updated_at": now,
    }


def _amounts(db: Database) -> dict[str, int]:
    with db.session() as session:
        rows = session.connection().execute(select(Charge.__table__.c.id, Charge.__table__.c.amount))
        return dict(rows.all())


def _autocommit_of_pooled(db: Database) -> bool | None:
    with db.engine.connect() as connection:
        driver = connection.connection.driver_connection
        return getattr(driver, "autocommit", None)


def test_queued_writes_are_applied_in_order_and_read_back_within_the_transaction(db: Database):
    with db.session(pipelined=True) as session:
        upsert_newer(session, Charge, _charge("ch_p1", 100))
        upsert_newer(session, Charge, {**_charge("ch_p1", 250), "version": 2})  # queued after the first
        assert insert_ignore(session, Event, _event_row("evt_p1")) is True  # reads: collects both
        seen = session.connection().execute(select(Charge.__table__.c.amount)).scalar_one()  # SQLAlchemy's
        assert seen == 250

    assert _amounts(db) == {"ch_p1": 250}
    assert _autocommit_of_pooled(db) in (False, None)


def test_an_error_in_a_queued_write_surfaces_at_the_next_read_and_nothing_is_committed(db: Database):
    with db.session() as session:
        insert_ignore(session, Event, _event_row("evt_p2"))

    with pytest.raises(DBAPIError) as raised, db.session(pipelined=True) as session:
        upsert_newer(session, Charge, _charge("ch_p2"))
        # A plain INSERT of an existing key fails on the server; with nothing to read it is only queued.
        execute(session, _plain_event_insert(), _event_row("evt_p2"))
        execute(session, _plain_event_insert(), _event_row("evt_p3"))
        execute(session, _count_events(), {}).first()  # the next read: the error comes out here

    assert isinstance(raised.value, IntegrityError)
    assert "duplicate key" in str(raised.value.orig) or "UNIQUE" in str(raised.value.orig)
    assert _amounts(db) == {}
    with db.session() as session:
        assert execute(session, _count_events(), {}).first()[0] == 1
    assert _autocommit_of_pooled(db) in (False, None)


def test_a_connection_lost_inside_a_pipelined_session_raises_the_loss_and_is_replaced(db: Database):
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL's pool")
    own = Database(db.engine.url.render_as_string(hide_password=False))
    try:
        with pytest.raises(DBAPIError) as raised, own.session(pipelined=True) as session:
            upsert_newer(session, Charge, _charge("ch_lost"))
            session.connection().execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        assert raised.value.connection_invalidated or "terminat" in str(raised.value)
        with own.session(pipelined=True) as session:  # a new connection, in a normal state
            assert session.connection().execute(text("SELECT 1")).scalar() == 1
        assert _amounts(db) == {}
    finally:
        own.dispose()


def test_a_python_error_rolls_back_the_queued_writes(db: Database):
    with pytest.raises(RuntimeError), db.session(pipelined=True) as session:
        upsert_newer(session, Charge, _charge("ch_p4"))
        raise RuntimeError("the handler failed")

    assert _amounts(db) == {}
    with db.session(pipelined=True) as session:  # the pooled connection is fine afterwards
        upsert_newer(session, Charge, _charge("ch_p5"))
    assert _amounts(db) == {"ch_p5": 100}


def test_an_error_at_commit_is_raised_as_sqlalchemy_raises_it(db: Database):
    if db.dialect != "postgresql":
        pytest.skip("deferred constraints: PostgreSQL")
    with pytest.raises(IntegrityError), db.session(pipelined=True) as session:
        session.connection().execute(
            text("CREATE TEMPORARY TABLE pipelined_deferred (id int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
        )
        execute(session, _temporary_insert(), {"id": 1})
        execute(session, _temporary_insert(), {"id": 1})  # fails only at COMMIT

    assert _autocommit_of_pooled(db) in (False, None)


def test_a_connection_the_server_dropped_while_idle_is_replaced_before_use(db: Database):
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL's pool")
    own = Database(db.engine.url.render_as_string(hide_password=False))  # a pool of one connection
    try:
        with own.session() as session:
            pid = session.connection().execute(text("SELECT pg_backend_pid()")).scalar_one()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            gone = text("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = :pid")
            deadline = time.monotonic() + 10
            while not other.execute(gone, {"pid": pid}).scalar() and time.monotonic() < deadline:
                time.sleep(0.01)  # the backend has exited (and closed its socket) once it is not listed
        # The terminated connection is back in the pool and was used a moment ago: the server's notice
        # of its end is what its checkout notices (models.db._has_input), so it is pinged, fails and is
        # replaced, and the session never sees it.
        with own.session(pipelined=True) as session:
            pid_again = session.connection().execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert pid_again != pid
    finally:
        own.dispose()


def _plain_event_insert():
    from sqlalchemy import insert

    from models.prepared import Prepared

    return Prepared(insert(Event.__table__))


def _count_events():
    from sqlalchemy import func

    from models.prepared import Prepared

    return Prepared(select(func.count()).select_from(Event.__table__))


def _temporary_insert():
    from models.prepared import Prepared

    return Prepared(text("INSERT INTO pipelined_deferred (id) VALUES (:id)"))
