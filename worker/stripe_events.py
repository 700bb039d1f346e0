"""Turning a request body into a Stripe event we are willing to store."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_EVENT_ID = re.compile(r"^evt_[A-Za-z0-9_]{1,250}$")
_EVENT_TYPE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+){1,5}$")
_ACCOUNT_ID = re.compile(r"^acct_[A-Za-z0-9]{1,250}$")
_API_VERSION = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(\.[a-z]+)?$")


class NotAStripeEvent(ValueError):
    """The body parsed, but it is not something Stripe sends as a webhook event."""


class InvalidJSON(NotAStripeEvent):
    """The body is not JSON at all (counted apart from well-formed JSON that is not an event)."""


@dataclass(frozen=True)
class ParsedEvent:
    id: str
    account: str
    type: str
    api_version: str | None
    livemode: bool
    created: int
    data: dict[str, Any]


def parse_event(body: bytes | str) -> ParsedEvent:
    """Parse and check a webhook body; raises NotAStripeEvent with a short reason a caller can show."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidJSON("body is not valid JSON") from exc
    return event_from_dict(document)


def event_from_dict(document: Any) -> ParsedEvent:
    if not isinstance(document, dict) or document.get("object") != "event":
        raise NotAStripeEvent("body is not a Stripe event object")
    event_id = document.get("id")
    if not isinstance(event_id, str) or not _EVENT_ID.match(event_id):
        raise NotAStripeEvent("event id is missing or malformed")
    event_type = document.get("type")
    if not isinstance(event_type, str) or not _EVENT_TYPE.match(event_type):
        raise NotAStripeEvent("event type is missing or malformed")
    created = document.get("created")
    if not isinstance(created, int) or isinstance(created, bool) or created < 0:
        raise NotAStripeEvent("event created time is missing or malformed")
    data = document.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise NotAStripeEvent("event data.object is missing")
    account = document.get("account") or ""
    if account and (not isinstance(account, str) or not _ACCOUNT_ID.match(account)):
        raise NotAStripeEvent("event account is malformed")
    api_version = document.get("api_version")
    if api_version is not None and (not isinstance(api_version, str) or not _API_VERSION.match(api_version)):
        raise NotAStripeEvent("event api_version is malformed")
    livemode = document.get("livemode", False)
    if not isinstance(livemode, bool):
        raise NotAStripeEvent("event livemode is malformed")
    return ParsedEvent(
        id=event_id,
        account=account,
        type=event_type,
        api_version=api_version,
        livemode=livemode,
        created=created,
        data=data,
    )
