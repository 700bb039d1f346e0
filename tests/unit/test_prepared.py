"""Prepared statements (models/prepared.py) store and read exactly what SQLAlchemy itself would;
SQLite's write lock fails a transaction as SQLAlchemy reports it."""

import sqlite3
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, func, insert, select, text, union
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

import models.db
from models import Alert, Charge, Customer, Database
from models.db import execute
from models.prepared import Prepared

CUSTOMERS = Customer.__table__
CHARGES = Charge.__table__
ALERTS = Alert.__table__
WHEN = datetime(2026, 11, 22, 7, 30, 15, 123456, tzinfo=UTC)

INSERT_CUSTOMER = Prepared(insert(CUSTOMERS))
CUSTOMERS_BY_EMAIL = Prepared(
    select(CUSTOMERS).where(CUSTOMERS.c.email.in_(bindparam("emails", expanding=True))).order_by("email")
)


def charge_row(charge_id: str, **changes) -> dict:
    row = {
        "id": charge_id,
        "amount": 4_700,
        "amount_refunded": 0,
        "currency": "jpy",
        "status": "succeeded",
        "paid": True,
        "created": WHEN,
        "version": 1,
        "updated_at": WHEN,
    }
    return {**row, **changes}


def test_a_row_written_through_a_prepared_insert_is_stored_as_sqlalchemy_stores_it(db):
    with db.session() as session:
        session.connection().execute(insert(CUSTOMERS), {"email": "orm@example.com", "created_at": WHEN})
        execute(session, INSERT_CUSTOMER, {"email": "prepared@example.com", "created_at": WHEN})

    with db.session() as session:
        stored = session.connection().exec_driver_sql("SELECT email, created_at FROM customers").all()
    by_email = dict(stored)
    # Byte for byte the same stored value (SQLite keeps datetimes as text, so its format matters).
    assert by_email["prepared@example.com"] == by_email["orm@example.com"]


def test_a_prepared_select_hands_back_the_values_sqlalchemy_does(db):
    with db.session() as session:
        session.connection().execute(insert(CHARGES), [charge_row("ch_1"), charge_row("ch_2", paid=False)])

    statement = select(CHARGES).where(CHARGES.c.id.in_(bindparam("ids", expanding=True))).order_by("id")
    with db.session() as session:
        expected = session.connection().execute(statement, {"ids": ["ch_1", "ch_2"]}).all()
        rows = execute(session, Prepared(statement), {"ids": ["ch_1", "ch_2"]}).all()

    assert [tuple(r) for r in rows] == [tuple(r) for r in expected]
    assert rows[0].created == WHEN  # aware UTC, as UTCDateTime hands back
    assert (rows[0].paid, rows[1].paid) == (True, False)  # booleans, not SQLite's 1 and 0


@pytest.mark.parametrize(
    "emails", [[], ["b@example.com"], ["a@example.com", "c@example.com", "z@example.com"]]
)
def test_an_in_list_of_any_length_matches_what_it_names(db, emails):
    with db.session() as session:
        for email in ("a@example.com", "b@example.com", "c@example.com"):
            execute(session, INSERT_CUSTOMER, {"email": email, "created_at": WHEN})

    with db.session() as session:
        found = [row.email for row in execute(session, CUSTOMERS_BY_EMAIL, {"emails": emails})]

    assert found == sorted(e for e in emails if e != "z@example.com")


def test_an_in_list_used_twice_and_run_again_with_new_items_finds_the_new_items(db):
    emails = bindparam("emails", expanding=True)
    either = Prepared(
        union(
            select(CUSTOMERS.c.email).where(CUSTOMERS.c.email.in_(emails)),
            select(CUSTOMERS.c.email).where(func.upper(CUSTOMERS.c.email).in_(emails)),
        )
    )
    with db.session() as session:
        for email in ("a@example.com", "b@example.com", "c@example.com"):
            execute(session, INSERT_CUSTOMER, {"email": email, "created_at": WHEN})

    with db.session() as session:
        # Same lengths each time: the second and third runs reuse the first one's SQL.
        runs = [["a@example.com", "B@EXAMPLE.COM"], ["c@example.com", "x@example.com"], ["b@example.com"] * 2]
        found = [sorted(execute(session, either, {"emails": run}).scalars().all()) for run in runs]

    assert found == [["a@example.com", "b@example.com"], ["c@example.com"], ["b@example.com"]]


def test_columns_an_insert_is_not_given_take_their_defaults(db):
    values = {
        "key": "access_revocation:re_1",
        "kind": "access_revocation",
        "message": "refund of a duplicate purchase",
    }
    with db.session() as session:
        [returned] = execute(session, Prepared(insert(ALERTS).returning(ALERTS.c.id)), values).all()

    with db.session() as session:
        alert = session.get(Alert, returned.id)
    assert (alert.status, alert.delivery_status, alert.delivery_attempts) == ("open", "pending", 0)
    assert alert.created_at.tzinfo is not None


def test_a_driver_error_is_raised_as_sqlalchemy_raises_it_and_nothing_is_kept(db):
    with pytest.raises(IntegrityError), db.session() as session:
        execute(session, INSERT_CUSTOMER, {"email": "kept@example.com", "created_at": WHEN})
        execute(session, INSERT_CUSTOMER, {"email": "kept@example.com", "created_at": WHEN})  # same key

    with db.session() as session:
        assert execute(session, CUSTOMERS_BY_EMAIL, {"emails": ["kept@example.com"]}).all() == []


def test_a_statement_without_result_columns_returns_no_rows(db):
    with db.session() as session:
        execute(session, INSERT_CUSTOMER, {"email": "a@example.com", "created_at": WHEN})
        result = execute(
            session,
            Prepared(text("UPDATE customers SET email = :new WHERE email = :old")),
            {"new": "b@example.com", "old": "a@example.com"},
        )
        assert result.all() == [] and result.first() is None

    with db.session() as session:
        assert execute(session, CUSTOMERS_BY_EMAIL, {"emails": ["b@example.com"]}).scalars().all() == [
            "b@example.com"
        ]


def test_a_session_used_again_after_a_commit_runs_in_its_new_transaction(db):
    with Session(db.engine) as session:
        execute(session, INSERT_CUSTOMER, {"email": "committed@example.com", "created_at": WHEN})
        session.commit()
        execute(session, INSERT_CUSTOMER, {"email": "rolled.back@example.com", "created_at": WHEN})
        session.rollback()

    with db.session() as session:
        emails = ["committed@example.com", "rolled.back@example.com"]
        assert execute(session, CUSTOMERS_BY_EMAIL, {"emails": emails}).scalars().all() == [
            "committed@example.com"
        ]


# --- SQLite's write lock, as the worker's threads and other processes meet it ------------------------


@pytest.fixture
def sqlite_file_db(tmp_path, monkeypatch):
    monkeypatch.setattr(models.db, "SQLITE_BUSY_TIMEOUT_SECONDS", 0.2)
    database = Database(f"sqlite:///{tmp_path / 'locked.db'}")
    database.create_all()
    yield database
    database.dispose()


def test_a_write_lock_held_by_another_process_fails_the_transaction_as_sqlalchemy_reports_it(
    sqlite_file_db, tmp_path
):
    other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError, match="database is locked"), sqlite_file_db.session() as session:
            execute(session, INSERT_CUSTOMER, {"email": "late@example.com", "created_at": WHEN})
    finally:
        other.execute("ROLLBACK")
        other.close()

    with sqlite_file_db.session() as session:
        assert execute(session, CUSTOMERS_BY_EMAIL, {"emails": ["late@example.com"]}).all() == []


def test_a_thread_that_cannot_get_its_turn_gets_the_same_error_and_writes_nothing(sqlite_file_db):
    holding, release = threading.Event(), threading.Event()

    def hold_a_transaction() -> None:
        with sqlite_file_db.session() as session:
            execute(session, INSERT_CUSTOMER, {"email": "first@example.com", "created_at": WHEN})
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold_a_transaction)
    holder.start()
    try:
        assert holding.wait(5)
        with pytest.raises(OperationalError, match="database is locked"), sqlite_file_db.session() as session:
            execute(session, INSERT_CUSTOMER, {"email": "second@example.com", "created_at": WHEN})
    finally:
        release.set()
        holder.join(5)

    with sqlite_file_db.session() as session:
        emails = ["first@example.com", "second@example.com"]
        assert execute(session, CUSTOMERS_BY_EMAIL, {"emails": emails}).scalars().all() == [
            "first@example.com"
        ]


def test_the_sqlalchemy_internals_prepared_statements_read_are_still_there():
    """models/prepared.py reads SQLAlchemy's compiled-statement internals; pyproject pins SQLAlchemy
    exactly. An upgrade that moves any of them fails here, by name, before it can mis-bind a value."""
    import sqlalchemy
    from sqlalchemy import Integer, bindparam, column, select, table
    from sqlalchemy.dialects import sqlite

    assert sqlalchemy.__version__ == "2.1.9", (
        "re-check models/prepared.py against this SQLAlchemy, then re-pin"
    )
    example = table("t", column("id", Integer), column("email"))
    statement = select(example.c.id).where(example.c.email.in_(bindparam("ids", expanding=True)))
    compiled = statement.compile(dialect=sqlite.dialect())
    for name in (
        "_bind_processors",
        "_result_columns",
        "post_compile_params",
        "literal_execute_params",
        "bind_names",
        "positional",
        "positiontup",
        "string",
        "construct_params",
        "construct_expanded_state",
    ):
        assert hasattr(compiled, name), f"SQLAlchemy's compiled statements lost {name}"
    state = compiled.construct_expanded_state({"ids": ["a", "b"]})
    for name in ("statement", "parameters", "positiontup", "processors"):
        assert hasattr(state, name), f"SQLAlchemy's expanded state lost {name}"
    assert state.parameters == {"ids_1": "a", "ids_2": "b"}
    key, name, objects, type_ = compiled._result_columns[0]
    assert name == "id" and hasattr(type_, "_cached_result_processor")
