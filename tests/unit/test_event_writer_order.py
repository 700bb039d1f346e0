"""What a sender and the worker see of the receiver's writer (group commit, then enqueue, then answer).

An event is committed before its message is in the queue, and its message is in the queue before the
sender gets its 200 (the worker and callers rely on both). A batch whose commit fails is answered 503
and nothing of it is enqueued; a failed enqueue still answers 200 (the sweeper enqueues it later);
stopping the receiver answers the webhook it is writing; concurrent webhooks are each stored and
enqueued once. The queue here can be held shut, to catch a batch between its commit and its enqueue.

Runs on file-backed SQLite (a second connection sees only what was committed), or on the PostgreSQL
database of TEST_DATABASE_URL.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from models import Database
from tests.stripe_fixtures import TEST_SECRET, charge, event, signed
from worker.receiver.event_writer import EventWriter
from worker.receiver.web import create_app

# Only a bound on how long a broken build may hang a test; nothing is timed.
WAIT = 30.0


class HeldQueue:
    """A Redis stand-in for `enqueue_many`: records each call, and can be held shut until released.

    On every call it also notes which of the events were committed at that moment, read through
    another connection.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.calls: list[list[tuple[str, str]]] = []
        self.committed_when_enqueued: list[list[str]] = []
        self.fail = False
        self.entered = threading.Event()  # set when a call is waiting at the gate
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    @property
    def sent(self) -> list[tuple[str, str]]:
        return [key for call in self.calls for key in call]

    def __call__(self, keys: list[tuple[str, str]]) -> None:
        committed = committed_ids(self.db, [event_id for event_id, _ in keys])
        self.entered.set()
        assert self._open.wait(WAIT), "the test never released the queue"
        if self.fail:
            raise ConnectionError("redis is down")
        with self._lock:
            self.calls.append(list(keys))
            self.committed_when_enqueued.append(committed)


def committed_ids(db: Database, ids: list[str]) -> list[str]:
    with db.engine.connect() as connection:
        rows = connection.execute(text("SELECT id FROM events")).all()
    stored = {row[0] for row in rows}
    return [event_id for event_id in ids if event_id in stored]


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.01)


@pytest.fixture
def committed_db(db, tmp_path):
    """A database where another connection sees only committed rows (not one shared connection)."""
    if db.dialect == "postgresql":
        yield db
        return
    database = Database(f"sqlite:///{tmp_path / 'receiver.db'}")
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
def redis_queue(committed_db):
    queue = HeldQueue(committed_db)
    yield queue
    queue.release()  # a failed test must not leave the writer's thread at the gate


@pytest.fixture
def app(committed_db, redis_queue):
    return create_app(
        db=committed_db, enqueue=lambda *_: None, enqueue_many=redis_queue, secrets=[TEST_SECRET]
    )


def webhook(event_id: str) -> tuple[bytes, dict]:
    return signed(event("charge.succeeded", charge(), event_id=event_id))


def post(client: TestClient, event_id: str) -> httpx.Response:
    body, headers = webhook(event_id)
    return client.post("/webhooks/stripe", content=body, headers=headers)


def test_an_event_is_committed_before_it_is_enqueued_and_enqueued_before_it_is_answered(
    app, committed_db, redis_queue
):
    client = TestClient(app)
    redis_queue.hold()
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post, client, "evt_order")
        assert redis_queue.entered.wait(WAIT)

        assert committed_ids(committed_db, ["evt_order"]) == ["evt_order"]  # committed...
        assert not answer.done()  # ...and not answered while its enqueue has not happened
        redis_queue.release()

        assert answer.result(WAIT).status_code == 200
    assert redis_queue.sent == [("evt_order", "")]
    assert redis_queue.committed_when_enqueued == [["evt_order"]]


def test_a_batch_whose_commit_fails_is_answered_503_and_nothing_of_it_is_enqueued(
    app, committed_db, redis_queue, monkeypatch
):
    client = TestClient(app)
    redis_queue.hold()
    store = EventWriter._store

    def fail_for_doomed(self, batch):
        if any(pending.event.id == "evt_doomed" for pending in batch):
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))
        return store(self, batch)

    monkeypatch.setattr(EventWriter, "_store", fail_for_doomed)
    with ThreadPoolExecutor(2) as pool:
        kept = pool.submit(post, client, "evt_kept")
        assert redis_queue.entered.wait(WAIT)  # this one waits on Redis; the next one's commit fails
        doomed = pool.submit(post, client, "evt_doomed")
        redis_queue.release()
        assert kept.result(WAIT).status_code == 200
        answer = doomed.result(WAIT)
        assert (answer.status_code, answer.json()) == (503, {"error": "database unavailable, retry later"})

    assert redis_queue.sent == [("evt_kept", "")]
    assert committed_ids(committed_db, ["evt_kept", "evt_doomed"]) == ["evt_kept"]
    assert app.writer.writer_healthy is False  # the last write failed: /readyz and metrics say so

    monkeypatch.setattr(EventWriter, "_store", store)
    retried = post(client, "evt_doomed")  # Stripe's retry, once the database is back
    assert retried.status_code == 200
    assert redis_queue.sent == [("evt_kept", ""), ("evt_doomed", "")]
    assert app.writer.writer_healthy is True


def test_when_the_enqueue_fails_the_event_is_stored_and_answered_200_and_the_next_one_is_enqueued(
    app, committed_db, redis_queue
):
    client = TestClient(app)
    redis_queue.fail = True
    response = post(client, "evt_redis_down")
    assert response.json() == {"received": True, "duplicate": False}
    assert redis_queue.sent == []
    assert committed_ids(committed_db, ["evt_redis_down"]) == ["evt_redis_down"]  # the sweeper's job now
    assert app.writer.writer_healthy is True  # the database is fine

    redis_queue.fail = False
    assert post(client, "evt_redis_back").status_code == 200
    assert redis_queue.sent == [("evt_redis_back", "")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_stopping_the_receiver_answers_the_webhook_it_is_writing_after_storing_and_enqueueing_it(
    app, committed_db, redis_queue
):
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    wait_until(lambda: server.started, "the server to start")
    url = f"http://127.0.0.1:{port}/webhooks/stripe"

    def send(event_id: str) -> httpx.Response:
        body, headers = webhook(event_id)
        return httpx.post(url, content=body, headers=headers, timeout=WAIT)

    redis_queue.hold()
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(send, "evt_stop")
        assert redis_queue.entered.wait(WAIT)  # committed, waiting on Redis...
        server.should_exit = True  # ...when the receiver is told to stop (SIGTERM)
        redis_queue.release()
        answer = in_flight.result(WAIT)
    serving.join(WAIT)

    assert not serving.is_alive()
    assert (answer.status_code, answer.json()) == (200, {"received": True, "duplicate": False})
    assert redis_queue.sent == [("evt_stop", "")]
    assert committed_ids(committed_db, ["evt_stop"]) == ["evt_stop"]


def test_concurrent_webhooks_are_each_stored_and_enqueued_once_and_duplicates_are_answered_as_such(
    app, committed_db, redis_queue
):
    client = TestClient(app)
    ids = [f"evt_many_{n}" for n in range(120)]
    deliveries = ids + ids[::3]  # Stripe sends some twice, at the same time

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda event_id: (event_id, post(client, event_id)), deliveries))

    assert {response.status_code for _, response in answers} == {200}
    new = [event_id for event_id, response in answers if not response.json()["duplicate"]]
    assert sorted(new) == sorted(ids)  # each delivered id is new exactly once
    assert sorted(redis_queue.sent) == sorted((event_id, "") for event_id in ids)
    assert sorted(committed_ids(committed_db, ids)) == sorted(ids)
    for call, committed in zip(redis_queue.calls, redis_queue.committed_when_enqueued, strict=True):
        assert committed == [event_id for event_id, _ in call]  # every message's row was committed first
