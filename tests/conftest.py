"""Unit tests run on Dramatiq's StubBroker and in-memory SQLite; nothing here touches the network."""

from __future__ import annotations

import os

# Before any worker module is imported: the broker is chosen once, at import.
os.environ["BROKER"] = "stub"
for _name in ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "DATABASE_URL", "REDIS_URL", "DEV_MODE"):
    os.environ.pop(_name, None)

import dramatiq  # noqa: E402
import pytest  # noqa: E402

from models import Database  # noqa: E402


@pytest.fixture
def db() -> Database:
    database = Database("sqlite://")
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
def stub_broker():
    from worker.broker import broker

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
