"""A key Stripe rejected: its masked form (`sk_live_****…y999`) never reaches a log line or the event log.

Stripe's 401 answer quotes the key it was given with all but its first 8 and last 4 characters
replaced by asterisks ("Invalid API Key provided: sk_live_************************y999"; older answers
and keys without a prefix: "****************hwxq"). The last 4 characters are still part of the secret,
and they tell an attacker which of the seller's keys leaked.
"""

import json
import logging
import time

import httpx
import pytest
import respx

from handlers import DISPATCH, Handler
from models import Event
from tests.stripe_fixtures import charge, event
from tests.unit.test_processing import store
from worker.jobs import processing
from worker.ops.logs import configure_logging, redact
from worker.settings import Settings
from worker.stripe_api import StripeReader, make_client

BASE = "http://127.0.0.1:12111"
KEY = "sk_live_51Hrejected0000000000000000y999"
MASKED = "sk_live_" + "*" * 24 + "y999"  # how Stripe's answer prints KEY


@pytest.fixture(autouse=True)
def _logging_put_back():
    """These tests configure logging onto pytest's captured stderr; give the next test pytest's own."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    "message",
    [
        f"Invalid API Key provided: {MASKED}",
        "Invalid API Key provided: sk_live_****************y999",
        "Invalid API Key provided: rk_test_****************************************************y999",
        "Expired API Key provided: sk_live_***",
        # the first 8 characters of a key pasted with a stray quote: `"sk_test` and the asterisks
        'Invalid API Key provided: "sk_test*********************************************y99"',
        # older answers, or a key without its prefix: asterisks and the last 4 only
        "Invalid API Key provided: ********************y999",
        # a dashboard-style shortening
        "key sk_live_...y999 was rolled",
    ],
)
def test_a_masked_key_as_stripe_prints_it_is_redacted_with_its_tail(message):
    scrubbed = redact(message)
    assert "y99" not in scrubbed and "sk_" not in scrubbed and "rk_" not in scrubbed
    assert "[redacted]" in scrubbed


def test_text_around_a_masked_key_is_kept():
    assert redact(f"Request req_123: Invalid API Key provided: {MASKED}.") == (
        "Request req_123: Invalid API Key provided: [redacted]."
    )
    assert redact("Markdown **bold** and 2 * 3 stay as they are") == (
        "Markdown **bold** and 2 * 3 stay as they are"
    )


def test_redacting_a_long_hostile_line_takes_linear_time():
    """Every log line passes through the redactor: a line built to make a regex backtrack (a long run of
    asterisks, of dots after a key prefix, of punctuation after "API Key provided: ") must not stall it."""
    hostile = [
        "*" * 200_000 + "!",
        "sk_live_" + "." * 200_000 + "!",
        "Invalid API Key provided: " + "." * 200_000 + "x" + "." * 200_000,
    ]
    started = time.perf_counter()
    for line in hostile:
        redact(line)
    assert time.perf_counter() - started < 2.0


@respx.mock
def test_an_event_whose_stripe_call_is_refused_stores_and_logs_no_part_of_the_key(db, monkeypatch, capsys):
    """What on-call staff see after the seller rolled the key: the error, but not the key's tail."""
    settings = Settings(stripe_api_key=KEY, stripe_api_base=BASE, stripe_max_attempts=1)
    reader = StripeReader(settings, make_client(settings))
    refusal = {"error": {"message": f"Invalid API Key provided: {MASKED}", "type": "invalid_request_error"}}
    respx.get(f"{BASE}/v1/charges/ch_refused").mock(return_value=httpx.Response(401, json=refusal))
    monkeypatch.setitem(
        DISPATCH,
        "charge.succeeded",
        Handler(apply=lambda ctx: None, fetch=lambda ctx: ctx.stripe.get("/v1/charges/ch_refused")),
    )
    store(db, event("charge.succeeded", charge("ch_refused"), event_id="evt_refused"))
    configure_logging("INFO", "json", secrets=[KEY])

    with pytest.raises(Exception, match="AuthenticationError|Invalid API Key"):
        processing.process_event(db, "evt_refused", max_attempts=5, stripe=lambda: reader)
    logging.getLogger("test").exception("the worker logs the failure with its traceback")

    with db.session() as session:
        row = session.get(Event, ("evt_refused", ""))
    logs = capsys.readouterr().err
    assert row.status == "failed"
    assert row.last_error.startswith("AuthenticationError") and "Invalid API Key provided" in row.last_error
    assert "Invalid API Key provided" in row.last_traceback
    for where, text in (
        ("last_error", row.last_error),
        ("last_traceback", row.last_traceback),
        ("logs", logs),
    ):
        assert "y999" not in text and "sk_live_" not in text, f"{where}: {text}"
    assert "[redacted]" in row.last_error
    failure = next(json.loads(line) for line in logs.splitlines() if "event failed" in line)
    assert failure["event_id"] == "evt_refused" and "[redacted]" in failure["msg"]
