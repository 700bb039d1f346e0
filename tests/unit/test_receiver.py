"""The receiver over HTTP (Starlette's test client), with a recording queue and in-memory SQLite."""

import json
import time

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import select
from starlette.testclient import TestClient

from models import Event, EventStatus
from tests.stripe_fixtures import TEST_SECRET, charge, event, signed
from worker.receiver.web import MissingWebhookSecret, create_app


class RecordingQueue:
    def __init__(self, fail: bool = False):
        self.sent: list[tuple[str, str]] = []
        self.fail = fail

    def __call__(self, event_id: str, account: str) -> None:
        if self.fail:
            raise ConnectionError("redis is down")
        self.sent.append((event_id, account))


@pytest.fixture
def queue():
    return RecordingQueue()


@pytest.fixture
def client(db, queue):
    app = create_app(db=db, enqueue=queue, secrets=[TEST_SECRET], max_body_bytes=64 * 1024)
    return TestClient(app)


def stored(db) -> list[Event]:
    with db.session() as session:
        return list(session.exec(select(Event)).all())


def test_a_signed_event_is_stored_as_received_and_enqueued_by_id(client, db, queue):
    body, headers = signed(event("charge.succeeded", charge(), event_id="evt_one"))
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False}
    [row] = stored(db)
    assert (row.id, row.type, row.status, row.attempts) == ("evt_one", "charge.succeeded", "received", 0)
    assert row.payload == body.decode()
    assert queue.sent == [("evt_one", "")]


def test_a_duplicate_delivery_is_answered_200_and_changes_nothing(client, db, queue):
    body, headers = signed(event("charge.succeeded", charge(), event_id="evt_dup"))
    first = client.post("/webhooks/stripe", content=body, headers=headers)
    again = client.post("/webhooks/stripe", content=body, headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == {"received": True, "duplicate": True}
    assert len(stored(db)) == 1
    assert queue.sent == [("evt_dup", "")]


def test_the_same_event_id_from_two_connect_accounts_is_two_rows(client, db, queue):
    for account in ("acct_one", "acct_two"):
        body, headers = signed(event("charge.succeeded", charge(), event_id="evt_same", account=account))
        assert client.post("/webhooks/stripe", content=body, headers=headers).status_code == 200
    assert sorted(row.account for row in stored(db)) == ["acct_one", "acct_two"]
    assert sorted(queue.sent) == [("evt_same", "acct_one"), ("evt_same", "acct_two")]


def test_an_event_type_without_a_handler_is_stored_as_ignored_and_not_enqueued(client, db, queue):
    body, headers = signed(event("customer.created", {"id": "cus_1", "object": "customer"}))
    assert client.post("/webhooks/stripe", content=body, headers=headers).status_code == 200
    assert [row.status for row in stored(db)] == [EventStatus.IGNORED]
    assert queue.sent == []


def _bad_requests():
    good = event("charge.succeeded", charge(), event_id="evt_bad")
    body, headers = signed(good)
    old_body, old_headers = signed(good, timestamp=int(time.time()) - 400)
    future_body, future_headers = signed(good, timestamp=int(time.time()) + 400)
    wrong_body, wrong_headers = signed(good, secret="whsec_someone_else")
    junk, junk_headers = b"{oops", {"Stripe-Signature": signed({}, TEST_SECRET)[1]["Stripe-Signature"]}
    not_event = json.dumps({"object": "charge", "id": "ch_1"}).encode()
    from worker.receiver.signature import sign

    return [
        ("missing signature", body, {"Content-Type": "application/json"}, "missing Stripe-Signature"),
        ("wrong secret", wrong_body, wrong_headers, "no signature matches"),
        ("tampered body", body.replace(b"5000", b"9000"), headers, "no signature matches"),
        ("old timestamp", old_body, old_headers, "tolerance"),
        ("future timestamp", future_body, future_headers, "tolerance"),
        ("malformed JSON", b"{oops", {"Stripe-Signature": sign(b"{oops", TEST_SECRET)}, "not valid JSON"),
        ("not an event", not_event, {"Stripe-Signature": sign(not_event, TEST_SECRET)}, "not a Stripe event"),
        ("signature of other body", junk, junk_headers, "no signature matches"),
    ]


@pytest.mark.parametrize("case", [bad[0] for bad in _bad_requests()])
def test_bad_input_gets_a_400_with_a_short_reason_and_nothing_is_stored_or_enqueued(client, db, queue, case):
    # Built now, not at collection: a timestamp 400 s ahead must still be ahead when it is sent.
    [(_, body, headers, reason)] = [bad for bad in _bad_requests() if bad[0] == case]
    response = client.post("/webhooks/stripe", content=body, headers=headers)

    assert response.status_code == 400, case
    assert reason in response.json()["error"]
    assert stored(db) == []
    assert queue.sent == []


def test_a_body_over_the_limit_gets_413_and_nothing_is_stored(client, db, queue):
    huge = event("charge.succeeded", charge(description="x" * 70_000))
    body, headers = signed(huge)
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    assert stored(db) == [] and queue.sent == []


def test_a_body_over_the_limit_without_content_length_gets_413(client, db):
    body, headers = signed(event("charge.succeeded", charge(description="y" * 70_000)))
    chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))
    response = client.post("/webhooks/stripe", content=chunks, headers=headers)
    assert response.status_code == 413
    assert stored(db) == []


def test_when_redis_is_down_the_event_is_still_committed_and_answered_200(db):
    app = create_app(db=db, enqueue=RecordingQueue(fail=True), secrets=[TEST_SECRET])
    body, headers = signed(event("charge.succeeded", charge(), event_id="evt_no_redis"))
    response = TestClient(app).post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200
    assert [(row.id, row.status) for row in stored(db)] == [("evt_no_redis", "received")]


def test_when_the_database_is_down_stripe_gets_503_so_it_retries_and_nothing_is_enqueued(
    db, queue, monkeypatch
):
    def unavailable(*_args, **_kwargs):
        raise OperationalError("INSERT", {}, Exception("could not connect to server"))

    monkeypatch.setattr("worker.receiver.event_writer.EventWriter._store", unavailable)
    app = create_app(db=db, enqueue=queue, secrets=[TEST_SECRET])
    body, headers = signed(event("charge.succeeded", charge()))
    response = TestClient(app).post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 503
    assert response.json() == {"error": "database unavailable, retry later"}
    assert queue.sent == []


def test_the_receiver_refuses_to_start_without_a_webhook_secret(db, queue):
    with pytest.raises(MissingWebhookSecret, match="STRIPE_WEBHOOK_SECRET"):
        create_app(db=db, enqueue=queue, secrets=[])


def test_healthz_answers_while_the_process_is_alive(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def _down():
    raise ConnectionError("refused")


def test_readyz_shows_redis_down_as_degraded_but_stays_ready_because_events_are_still_stored(db, queue):
    app = create_app(
        db=db,
        enqueue=queue,
        secrets=[TEST_SECRET],
        readiness_checks={"database": db.ping},
        reported_checks={"redis": _down},
    )
    response = TestClient(app).get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "database": "ok",
        "redis": "unavailable (ConnectionError)",
        "database_writes": "ok",
        "status": "degraded",
    }


def test_readyz_is_503_when_the_database_is_down(db, queue):
    app = create_app(db=db, enqueue=queue, secrets=[TEST_SECRET], readiness_checks={"database": _down})
    response = TestClient(app).get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "database": "unavailable (ConnectionError)",
        "database_writes": "ok",
        "status": "down",
        "reason": "database unavailable (ConnectionError)",
    }


def test_readyz_is_200_when_everything_is_reachable(client):
    response = client.get("/readyz")
    assert (response.status_code, response.json()) == (
        200,
        {"database": "ok", "database_writes": "ok", "status": "ready"},
    )


def test_only_post_is_accepted_on_the_webhook_path(client):
    assert client.get("/webhooks/stripe").status_code == 405
