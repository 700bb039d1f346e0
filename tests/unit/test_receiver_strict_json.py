"""Numbers JSON does not have, or that no column can hold, are refused at the door (400), never stored.

Python's json accepts `NaN`, `Infinity` and `-Infinity`, turns `1e400` into inf and reads integers of
any size. A signed body carrying one used to be answered 200 and stored, and then ended `dead` in the
worker. Both endpoints (Stripe and the funnel) now answer 400 `{"error": ...}` and store nothing.
"""

from __future__ import annotations

import json

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from models import Event
from tests.sales_scenarios import funnel_purchase
from tests.stripe_fixtures import TEST_SECRET, charge, event
from tests.unit.test_receiver import RecordingQueue
from worker.receiver.signature import sign
from worker.receiver.stripe_events import InvalidJSON, parse_event, parse_json
from worker.receiver.web import create_app

TOKEN = "cf-token-strict-json-0123456789"

# (case, the amount as it appears in the body, a piece of the reason the sender is given)
BAD_NUMBERS = [
    ("NaN", "NaN", "NaN or Infinity"),
    ("Infinity", "Infinity", "NaN or Infinity"),
    ("-Infinity", "-Infinity", "NaN or Infinity"),
    ("float overflow", "1e400", "out of range"),
    ("negative float overflow", "-1e400", "out of range"),
    ("2**63", str(2**63), "beyond 64 bits"),
    ("2**64", str(2**64), "beyond 64 bits"),
    ("-2**63 - 1", str(-(2**63) - 1), "beyond 64 bits"),
    ("a 40-digit integer", "1" + "0" * 39, "beyond 64 bits"),
]
IDS = [case[0] for case in BAD_NUMBERS]


@pytest.fixture
def queue():
    return RecordingQueue()


@pytest.fixture
def client(db, queue):
    return TestClient(create_app(db=db, enqueue=queue, secrets=[TEST_SECRET], funnel_token=TOKEN))


def stored(db) -> list[Event]:
    with db.session() as session:
        return list(session.exec(select(Event)).all())


def stripe_body_with_amount(literal: str, event_id: str = "evt_strict") -> bytes:
    """A Stripe event whose charge amount is written as `literal`, exactly as it would arrive."""
    text = json.dumps(event("charge.succeeded", charge(amount=424242), event_id=event_id))
    assert text.count('"amount": 424242') == 1
    return text.replace('"amount": 424242', f'"amount": {literal}').encode()


def funnel_body_with_number(literal: str) -> bytes:
    """A purchase carrying `literal` in a field the purchase checks do not read (the funnel step)."""
    document = funnel_purchase()
    document["purchase"]["funnel_step_id"] = 424242
    text = json.dumps(document)
    assert text.count("424242") == 1
    return text.replace("424242", literal).encode()


@pytest.mark.parametrize(("case", "literal", "reason"), BAD_NUMBERS, ids=IDS)
def test_a_signed_stripe_event_with_a_number_json_does_not_allow_gets_400_and_nothing_is_stored(
    client, db, queue, case, literal, reason
):
    body = stripe_body_with_amount(literal)
    response = client.post(
        "/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body, TEST_SECRET)}
    )

    assert response.status_code == 400, (case, response.text)
    assert list(response.json()) == ["error"]
    assert reason in response.json()["error"]
    assert stored(db) == []
    assert queue.sent == []


@pytest.mark.parametrize(("case", "literal", "reason"), BAD_NUMBERS, ids=IDS)
def test_a_funnel_purchase_with_a_number_json_does_not_allow_gets_400_and_nothing_is_stored(
    client, db, queue, case, literal, reason
):
    response = client.post(f"/webhooks/funnel/{TOKEN}", content=funnel_body_with_number(literal))

    assert response.status_code == 400, (case, response.text)
    assert list(response.json()) == ["error"]
    assert reason in response.json()["error"]
    assert stored(db) == []
    assert queue.sent == []


@pytest.mark.parametrize("literal", [str(2**63 - 1), str(-(2**63)), "1.5e308", "0.1", "-0", "1e-400"])
def test_numbers_at_the_edge_of_the_range_are_still_accepted(client, db, literal):
    body = stripe_body_with_amount(literal, event_id="evt_edge")
    response = client.post(
        "/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body, TEST_SECRET)}
    )
    assert response.status_code == 200, response.text
    assert [row.id for row in stored(db)] == ["evt_edge"]


def test_the_strict_parser_refuses_what_the_lenient_one_accepts():
    for text in (
        '{"a": NaN}',
        '{"a": [1, Infinity]}',
        '{"a": -Infinity}',
        '{"a": 1e999}',
        f'{{"a": {2**64}}}',
    ):
        json.loads(text)  # what the receiver used to accept
        with pytest.raises(InvalidJSON):
            parse_json(text)
    # A long run of digits inside a string is text, not a number.
    assert parse_json('{"a": "12345678901234567890123"}') == {"a": "12345678901234567890123"}
    assert parse_json(f'{{"a": {2**63 - 1}, "b": 1.0}}') == {"a": 2**63 - 1, "b": 1.0}


def test_parse_event_says_which_rule_the_body_broke():
    with pytest.raises(InvalidJSON, match="NaN or Infinity"):
        parse_event(stripe_body_with_amount("NaN"))
    with pytest.raises(InvalidJSON, match="not valid JSON"):
        parse_event(b"{oops")
