"""The one way the worker talks to Stripe: a pinned `StripeClient` on httpx, and bounded retries.

The SDK's own retries are off (`max_network_retries=0`) so that retrying happens at one layer, here,
with tenacity: 429s, 5xx, 409 lock conflicts and connection errors are retried with jittered
exponential backoff, honouring `Retry-After` and `Stripe-Should-Retry`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import orjson
import stripe
from stripe._request_options import extract_options_from_dict
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt
from tenacity import Retrying as _Retrying

from worker.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class StripeNotConfigured(RuntimeError):
    """A Stripe call was needed but STRIPE_API_KEY is not set."""


def make_client(settings: Settings) -> stripe.StripeClient:
    if settings.stripe_api_key is None:
        raise StripeNotConfigured("STRIPE_API_KEY is not set; it is needed to fetch objects from Stripe")
    return stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        stripe_version=settings.stripe_api_version,
        base_addresses={"api": settings.stripe_api_base},
        max_network_retries=0,
        http_client=stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds, allow_sync_methods=True),
    )


def _header(error: stripe.StripeError, name: str) -> str | None:
    for key, value in (error.headers or {}).items():
        if key.lower() == name:
            return value
    return None


def is_retryable(error: BaseException) -> bool:
    """Whether Stripe says (or the failure shows) that the same request may succeed later."""
    if not isinstance(error, stripe.StripeError):
        return False
    should_retry = _header(error, "stripe-should-retry")
    if should_retry is not None:
        return should_retry.lower() == "true"
    if isinstance(error, stripe.APIConnectionError):
        return True
    status = error.http_status or 0
    return status in (409, 429) or status >= 500


def _retry_after_seconds(error: BaseException | None) -> float | None:
    if not isinstance(error, stripe.StripeError):
        return None
    value = _header(error, "retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _retryable_within(max_backoff: float) -> Callable[[BaseException], bool]:
    """Retry in-process only when Stripe's Retry-After fits our cap; a longer wait is left to
    Dramatiq's backoff (the event is retried later) rather than retried sooner than Stripe asked."""

    def predicate(error: BaseException) -> bool:
        retry_after = _retry_after_seconds(error)
        return is_retryable(error) and (retry_after is None or retry_after <= max_backoff)

    return predicate


def _backoff(max_backoff: float) -> Callable[[RetryCallState], float]:

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = _retry_after_seconds(error)
        if retry_after is not None:
            return retry_after  # at most max_backoff: longer waits are not retried here

        # Full jitter: spread many workers' retries so they do not hit the rate limit together.
        return random.uniform(0, min(max_backoff, 0.5 * 2 ** (state.attempt_number - 1)))

    return wait


def _log_retry(state: RetryCallState) -> None:
    # Written inside the event's log context: the line carries its event_id, type and account.
    error = state.outcome.exception() if state.outcome else None
    status = getattr(error, "http_status", None)
    request_id = getattr(error, "request_id", None)
    details = "".join(
        (f"; HTTP {status}" if status else "", f"; Stripe request {request_id}" if request_id else "")
    )
    log.warning(
        "Stripe call failed (%s), retrying (attempt %d%s)",
        type(error).__name__,
        state.attempt_number,
        details,
    )


def call(settings: Settings, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one Stripe request with bounded retries; the last error is raised as it came."""
    retrying = _Retrying(
        retry=retry_if_exception(_retryable_within(settings.stripe_max_backoff_seconds)),
        stop=stop_after_attempt(settings.stripe_max_attempts),
        wait=_backoff(settings.stripe_max_backoff_seconds),
        before_sleep=_log_retry,
        reraise=True,
    )
    return retrying(fn, *args, **kwargs)


def retrieve_event(settings: Settings, client: stripe.StripeClient, event_id: str, account: str = "") -> str:
    """`GET /v1/events/{id}` (as the Connect `account` when given), as the raw JSON text Stripe sent."""
    options = {"stripe_account": account} if account else None
    event = call(settings, client.v1.events.retrieve, event_id, options=options)
    response = getattr(event, "last_response", None)
    if response is not None and response.body:
        return response.body
    return json.dumps(event.to_dict())


def _with_account(params: dict[str, Any] | None, account: str) -> dict[str, Any]:
    """A request's params, with the Connect account to act as (the SDK's `stripe_account` option)."""
    return {**(params or {}), **({"stripe_account": account} if account else {})}


def _get_plain(client: stripe.StripeClient, path: str, params: dict[str, Any]) -> dict:
    """`client.raw_request("get", path, **params).data`, with the JSON read by orjson into plain dicts.

    The SDK reads every response with `json.loads(..., object_pairs_hook=OrderedDict)`: 5.9 ms for a
    page of 100 charges against orjson's 1.8 ms, and a nightly run reads ~1,500 pages per 100,000
    charges on the thread that also stores them. This is `StripeClient.raw_request` (stripe 16.1.0,
    pinned in pyproject.toml) with only that step replaced; an error answer is still read and raised by
    the SDK itself. tests/unit/test_stripe_api.py fails if these internals change.
    """
    requestor = client._requestor
    options, params = extract_options_from_dict(params)
    body, code, headers = requestor.request_raw(
        "get", path, params=params, options=options, base_address="api", api_mode="V1", usage=["raw_request"]
    )
    if 200 <= code < 300:
        with contextlib.suppress(orjson.JSONDecodeError):  # else the SDK raises its "Invalid response body"
            return orjson.loads(body)
    return requestor._interpret_response(body, code, headers, "V1").data


class StripeReader:
    """Stripe requests as plain dicts (no StripeObject per item: listing 100k charges stays fast),
    each with bounded retries, counted so a run can report its API calls."""

    def __init__(self, settings: Settings, client: stripe.StripeClient) -> None:
        self.settings = settings
        self.client = client
        self.api_calls = 0

    def request(
        self, method: str, path: str, params: dict[str, Any] | None = None, *, account: str = ""
    ) -> dict:
        extra = _with_account(params, account)

        def once() -> dict:
            self.api_calls += 1
            return self.client.raw_request(method, path, **extra).data

        return call(self.settings, once)

    def get(self, path: str, params: dict[str, Any] | None = None, *, account: str = "") -> dict:
        extra = _with_account(params, account)

        def once() -> dict:
            self.api_calls += 1
            return _get_plain(self.client, path, extra)

        return call(self.settings, once)

    def get_optional(
        self, path: str, params: dict[str, Any] | None = None, *, account: str = ""
    ) -> dict | None:
        """`get`, but None when Stripe has no such object (404) instead of an error."""
        try:
            return self.get(path, params, account=account)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise

    def pages(
        self, path: str, params: dict[str, Any], *, account: str = "", starting_after: str | None = None
    ) -> Iterator[list[dict]]:
        """Every page of a list, 100 objects a request, newest first, from `starting_after` on."""
        while True:
            query = {**params, "limit": 100}
            if starting_after:
                query["starting_after"] = starting_after
            page = self.get(path, query, account=account)
            data = page.get("data") or []
            if data:
                yield data
            if not page.get("has_more") or not data:
                return
            starting_after = data[-1]["id"]
