"""Stripe's form encoding: `a[b][c]=v`, `expand[]=x` and `expand[0]=x` turned into nested dicts and lists.

Stripe (and stripe-python, which always sends indexed arrays) encodes request parameters this way in the
query string of a GET and in the `application/x-www-form-urlencoded` body of a POST.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


class ParamError(ValueError):
    """The parameters cannot be decoded; `param` names the offending key."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class _Array(dict):
    """An array being filled: index -> value, turned into a list once all pairs are read."""


def _segments(key: str) -> list[str]:
    match = _KEY.match(key)
    if match is None:
        return [key]
    return [match.group(1), *_SEGMENT.findall(match.group(2))]


def _is_index(segment: str) -> bool:
    return segment == "" or segment.isdigit()


def _slot(container: dict, segment: str) -> Any:
    # `[]` appends: each occurrence is a new element, as Stripe reads `expand[]=a&expand[]=b`.
    if segment == "":
        return len(container)
    return int(segment) if isinstance(container, _Array) else segment


def _finish(node: Any) -> Any:
    if isinstance(node, _Array):
        return [_finish(node[i]) for i in sorted(node)]
    if isinstance(node, dict):
        return {key: _finish(value) for key, value in node.items()}
    return node


def parse_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, value in pairs:
        segments = _segments(key)
        node: dict = root
        for position, segment in enumerate(segments):
            slot = _slot(node, segment)
            if position == len(segments) - 1:
                if isinstance(node.get(slot), dict):
                    raise ParamError(f"Invalid value for {key}: expected an object, got a string.", key)
                node[slot] = value
                break
            child = node.get(slot)
            if child is None:
                child = _Array() if _is_index(segments[position + 1]) else {}
                node[slot] = child
            elif not isinstance(child, dict):
                raise ParamError(f"Invalid value for {key}: {segments[0]} was given as a string.", key)
            node = child
    return _finish(root)


def parse_query(query: str | bytes) -> dict[str, Any]:
    """Decode a query string or form body (both use the same encoding)."""
    if isinstance(query, bytes):
        query = query.decode("utf-8", errors="replace")
    return parse_pairs(parse_qsl(query, keep_blank_values=True))


def as_list(value: Any) -> list[Any]:
    """`expand[]` may arrive as a list, or as a single string when sent as `expand=x`."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value[key] for key in sorted(value, key=lambda k: (len(k), k))]
    return [value]
