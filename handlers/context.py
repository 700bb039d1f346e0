"""What a handler is given, and the shape of a handler.

A handler has two halves. `fetch` runs first, outside any transaction: it may read the database and
call Stripe for what the payload lacks (a link between objects). `apply` then runs inside the event's
transaction and only writes. Keeping network calls out of the transaction keeps SQLite's write lock,
and PostgreSQL's row locks, held for milliseconds rather than for a Stripe round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlmodel import Session


class UnprocessableEvent(ValueError):
    """The event can never be applied as it is (a required field is missing); retrying will not help."""


class StripeLookup(Protocol):
    """The part of `worker.stripe_api.StripeReader` handlers use: GET a path, get a dict."""

    def get(self, path: str, params: dict[str, Any] | None = None, *, account: str = "") -> dict: ...

    def get_optional(
        self, path: str, params: dict[str, Any] | None = None, *, account: str = ""
    ) -> dict | None: ...


@dataclass(frozen=True)
class EventData:
    event: dict[str, Any]
    account: str

    @property
    def object(self) -> dict[str, Any]:
        return self.event["data"]["object"]

    @property
    def event_id(self) -> str:
        return self.event["id"]

    @property
    def version(self) -> int:
        """Orders writes from different events about one object: Stripe's `created` of this event."""
        return int(self.event["created"])


@dataclass(frozen=True)
class FetchContext(EventData):
    session_factory: Callable[[], Any]  # a context manager yielding a read-only Session
    stripe: StripeLookup | None  # None when no STRIPE_API_KEY is configured


@dataclass(frozen=True)
class HandlerContext(EventData):
    session: Session
    fetched: Any = None
    # Alerts this event raised; the caller hands them to the alert sink after the commit.
    new_alert_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Handler:
    apply: Callable[[HandlerContext], None]
    fetch: Callable[[FetchContext], Any] | None = None
