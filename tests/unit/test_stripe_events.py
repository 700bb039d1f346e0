import json

import pytest

from tests.stripe_fixtures import charge, event
from worker.receiver.stripe_events import NotAStripeEvent, parse_event


def test_a_stripe_event_body_parses_into_its_id_type_account_and_version():
    document = event(
        "charge.succeeded", charge(), event_id="evt_abc", account="acct_123", api_version="2025-03-31.basil"
    )
    parsed = parse_event(json.dumps(document).encode())
    assert (parsed.id, parsed.type, parsed.account, parsed.api_version) == (
        "evt_abc",
        "charge.succeeded",
        "acct_123",
        "2025-03-31.basil",
    )


def test_an_event_without_an_account_belongs_to_the_platform():
    assert parse_event(json.dumps(event("charge.succeeded", charge())).encode()).account == ""


def _mutated(**changes):
    document = event("charge.succeeded", charge(), event_id="evt_ok")
    for key, value in changes.items():
        if value is None:
            document.pop(key)
        else:
            document[key] = value
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"\xef\xbb\xbf{}", "byte-order mark"),
        (b"[1, 2]", "not a Stripe event"),
        (b'{"object": "charge", "id": "ch_1"}', "not a Stripe event"),
        (_mutated(id="ch_123"), "event id"),
        (_mutated(id="evt_1' OR '1'='1"), "event id"),
        (_mutated(type=None), "event type"),
        (_mutated(type="Charge Succeeded"), "event type"),
        (_mutated(created="yesterday"), "created"),
        (_mutated(created=True), "created"),
        (_mutated(data={"object": "x"}), "data.object"),
        (_mutated(account="not-an-account"), "account"),
        (_mutated(api_version="latest; DROP TABLE events"), "api_version"),
        (_mutated(livemode="yes"), "livemode"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_bodies_that_are_not_stripe_events_are_rejected_with_a_short_reason(body, reason):
    with pytest.raises(NotAStripeEvent, match=reason):
        parse_event(body)
