"""Queued failures for reliability tests: the next N requests under a path answer with an error or late.

Kinds (each may also carry `delay` seconds, waited before answering):
- rate_limit:   429, code `rate_limit`, with `Retry-After` (default 1 s);
- lock_timeout: 429, code `lock_timeout` (another request holds the object), with `Retry-After`;
- api_error:    500, type `api_error`;
- unavailable:  503, type `api_error`;
- delay:        no error: the request is answered normally after `delay` seconds (client timeouts);
- error:        any `status`, `type`, `code` and `message` given.
`should_retry` sets the `Stripe-Should-Retry` header (stripe-python obeys it over the status code).
Faults are used in the order they were queued; each one serves `count` matching requests.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from stripe_standin.errors import StripeAPIError

_PRESETS: dict[str, tuple[int, str, str | None, str]] = {
    "rate_limit": (
        429,
        "invalid_request_error",
        "rate_limit",
        "Request rate limit exceeded. You can learn more about rate limits here https://stripe.com/docs/rate-limits.",
    ),
    "lock_timeout": (
        429,
        "invalid_request_error",
        "lock_timeout",
        "This object cannot be accessed right now because another API request or Stripe process is "
        "currently accessing it. If you see this error intermittently, retry the request. If you see this "
        "error frequently and are making multiple concurrent requests to a single object, make your "
        "requests serially or at a lower rate. See https://stripe.com/docs/rate-limits for more details.",
    ),
    "api_error": (500, "api_error", None, "An unknown error occurred. (stripe-standin injected fault)"),
    "unavailable": (
        503,
        "api_error",
        None,
        "Stripe is temporarily unavailable. (stripe-standin injected fault)",
    ),
}
KINDS = (*_PRESETS, "delay", "error")


@dataclass
class Fault:
    kind: str = "rate_limit"
    path: str = "/v1/"
    method: str | None = None
    count: int = 1
    delay: float = 0.0
    retry_after: float | None = None
    should_retry: bool | None = None
    status: int | None = None
    type: str | None = None
    code: str | None = None
    message: str | None = None
    served: int = field(default=0)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(KINDS)}")
        if self.count < 1:
            raise ValueError("count must be at least 1")
        if self.kind == "error" and not self.status:
            raise ValueError("a fault of kind 'error' needs a status")
        if self.method:
            self.method = self.method.upper()
        if self.retry_after is None and self.kind in ("rate_limit", "lock_timeout"):
            self.retry_after = 1

    def matches(self, method: str, path: str) -> bool:
        return path.startswith(self.path) and (self.method is None or self.method == method)

    def error(self) -> StripeAPIError | None:
        """The error this fault answers with, or None for a pure delay."""
        if self.kind == "delay":
            return None
        status, type_, code, message = _PRESETS.get(
            self.kind, (self.status, "api_error", None, "Injected error.")
        )
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = _number(self.retry_after)
        if self.should_retry is not None:
            headers["Stripe-Should-Retry"] = "true" if self.should_retry else "false"
        return StripeAPIError(
            self.status or status,
            self.message or message,
            type=self.type or type_,
            code=self.code or code,
            headers=headers,
        )

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _should_retry(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    return str(value).lower() == "true"


class FaultQueue:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Fault] = []
        self.fired = 0

    def add(self, fault: Fault | None = None, **options: Any) -> Fault:
        """Queue `fault`, or one built from keyword options: `add(kind="rate_limit", path="/v1/charges")`."""
        if fault is None:
            if "should_retry" in options:
                options["should_retry"] = _should_retry(options["should_retry"])
            fault = Fault(**options)
        with self._lock:
            self._pending.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        """The first queued fault for this request, used up by one."""
        with self._lock:
            for position, fault in enumerate(self._pending):
                if fault.matches(method, path):
                    fault.served += 1
                    if fault.served >= fault.count:
                        del self._pending[position]
                    self.fired += 1
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [fault.describe() for fault in self._pending]
