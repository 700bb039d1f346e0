"""The Stripe resources the stand-in serves: retrieve, list (filters, cursors, `created`), customer update.

Each function takes the decoded parameters of one request and returns the JSON document to send, or
raises StripeAPIError with the status and message Stripe would give.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stripe_standin.errors import invalid_request, resource_missing, unknown_parameter
from stripe_standin.expand import expand, parse_paths
from stripe_standin.params import as_list
from stripe_standin.render import refunds_list, render
from stripe_standin.shapes import complete
from stripe_standin.store import COLLECTIONS, Created, Store, collection_for_id

LIST_PARAMS = {"limit", "starting_after", "ending_before", "created", "expand"}
# Filters each list endpoint takes besides the common ones.
FILTERS: dict[str, set[str]] = {
    "charges": {"customer", "payment_intent"},
    "refunds": {"charge", "payment_intent"},
    "invoices": {"customer", "status", "subscription"},
    "invoice_payments": {"invoice", "payment", "status"},
    "subscriptions": {"customer", "status"},
    "customers": {"email"},
    "events": {"type", "types"},
    "payment_intents": {"customer"},
    "disputes": {"charge", "payment_intent"},
}
INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")
SUBSCRIPTION_STATUSES = (
    "active", "past_due", "unpaid", "canceled", "incomplete", "incomplete_expired", "trialing", "paused",
    "all", "ended",
)  # fmt: skip
ENDED = frozenset({"canceled", "incomplete_expired"})
CUSTOMER_UPDATABLE = {"description", "email", "name", "phone"}
METADATA_MAX_KEYS = 50
METADATA_KEY_MAX = 40
METADATA_VALUE_MAX = 500
MAX_LIMIT = 100


@dataclass
class Call:
    """One API request, decoded."""

    store: Store
    version: str
    params: dict[str, Any]


# -- presenting objects -------------------------------------------------------------------------------


def _invoice_payments(invoice: dict[str, Any], call: Call) -> dict[str, Any]:
    payments, has_more = call.store.list("invoice_payments", where={"invoice": invoice["id"]}, limit=10)
    return {
        "object": "list",
        "data": [complete(p) for p in payments],
        "has_more": has_more,
        "url": f"/v1/invoice_payments?invoice={invoice['id']}",
    }


# Fields Stripe only includes when expanded, built from other objects.
_ON_DEMAND: dict[tuple[str, str], Callable[[dict[str, Any], Call], Any]] = {
    ("charge", "refunds"): lambda charge, call: refunds_list(charge["id"], call.store),
    ("invoice", "payments"): _invoice_payments,
}


def _resolver(call: Call) -> Callable[[dict[str, Any], str, Any], Any]:
    def resolve(owner: dict[str, Any], name: str, value: str | None) -> Any:
        if value is None:
            build = _ON_DEMAND.get((owner.get("object", ""), name))
            return build(owner, call) if build else None
        target = call.store.find(value)
        if target is not None:
            return render(target, call.version, call.store)
        if collection_for_id(value) is not None:
            raise resource_missing(COLLECTIONS[collection_for_id(value)][0], value, param="expand")
        if "_" in value and " " not in value:
            raise invalid_request(
                f"stripe-standin cannot expand {name}: it holds no objects like '{value}'.", param="expand"
            )
        return None

    return resolve


def present(call: Call, stored: dict[str, Any], *, is_list: bool = False) -> dict[str, Any]:
    paths = parse_paths(as_list(call.params.get("expand")), is_list=is_list)
    return expand(render(stored, call.version, call.store), paths, _resolver(call))


# -- parameters ---------------------------------------------------------------------------------------


def _check_known(params: dict[str, Any], allowed: set[str]) -> None:
    for name in params:
        if name not in allowed:
            raise unknown_parameter(name)


def _integer(value: Any, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid_request(
            f"Invalid integer: {value}", param=param, code="parameter_invalid_integer"
        ) from None


def _limit(params: dict[str, Any]) -> int:
    if "limit" not in params:
        return 10
    limit = _integer(params["limit"], "limit")
    if limit < 1:
        raise invalid_request("This value must be greater than or equal to 1.", param="limit")
    if limit > MAX_LIMIT:
        raise invalid_request(f"This value must be less than or equal to {MAX_LIMIT}.", param="limit")
    return limit


def _created(params: dict[str, Any]) -> Created | None:
    value = params.get("created")
    if value is None:
        return None
    if not isinstance(value, dict):
        exact = _integer(value, "created")
        return Created(gte=exact, lte=exact)
    bounds = {}
    for op, raw in value.items():
        if op not in ("gt", "gte", "lt", "lte"):
            raise unknown_parameter(f"created[{op}]")
        bounds[op] = _integer(raw, f"created[{op}]")
    return Created(**bounds)


def _string(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_request(f"Invalid string: {value!r}", param=name)
    return value


def _choice(value: str, allowed: tuple[str, ...], param: str) -> str:
    if value not in allowed:
        raise invalid_request(f"Invalid {param}: must be one of {', '.join(allowed)}", param=param)
    return value


def _filters(collection: str, params: dict[str, Any]) -> tuple[dict[str, Any], Callable[[dict], bool] | None]:
    """Index lookups (`where`) and any other check for one list request."""
    where: dict[str, Any] = {}
    predicate: Callable[[dict], bool] | None = None
    for name in ("customer", "payment_intent", "charge", "invoice", "subscription", "email"):
        if name in FILTERS[collection] and params.get(name) is not None:
            where[name] = _string(params, name)

    if collection == "invoices" and params.get("status") is not None:
        where["status"] = _choice(_string(params, "status"), INVOICE_STATUSES, "status")
    if collection == "subscriptions":
        status = _choice(_string(params, "status") or "", ("", *SUBSCRIPTION_STATUSES), "status")
        if status == "":
            # Stripe leaves ended subscriptions out unless asked for.
            predicate = lambda s: s.get("status", "active") not in ENDED  # noqa: E731
        elif status == "ended":
            predicate = lambda s: s.get("status", "active") in ENDED  # noqa: E731
        elif status != "all":
            where["status"] = status
    if collection == "invoice_payments":
        payment = params.get("payment")
        if payment is not None:
            if not isinstance(payment, dict):
                raise invalid_request("Invalid object", param="payment")
            _check_known(
                {f"payment[{k}]": v for k, v in payment.items()},
                {"payment[type]", "payment[payment_intent]", "payment[payment_record]"},
            )
            if "type" not in payment:
                raise invalid_request(
                    "Missing required param: payment[type].", param="payment[type]", code="parameter_missing"
                )
            _choice(payment["type"], ("payment_intent", "payment_record"), "payment[type]")
            if payment["type"] == "payment_intent" and payment.get("payment_intent"):
                where["payment_intent"] = payment["payment_intent"]
            elif payment["type"] == "payment_record":
                predicate = lambda p: (p.get("payment") or {}).get("type") == "payment_record"  # noqa: E731
        status = _string(params, "status")
        if status is not None:
            predicate = lambda p: p.get("status", "paid") == status  # noqa: E731
    if collection == "events":
        event_type = _string(params, "type")
        types = as_list(params.get("types"))
        if event_type and "*" in event_type:
            predicate = lambda e: fnmatch.fnmatchcase(e["type"], event_type)  # noqa: E731
        elif event_type:
            where["type"] = event_type
        elif types:
            wanted = set(types)
            predicate = lambda e: e["type"] in wanted  # noqa: E731
    return where, predicate


# -- endpoints ----------------------------------------------------------------------------------------


def _stored(call: Call, collection: str, object_id: str) -> dict[str, Any]:
    stored = call.store.get(collection, object_id)
    if stored is None:
        raise resource_missing(COLLECTIONS[collection][0], object_id)
    return stored


def retrieve(call: Call, collection: str, object_id: str) -> dict[str, Any]:
    _check_known(call.params, {"expand"})
    return present(call, _stored(call, collection, object_id))


def list_objects(call: Call, collection: str, url: str) -> dict[str, Any]:
    params = call.params
    _check_known(params, LIST_PARAMS | FILTERS[collection])
    limit = _limit(params)
    starting_after = _string(params, "starting_after") or None
    ending_before = _string(params, "ending_before") or None
    if starting_after and ending_before:
        raise invalid_request("You may only specify one of these parameters: ending_before, starting_after.")
    where, predicate = _filters(collection, params)
    paths = parse_paths(as_list(params.get("expand")), is_list=True)
    try:
        found, has_more = call.store.list(
            collection,
            where=where,
            created=_created(params),
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            predicate=predicate,
        )
    except KeyError as missing:
        cursor = "starting_after" if starting_after else "ending_before"
        raise resource_missing(COLLECTIONS[collection][0], str(missing.args[0]), param=cursor) from None
    page = {
        "object": "list",
        "data": [render(obj, call.version, call.store) for obj in found],
        "has_more": has_more,
        "url": url,
    }
    return expand(page, paths, _resolver(call))


def _validate_metadata(value: Any) -> dict[str, str] | None:
    """The keys to set ("" unsets one); None when metadata is to be emptied (`metadata=`)."""
    if value == "":
        return None
    if not isinstance(value, dict):
        raise invalid_request("Invalid object", param="metadata")
    for key, item in value.items():
        if not isinstance(item, str):
            raise invalid_request(f"Invalid val: {item!r} must be a string", param=f"metadata[{key}]")
        if len(key) > METADATA_KEY_MAX:
            raise invalid_request(
                f"Invalid key: {key} must be a string under {METADATA_KEY_MAX + 1} characters "
                f"(metadata keys can be up to {METADATA_KEY_MAX} characters long).",
                param="metadata",
            )
        if len(item) > METADATA_VALUE_MAX:
            raise invalid_request(
                f"Invalid val: metadata[{key}] must be a string under {METADATA_VALUE_MAX + 1} characters "
                f"(metadata values can be up to {METADATA_VALUE_MAX} characters long).",
                param="metadata",
            )
    return value


def update_customer(call: Call, object_id: str) -> dict[str, Any]:
    params = call.params
    _check_known(params, CUSTOMER_UPDATABLE | {"metadata", "expand"})
    old = _stored(call, "customers", object_id)
    changes: dict[str, Any] = {}
    for name in CUSTOMER_UPDATABLE & params.keys():
        changes[name] = _string(params, name) or None
    if "metadata" in params:
        updates = _validate_metadata(params["metadata"])
        metadata = dict(old.get("metadata") or {}) if updates is not None else {}
        for key, value in (updates or {}).items():
            if value == "":
                metadata.pop(key, None)
            else:
                metadata[key] = value
        if len(metadata) > METADATA_MAX_KEYS:
            raise invalid_request(
                f"Metadata can have up to {METADATA_MAX_KEYS} keys, but you've set {len(metadata)}.",
                param="metadata",
            )
        changes["metadata"] = metadata
    parse_paths(as_list(params.get("expand")), is_list=False)  # reject a bad expand before changing anything

    previous = {name: old.get(name) for name, value in changes.items() if old.get(name) != value}
    if "metadata" in previous:
        # Like Stripe, previous_attributes.metadata names only the keys that changed.
        before, after = previous["metadata"] or {}, changes["metadata"]
        previous["metadata"] = {
            k: before.get(k) for k in before.keys() | after.keys() if before.get(k) != after.get(k)
        }
    updated = call.store.update("customers", object_id, changes)
    if previous:
        call.store.add_event(
            "customer.updated", updated, created=int(time.time()), previous_attributes=previous
        )
    return present(call, updated)
