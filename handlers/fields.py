"""Reading Stripe objects that may come expanded or as bare ids, in old or new API shapes."""

from __future__ import annotations

from typing import Any

from handlers.context import UnprocessableEvent


def object_id(value: Any) -> str | None:
    """The id of a field that is either an id string or an expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def required(obj: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise UnprocessableEvent(f"{obj.get('object', 'object')} field {name!r} is missing or malformed")
    return value


def optional_str(obj: dict[str, Any], name: str, max_length: int = 255) -> str | None:
    value = obj.get(name)
    if isinstance(value, str) and value:
        return value[:max_length]
    return None


def minor_units(obj: dict[str, Any], name: str, *, default: int | None = None) -> int:
    """An amount in minor units: a whole, non-negative number Stripe could have sent (never 1.5)."""
    from handlers.money import MAX_MINOR

    value = obj.get(name, default) if default is not None else obj.get(name)
    if value is None and default is not None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_MINOR:
        raise UnprocessableEvent(f"{obj.get('object', 'object')} field {name!r} is missing or malformed")
    return value
