"""Unit tests run on Dramatiq's StubBroker and in-memory SQLite; nothing here touches the network.

With TEST_DATABASE_URL set (scripts/test.sh sets it for the PostgreSQL leg) every `db` is that
database instead: its tables are created once per session and emptied before each test.
"""

from __future__ import annotations

import os

# Before any worker module is imported: the broker is chosen once, at import.
os.environ["BROKER"] = "stub"
for _name in (
    "STRIPE_API_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "DATABASE_URL",
    "REDIS_URL",
    "DEV_MODE",
    "FUNNEL_WEBHOOK_TOKEN",
    "ALERT_WEBHOOK_URL",
):
    os.environ.pop(_name, None)
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")

import dramatiq  # noqa: E402
import pytest  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402

from models import Database  # noqa: E402


def empty_tables(database: Database) -> None:
    """Remove every row (and reset ids) so the next test starts from nothing."""
    tables = [table.name for table in SQLModel.metadata.sorted_tables]
    with database.engine.begin() as connection:
        if database.dialect == "postgresql":
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in reversed(tables):
                connection.execute(text(f"DELETE FROM {name}"))


@pytest.fixture(scope="session")
def _shared_database():
    if not TEST_DATABASE_URL:
        yield None
        return
    database = Database(TEST_DATABASE_URL)
    import models  # noqa: F401  (every table on the metadata)

    with database.engine.begin() as connection:
        SQLModel.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
def db(_shared_database) -> Database:
    if _shared_database is not None:
        empty_tables(_shared_database)
        yield _shared_database
        return
    database = Database("sqlite://")
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
def stub_broker():
    from worker.jobs.broker import broker

    broker.flush_all()
    yield broker
    broker.flush_all()


@pytest.fixture
def stub_worker(stub_broker):
    # One thread: the in-memory database is a single shared connection.
    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=1)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def worker_db(db, monkeypatch) -> Database:
    """The test database, used by the actors as if it were the process's own."""
    from worker import runtime

    monkeypatch.setattr(runtime, "database", lambda: db)
    return db
