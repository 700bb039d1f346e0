"""Stripe calls: pinned version, bounded retries honouring Retry-After and Stripe-Should-Retry."""

import httpx
import pytest
import respx
import stripe

from worker import stripe_api
from worker.settings import PINNED_STRIPE_API_VERSION, Settings

BASE = "http://127.0.0.1:12111"
KEY = "sk_test_unitkey4242"
EVENT = {"id": "evt_api", "object": "event", "type": "charge.succeeded", "created": 1, "data": {"object": {}}}


@pytest.fixture
def settings():
    return Settings(
        stripe_api_key=KEY, stripe_api_base=BASE, stripe_max_attempts=3, stripe_max_backoff_seconds=0.01
    )


def error(status, kind="api_error", headers=None):
    return httpx.Response(status, headers=headers or {}, json={"error": {"type": kind, "message": "nope"}})


@respx.mock
def test_every_request_carries_the_pinned_api_version_and_the_key(settings):
    route = respx.get(f"{BASE}/v1/events/evt_api").mock(return_value=httpx.Response(200, json=EVENT))
    stripe_api.retrieve_event(settings, stripe_api.make_client(settings), "evt_api")
    request = route.calls.last.request
    assert request.headers["stripe-version"] == PINNED_STRIPE_API_VERSION
    assert request.headers["authorization"] == f"Bearer {KEY}"


@respx.mock
def test_a_connect_account_event_is_fetched_as_that_account(settings):
    route = respx.get(f"{BASE}/v1/events/evt_api").mock(return_value=httpx.Response(200, json=EVENT))
    stripe_api.retrieve_event(settings, stripe_api.make_client(settings), "evt_api", "acct_42")
    assert route.calls.last.request.headers["stripe-account"] == "acct_42"


@respx.mock
def test_rate_limits_and_server_errors_are_retried_until_success(settings):
    route = respx.get(f"{BASE}/v1/events/evt_api").mock(
        side_effect=[
            error(429, "rate_limit_error", {"Retry-After": "0"}),
            error(503),
            httpx.Response(200, json=EVENT),
        ]
    )
    body = stripe_api.retrieve_event(settings, stripe_api.make_client(settings), "evt_api")
    assert '"evt_api"' in body
    assert route.call_count == 3


@respx.mock
def test_retries_are_bounded_and_the_last_error_is_raised(settings):
    route = respx.get(f"{BASE}/v1/events/evt_api").mock(return_value=error(500))
    with pytest.raises(stripe.APIError):
        stripe_api.retrieve_event(settings, stripe_api.make_client(settings), "evt_api")
    assert route.call_count == 3


@respx.mock
def test_connection_errors_and_timeouts_are_retried(settings):
    route = respx.get(f"{BASE}/v1/events/evt_api").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.ReadTimeout("slow"),
            httpx.Response(200, json=EVENT),
        ]
    )
    stripe_api.retrieve_event(settings, stripe_api.make_client(settings), "evt_api")
    assert route.call_count == 3


@respx.mock
def test_stripe_should_retry_false_stops_retrying_even_a_5xx(settings):
    route = respx.get(f"{BASE}/v1/events/evt_api").mock(
        return_value=error(500, headers={"Stripe-Should-Retry": "false"})
    )
    with pytest.raises(stripe.APIError):
        stripe_api.retrieve_event(settings, stripe_api.make_client(settings), "evt_api")
    assert route.call_count == 1


@respx.mock
def test_client_errors_such_as_a_missing_object_are_not_retried(settings):
    route = respx.get(f"{BASE}/v1/events/evt_api").mock(return_value=error(404, "invalid_request_error"))
    with pytest.raises(stripe.InvalidRequestError):
        stripe_api.retrieve_event(settings, stripe_api.make_client(settings), "evt_api")
    assert route.call_count == 1


def test_retry_after_is_honoured_and_a_longer_wait_than_the_cap_is_left_to_the_event_retry(
    settings, monkeypatch
):
    waits = []
    monkeypatch.setattr("tenacity.nap.time.sleep", waits.append)
    capped = settings.model_copy(update={"stripe_max_backoff_seconds": 2.0})
    with respx.mock:
        route = respx.get(f"{BASE}/v1/events/evt_api").mock(
            side_effect=[
                error(429, "rate_limit_error", {"Retry-After": "1.5"}),
                error(429, "rate_limit_error", {"Retry-After": "60"}),
                httpx.Response(200, json=EVENT),
            ]
        )
        with pytest.raises(stripe.RateLimitError):
            stripe_api.retrieve_event(capped, stripe_api.make_client(capped), "evt_api")
    assert waits == [1.5] and route.call_count == 2


def test_a_missing_api_key_is_a_clear_error():
    with pytest.raises(stripe_api.StripeNotConfigured, match="STRIPE_API_KEY"):
        stripe_api.make_client(Settings())


# --- StripeReader.get: raw_request with the page read by orjson (stripe 16.1.0 internals) -------------

CHARGES_PAGE = {
    "object": "list",
    "url": "/v1/charges",
    "has_more": True,
    "data": [{"id": "ch_1", "object": "charge", "amount": 1234, "metadata": {"k": "v"}, "refunded": False}],
}


def test_the_sdk_is_the_version_whose_internals_the_reader_uses():
    import inspect

    assert stripe.VERSION == "16.1.0"
    requestor = stripe_api.make_client(Settings(stripe_api_key=KEY, stripe_api_base=BASE))._requestor
    parameters = inspect.signature(requestor.request_raw).parameters
    assert {"method", "url", "params", "options", "base_address", "api_mode", "usage"} <= set(parameters)
    assert list(inspect.signature(requestor._interpret_response).parameters) == [
        "rbody",
        "rcode",
        "rheaders",
        "api_mode",
    ]


@respx.mock
def test_a_page_read_by_the_reader_equals_what_raw_request_reads_with_the_same_request(settings):
    route = respx.get(f"{BASE}/v1/charges").mock(return_value=httpx.Response(200, json=CHARGES_PAGE))
    client = stripe_api.make_client(settings)
    reader = stripe_api.StripeReader(settings, client)
    page = reader.get("/v1/charges", {"limit": 100, "created": {"gte": 1}}, account="acct_9")
    ours = route.calls.last.request
    theirs = client.raw_request("get", "/v1/charges", limit=100, created={"gte": 1}, stripe_account="acct_9")
    sdks = route.calls.last.request

    assert page == theirs.data == CHARGES_PAGE and type(page["data"][0]) is dict
    assert reader.api_calls == 1
    assert ours.url == sdks.url
    for header in ("authorization", "stripe-version", "stripe-account"):
        assert ours.headers[header] == sdks.headers[header]


@respx.mock
def test_the_reader_raises_the_sdks_own_errors_and_retries_what_may_succeed(settings):
    respx.get(f"{BASE}/v1/charges/ch_gone").mock(return_value=error(404, "invalid_request_error"))
    route = respx.get(f"{BASE}/v1/charges").mock(
        side_effect=[
            error(503),
            httpx.Response(200, text="<html>proxy</html>"),
            httpx.Response(200, json=CHARGES_PAGE),
        ]
    )
    reader = stripe_api.StripeReader(settings, stripe_api.make_client(settings))
    assert reader.get_optional("/v1/charges/ch_gone") is None
    with pytest.raises(stripe.APIError, match="Invalid response body"):
        reader.get("/v1/charges")  # a 503, retried; then a body that is not JSON, which is not retried
    assert route.call_count == 2
    assert reader.get("/v1/charges") == CHARGES_PAGE
