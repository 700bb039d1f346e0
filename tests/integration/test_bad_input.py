"""Bad requests over real HTTP: a JSON error, nothing stored, nothing enqueued."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests import stripe_fixtures as sf
from tests.integration.stack import MAX_BODY_BYTES, Stack, needs_redis
from worker.receiver.signature import sign

pytestmark = [pytest.mark.integration, needs_redis]

FORGED_SECRET = "whsec_forged_" + "f0e1d2c3" * 4


def _event_body(event_id: str, *, pad_to: int = 0) -> bytes:
    charge = sf.charge(f"ch_{event_id.removeprefix('evt_')}")
    if pad_to:
        charge["description"] = "x" * pad_to
    return json.dumps(sf.event("charge.succeeded", charge, event_id=event_id)).encode()


def _headers(body: bytes, *, secret: str = sf.TEST_SECRET, timestamp: int | None = None) -> dict[str, str]:
    return {"Stripe-Signature": sign(body, secret, timestamp), "Content-Type": "application/json"}


def _chunks(body: bytes, size: int = 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def forged_signature(event_id):
    body = _event_body(event_id)
    return body, _headers(body, secret=FORGED_SECRET)


def missing_signature(event_id):
    return _event_body(event_id), {"Content-Type": "application/json"}


def timestamp_too_old(event_id):
    body = _event_body(event_id)
    return body, _headers(body, timestamp=int(time.time()) - 301 - 60)


def timestamp_too_far_ahead(event_id):
    body = _event_body(event_id)
    return body, _headers(body, timestamp=int(time.time()) + 301 + 60)


def malformed_json(event_id):
    body = _event_body(event_id)[:-7]  # cut off the closing part
    return body, _headers(body)


def json_that_is_not_a_stripe_event(event_id):
    body = json.dumps({"id": event_id, "object": "charge", "hello": "world"}).encode()
    return body, _headers(body)


def _with_amount(event_id: str, literal: str) -> tuple[bytes, dict[str, str]]:
    """A signed event whose charge amount is `literal` as written (what json.dumps would never write)."""
    text = _event_body(event_id).decode()
    assert text.count('"amount": 5000') == 1
    body = text.replace('"amount": 5000', f'"amount": {literal}').encode()
    return body, _headers(body)


def amount_nan(event_id):
    return _with_amount(event_id, "NaN")


def amount_infinity(event_id):
    return _with_amount(event_id, "-Infinity")


def amount_overflowing_a_double(event_id):
    return _with_amount(event_id, "1e400")


def amount_beyond_64_bits(event_id):
    return _with_amount(event_id, str(2**64))


def body_over_the_limit(event_id):
    body = _event_body(event_id, pad_to=MAX_BODY_BYTES)
    return body, _headers(body)


def body_over_the_limit_without_a_content_length(event_id):
    body = _event_body(event_id, pad_to=MAX_BODY_BYTES)
    return _chunks(body), _headers(body)  # chunked transfer encoding: the size is only known by reading


CASES = [
    (forged_signature, 400, "no signature matches"),
    (missing_signature, 400, "missing Stripe-Signature"),
    (timestamp_too_old, 400, "timestamp outside the tolerance window"),
    (timestamp_too_far_ahead, 400, "timestamp outside the tolerance window"),
    (malformed_json, 400, "not valid JSON"),
    (json_that_is_not_a_stripe_event, 400, "not a Stripe event"),
    (amount_nan, 400, "NaN or Infinity"),
    (amount_infinity, 400, "NaN or Infinity"),
    (amount_overflowing_a_double, 400, "out of range"),
    (amount_beyond_64_bits, 400, "beyond 64 bits"),
    (body_over_the_limit, 413, f"larger than {MAX_BODY_BYTES} bytes"),
    (body_over_the_limit_without_a_content_length, 413, f"larger than {MAX_BODY_BYTES} bytes"),
]


@pytest.mark.parametrize(("make_request", "status", "error"), CASES, ids=[c[0].__name__ for c in CASES])
def test_a_bad_webhook_request_gets_a_json_error_and_leaves_no_row_and_no_queue_message(
    stack: Stack, uid: str, make_request, status: int, error: str
):
    event_id = f"evt_bad_{uid}"
    body, headers = make_request(event_id)
    rows_before = stack.count("events")
    queue_before = stack.queue_snapshot()

    response = stack.post(body, headers)

    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert error in response.json()["error"]
    time.sleep(0.3)  # a message wrongly enqueued would show up by now (in the queue, in flight or rejected)
    assert stack.event(event_id) is None
    assert stack.count("events") == rows_before
    assert stack.queue_snapshot() == queue_before
