"""What a handler is given: the open transaction and the event it is applying."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session


class UnprocessableEvent(ValueError):
    """The event can never be applied as it is (a required field is missing); retrying will not help."""


@dataclass(frozen=True)
class HandlerContext:
    session: Session
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
