"""`expand[]`: replace ids by the objects they name, along dotted paths, as Stripe does.

Rules kept from Stripe: on a list, paths start with `data.`; a path has at most four levels; a field that
holds no id cannot be expanded (400). Expanded objects are rendered in the request's API version, and
can be expanded further (`data.invoice.customer`). A few fields Stripe leaves out unless expanded
(`charge.refunds`, `invoice.payments`) are built here on demand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stripe_standin.errors import invalid_request

MAX_DEPTH = 4
_MISSING = object()

# Resolves one field: (object holding the field, field name, its value or None when absent) -> object.
Resolver = Callable[[dict[str, Any], str, Any], Any]


def parse_paths(paths: list[Any], *, is_list: bool) -> list[list[str]]:
    parsed = []
    for path in paths:
        if not isinstance(path, str) or not path:
            raise invalid_request("Invalid array", param="expand")
        segments = path.split(".")
        if len(segments) > MAX_DEPTH:
            raise invalid_request(
                f"You cannot expand more than {MAX_DEPTH} levels of a property. Property: {path}",
                param="expand",
            )
        if is_list and segments[0] != "data":
            raise invalid_request(
                f"This property cannot be expanded ({path}). "
                f"You may want to try expanding 'data.{path}' instead.",
                param="expand",
            )
        parsed.append(segments)
    # Shorter paths first, so `data.customer` is expanded before `data.customer.invoice_settings...`.
    return sorted(parsed, key=len)


def expand(obj: Any, paths: list[list[str]], resolve: Resolver) -> Any:
    """A copy of `obj` with every path expanded; the dicts along each path are copied, never mutated."""
    for segments in paths:
        obj = _walk(obj, segments, resolve, ".".join(segments))
    return obj


def _cannot(path: str) -> Exception:
    return invalid_request(f"This property cannot be expanded ({path}).", param="expand")


def _walk(node: Any, segments: list[str], resolve: Resolver, path: str) -> Any:
    if not segments or node is None:
        return node
    if not isinstance(node, dict):
        raise _cannot(path)
    name, rest = segments[0], segments[1:]
    if node.get("object") == "list" and name == "data":
        return {**node, "data": [_walk(item, rest, resolve, path) for item in node.get("data", [])]}
    value = node.get(name, _MISSING)
    if value is None:
        return node
    if value is _MISSING or isinstance(value, str):
        value = resolve(node, name, None if value is _MISSING else value)
        if value is None:
            raise _cannot(path)
    elif not isinstance(value, dict):
        raise _cannot(path)
    return {**node, name: _walk(value, rest, resolve, path)}
