"""The ClickFunnels purchase webhook: unsigned, so a secret token in the URL guards it."""

import json

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from models import Event, FunnelPurchase
from tests.sales_scenarios import funnel_purchase
from tests.stripe_fixtures import TEST_SECRET
from tests.unit.test_receiver import RecordingQueue
from worker.jobs import processing
from worker.receiver.web import create_app

TOKEN = "cf-token-0123456789abcdef"


@pytest.fixture
def queue():
    return RecordingQueue()


@pytest.fixture
def client(db, queue):
    return TestClient(create_app(db=db, enqueue=queue, secrets=[TEST_SECRET], funnel_token=TOKEN))


def events(db) -> list[Event]:
    with db.session() as session:
        return list(session.exec(select(Event)).all())


@pytest.mark.parametrize("path", [f"/webhooks/funnel/{TOKEN}", f"/webhooks/funnel?token={TOKEN}"])
def test_a_purchase_with_the_right_token_is_stored_enqueued_and_recorded(client, db, queue, path):
    response = client.post(path, json=funnel_purchase())
    assert response.status_code == 200 and response.json()["duplicate"] is False
    [row] = events(db)
    assert (row.type, row.status) == ("funnel.purchase.created", "received")
    assert queue.sent == [(row.id, "")]
    processing.process_event(db, row.id, max_attempts=3)
    with db.session() as session:
        purchase = session.exec(select(FunnelPurchase)).one()
    assert (purchase.purchase_id, purchase.amount, purchase.installments_total, purchase.customer_email) == (
        "1001",
        10_000,
        3,
        "buyer@example.com",
    )


def test_the_same_purchase_delivered_twice_is_one_event(client, db, queue):
    body = json.dumps(funnel_purchase()).encode()
    first = client.post(f"/webhooks/funnel/{TOKEN}", content=body)
    again = client.post(f"/webhooks/funnel/{TOKEN}", content=body)
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert len(events(db)) == 1 and len(queue.sent) == 1


@pytest.mark.parametrize(
    "path", ["/webhooks/funnel", "/webhooks/funnel/wrong-token-0123456789", "/webhooks/funnel?token="]
)
def test_a_wrong_or_missing_token_gets_401_and_nothing_is_stored(client, db, queue, path):
    response = client.post(path, json=funnel_purchase())
    assert response.status_code == 401
    assert response.json() == {"error": "wrong or missing token"}
    assert events(db) == [] and queue.sent == []


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", json.dumps({"event": "created", "purchase": {"products": []}}).encode()],
)
def test_a_malformed_purchase_gets_400_with_a_reason_and_nothing_is_stored(client, db, queue, body):
    response = client.post(f"/webhooks/funnel/{TOKEN}", content=body)
    assert response.status_code == 400
    assert response.json()["error"]
    assert events(db) == [] and queue.sent == []


def test_without_a_configured_token_the_funnel_endpoint_is_disabled(db, queue):
    client = TestClient(create_app(db=db, enqueue=queue, secrets=[TEST_SECRET]))
    response = client.post("/webhooks/funnel/anything-at-all-here", json=funnel_purchase())
    assert response.status_code == 404
    assert "FUNNEL_WEBHOOK_TOKEN" in response.json()["error"]


def test_a_short_token_is_refused_at_start_up(db, queue):
    with pytest.raises(SystemExit, match="at least 16"):
        create_app(db=db, enqueue=queue, secrets=[TEST_SECRET], funnel_token="short")
