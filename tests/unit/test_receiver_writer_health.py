"""A failed write must not outlive its cause: the receiver recovers by itself, and /readyz tells the truth.

A SQLite connection opened while the file was read-only stays read-only. The receiver kept such a
connection in its pool and answered 503 to every webhook after the file was writable again, while
/readyz said ready. Here connections opened while a switch is on are opened read-only
(`file:...?mode=ro`): SQLite then behaves as with a read-only file (reads and even BEGIN IMMEDIATE work,
every write fails with "attempt to write a readonly database"), and it needs no root or file modes. The
integration test `tests/integration/test_receiver_readonly.py` makes the real file read-only.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import event as sa_event
from sqlmodel import select
from starlette.testclient import TestClient

from models import Database, Event
from tests.stripe_fixtures import TEST_SECRET, charge, event, signed
from tests.unit.test_receiver import RecordingQueue
from worker.receiver.web import create_app


class ReadOnlySwitch:
    """Connections opened while `on` are opened read-only, as SQLite opens a file it may not write."""

    def __init__(self, db: Database, path: str) -> None:
        self.on = False
        self.opened = 0
        self.path = path
        sa_event.listen(db.engine, "do_connect", self._connect)

    def _connect(self, _dialect, _record, cargs, cparams):
        self.opened += 1
        if not self.on:
            return None  # SQLAlchemy connects as usual
        options = {key: value for key, value in cparams.items() if key not in ("database", "uri")}
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, **options)


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "receiver.db")


@pytest.fixture
def file_db(db_path):
    """A file-backed SQLite database: a real connection pool, as the `web` process has."""
    database = Database(f"sqlite:///{db_path}")
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
def switch(file_db, db_path):
    return ReadOnlySwitch(file_db, db_path)


@pytest.fixture
def app(file_db):
    return create_app(db=file_db, enqueue=RecordingQueue(), secrets=[TEST_SECRET])


def post(client: TestClient, event_id: str):
    body, headers = signed(event("charge.succeeded", charge(), event_id=event_id))
    return client.post("/webhooks/stripe", content=body, headers=headers)


def stored_ids(db: Database) -> list[str]:
    with db.session() as session:
        return [row.id for row in session.exec(select(Event)).all()]


def start_read_only(db: Database, switch: ReadOnlySwitch) -> None:
    """Every connection the pool holds now was opened while the database was read-only."""
    db.engine.dispose()
    switch.on = True


def test_after_the_database_is_writable_again_the_next_webhook_is_stored_without_a_restart(
    file_db, switch, app
):
    client = TestClient(app)
    start_read_only(file_db, switch)

    refused = post(client, "evt_while_read_only")
    assert (refused.status_code, refused.json()) == (503, {"error": "database unavailable, retry later"})

    switch.on = False  # the disk is fixed; nobody restarts the receiver
    retried = post(client, "evt_while_read_only")  # Stripe's retry

    assert retried.status_code == 200, retried.text
    assert stored_ids(file_db) == ["evt_while_read_only"]


def test_readyz_is_503_with_a_one_line_reason_while_writes_fail_and_200_once_they_work(file_db, switch, app):
    client = TestClient(app)
    assert client.get("/readyz").status_code == 200
    start_read_only(file_db, switch)

    down = client.get("/readyz")  # no webhook has failed yet: readiness finds out by itself

    assert down.status_code == 503, down.text
    assert down.json()["status"] == "down"
    assert down.json()["database"] == "ok"  # reads still work: a read check alone says ready
    reason = down.json()["reason"]
    assert "readonly" in reason and "\n" not in reason and len(reason) < 200

    switch.on = False
    up = client.get("/readyz")
    assert (up.status_code, up.json()["status"]) == (200, "ready"), up.text
    assert stored_ids(file_db) == []  # the write probe leaves nothing behind


def test_the_writer_reports_its_last_outcome_for_readiness_and_metrics(file_db, switch, app):
    client = TestClient(app)
    writer = app.writer
    assert app.app.state.event_writer is writer
    assert (writer.writer_healthy, writer.last_write_error) == (True, None)

    start_read_only(file_db, switch)
    assert post(client, "evt_health").status_code == 503
    assert writer.writer_healthy is False
    assert "attempt to write a readonly database" in writer.last_write_error

    switch.on = False
    assert post(client, "evt_health").status_code == 200
    assert (writer.writer_healthy, writer.last_write_error) == (True, None)


def test_a_connection_another_thread_held_when_a_write_failed_is_closed_when_it_comes_back(
    file_db, switch, app
):
    client = TestClient(app)
    start_read_only(file_db, switch)
    held = file_db.engine.raw_connection()  # e.g. a metrics scrape, busy while the write fails
    dbapi_connection = held.driver_connection

    assert post(client, "evt_straggler").status_code == 503
    held.close()  # given back to the pool after the failure

    with pytest.raises(sqlite3.ProgrammingError):
        dbapi_connection.execute("SELECT 1")  # closed, not pooled: it would keep the file read-only
    switch.on = False
    assert post(client, "evt_straggler").status_code == 200


def test_a_healthy_writer_does_not_reopen_connections(file_db, switch, app):
    client = TestClient(app)
    assert post(client, "evt_warm").status_code == 200
    opened = switch.opened
    for index in range(5):
        assert post(client, f"evt_pooled_{index}").status_code == 200
        assert client.get("/readyz").status_code == 200
    assert switch.opened == opened


def test_readyz_waits_for_a_busy_writer_only_so_long(file_db, app, monkeypatch):
    from worker.receiver import event_writer

    release = threading.Event()
    original = event_writer.EventWriter._probe

    def stuck(self):
        release.wait(5)
        return original(self)

    monkeypatch.setattr(event_writer, "READINESS_PROBE_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(event_writer.EventWriter, "_probe", stuck)
    try:
        response = TestClient(app).get("/readyz")
    finally:
        release.set()
    assert response.status_code == 503
    assert "did not answer within" in response.json()["reason"]


def test_metrics_say_the_database_is_down_while_the_receiver_cannot_write_and_up_once_it_can(
    file_db, switch, app
):
    def database_up(client: TestClient) -> str:
        page = client.get("/metrics").text
        return next(
            line.split()[-1] for line in page.splitlines() if line.startswith("stripe_worker_database_up")
        )

    client = TestClient(app)
    assert float(database_up(client)) == 1
    start_read_only(file_db, switch)
    assert post(client, "evt_ro").status_code == 503
    assert float(database_up(client)) == 0  # reads still work; the receiver cannot commit
    switch.on = False
    assert post(client, "evt_ro").status_code == 200
    assert float(database_up(client)) == 1
