"""Turning a request body into a Stripe event we are willing to store."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

# Matched with fullmatch: `$` alone would also accept a trailing newline ("evt_x\n").
_EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,250}")
_EVENT_TYPE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+){1,5}")
_ACCOUNT_ID = re.compile(r"acct_[A-Za-z0-9]{1,250}")
_API_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(\.[a-z]+)?")
# A JSON escape for a UTF-16 surrogate (valid only in pairs) or for NUL, which PostgreSQL text refuses.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")
# Stripe's `created` is a Unix time; anything past year 2100 is not one we can store or compare.
MAX_CREATED = 4_102_444_800


# Stripe's integers (amounts, times) fit a signed 64-bit integer, as does every integer column we have;
# 2**63 has 19 digits, so a longer one is out of range without being converted at all.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT64_MAX_DIGITS = 19


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


def decode_body(body: bytes) -> str:
    """The body as text: strictly UTF-8, no byte-order mark (what Stripe sends, and what is stored)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJSON("body is not UTF-8") from exc
    if text.startswith("\ufeff"):
        raise InvalidJSON("body starts with a byte-order mark")
    return text


def _refuse_constant(name: str) -> Any:
    raise InvalidJSON(f"body contains {name} (NaN or Infinity is not JSON)")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise InvalidJSON(f"body contains a number out of range ({literal[:32]})")
    return value


def _int64(literal: str) -> int:
    if len(literal.lstrip("-")) > _INT64_MAX_DIGITS:
        raise InvalidJSON(f"body contains an integer beyond 64 bits ({literal[:32]}...)")
    value = int(literal)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise InvalidJSON(f"body contains an integer beyond 64 bits ({literal})")
    return value


# Python's json accepts NaN, Infinity and -Infinity (not JSON), reads 1e400 as inf and integers of any
# size; none of them can be stored or compared like the numbers Stripe sends. One decoder, built once:
# its hooks cost about 2 µs for a typical event.
_STRICT_DECODER = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_int64
)


def parse_json(text: str) -> Any:
    """Strict JSON: InvalidJSON for malformed text, NaN/Infinity, inf floats or integers beyond 64 bits."""
    try:
        return _STRICT_DECODER.decode(text)
    except InvalidJSON:
        raise
    except (ValueError, RecursionError) as exc:
        raise InvalidJSON("body is not valid JSON") from exc


def check_storable(text: str, document: Any, *, allow_nul: bool = False) -> None:
    """Refuse text no database can store: a lone UTF-16 surrogate, or NUL (PostgreSQL refuses it).

    Only bodies that contain such an escape at all (rare) are looked at closely. `allow_nul` for
    bodies whose handler strips control characters itself (funnel purchases).
    """
    if not _SUSPECT_ESCAPE.search(text):
        return
    for value in _strings(document):
        if "\x00" in value and not allow_nul:
            raise NotAStripeEvent("body contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise NotAStripeEvent("body contains an unpaired UTF-16 surrogate") from exc


def _strings(value: Any):
    """Every string in a parsed JSON document, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# 19 digits in a row: a number that may be beyond 64 bits (orjson reads integers up to 2**64 - 1 as
# int and larger ones as float, where the strict decoder refuses both), or a float with more digits
# than a double holds. Such a body (or one with such a run in a string) takes the strict decoder.
# Found with bytes.translate and `in` (a few µs for 3 KB): re's [0-9]{19} costs ten times more on
# bodies full of shorter digit runs (times, amounts), as Stripe's are.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


# orjson reads arrays and objects nested up to 1,024 deep; the strict decoder (and the worker's own
# json.loads, later) only as deep as Python's recursion limit allows where it runs, a little under
# 1,000. A body with fewer opening brackets than this (in strings too) cannot be nested deeper; one
# with more takes the strict decoder, so what the receiver accepts stays what the worker can read.
_MAX_OPENERS_FOR_ORJSON = 500


def _has_long_digit_run(body: bytes) -> bool:
    return _LONG_DIGITS in body.translate(_DIGITS_AS_ZERO)


def _orjson_reads_as_strict(body: bytes) -> bool:
    """Whether orjson's verdict on `body` is the strict decoder's (see the two checks above)."""
    return body.count(b"[") + body.count(b"{") < _MAX_OPENERS_FOR_ORJSON and not _has_long_digit_run(body)


def parse_event(body: bytes | str) -> ParsedEvent:
    """Parse and check a webhook body; raises NotAStripeEvent with a short reason a caller can show.

    A body first goes through orjson (a fraction of the strict decoder's time for a 3 KB event).
    orjson refuses everything the strict decoder refuses except integers beyond 64 bits and nesting
    deeper than Python reads: bodies that could hold either take the strict decoder
    (`_orjson_reads_as_strict`). Whatever orjson refuses is parsed again by the strict decoder, so a
    refused body gets the same exception and message either way.
    """
    if isinstance(body, bytes) and _orjson_reads_as_strict(body):
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            # orjson checked the UTF-8 and refused a byte-order mark, as decode_body does.
            text = body.decode("utf-8")
            check_storable(text, document)
            return event_from_dict(document)
    text = decode_body(body) if isinstance(body, bytes) else body
    document = parse_json(text)
    check_storable(text, document)
    return event_from_dict(document)


def event_from_dict(document: Any) -> ParsedEvent:
    if not isinstance(document, dict) or document.get("object") != "event":
        raise NotAStripeEvent("body is not a Stripe event object")
    event_id = document.get("id")
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise NotAStripeEvent("event id is missing or malformed")
    event_type = document.get("type")
    if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
        raise NotAStripeEvent("event type is missing or malformed")
    created = document.get("created")
    if not isinstance(created, int) or isinstance(created, bool) or not 0 <= created <= MAX_CREATED:
        raise NotAStripeEvent("event created time is missing or malformed")
    data = document.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise NotAStripeEvent("event data.object is missing")
    account = document.get("account") or ""
    if account and (not isinstance(account, str) or not _ACCOUNT_ID.fullmatch(account)):
        raise NotAStripeEvent("event account is malformed")
    api_version = document.get("api_version")
    if api_version is not None and (
        not isinstance(api_version, str) or not _API_VERSION.fullmatch(api_version)
    ):
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
