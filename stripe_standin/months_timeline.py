"""Object versions and events, each at its time, replayed in time order into a Store.

A month is written purchase by purchase, so its steps come out of time order; replaying them sorted by
time means each event's `data.object` is the object as it was at that moment, rendered with the other
objects as they were then (a pre-basil `invoice.charge` names the charge of that attempt, not a later
retry). Events are stored already rendered, marked FROZEN, as Stripe renders an event once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from stripe_standin.render import FROZEN, LATEST, render
from stripe_standin.store import Store

OLD_VERSIONS = ("2024-06-20", "2023-10-16", "2022-08-01")
# Event types an endpoint receives only from some API version on.
SINCE: dict[str, str] = {
    # Before 2024-10-28.acacia refund.* events were only sent for refunds without a charge.
    "refund.created": "2024-10-28",
    "refund.updated": "2024-10-28",
    "refund.failed": "2024-10-28",
    "invoice_payment.paid": "2025-05-28",
}


@dataclass(frozen=True)
class Endpoint:
    """The seller's webhook endpoint: an old API version until it was upgraded mid-month."""

    old_version: str
    upgraded_at: int

    def version_at(self, when: int) -> str:
        return LATEST if when >= self.upgraded_at else self.old_version

    def sends(self, event_type: str, when: int) -> bool:
        since = SINCE.get(event_type)
        return since is None or self.version_at(when)[:10] >= since


def clone(obj: dict[str, Any]) -> dict[str, Any]:
    """A deep copy (JSON data only), so later edits of a live object never reach a stored version."""
    return json.loads(json.dumps(obj))


@dataclass(frozen=True)
class _Put:
    collection: str
    obj: dict[str, Any]


@dataclass(frozen=True)
class _Event:
    event_id: str
    event_type: str
    collection: str
    object_id: str
    version: str
    previous: dict[str, Any] | None
    request: str | None


class Timeline:
    def __init__(self) -> None:
        self._steps: list[tuple[int, _Put | _Event]] = []

    def put(self, when: int, collection: str, obj: dict[str, Any]) -> None:
        self._steps.append((when, _Put(collection, clone(obj))))

    def event(
        self,
        when: int,
        event_id: str,
        event_type: str,
        collection: str,
        object_id: str,
        version: str,
        previous: dict[str, Any] | None = None,
        request: str | None = None,
    ) -> None:
        self._steps.append(
            (when, _Event(event_id, event_type, collection, object_id, version, previous, request))
        )

    def replay(self, store: Store) -> list[dict[str, Any]]:
        """Fill `store`; return the stored events, oldest first. The sort is stable: same-second steps
        keep the order they were written in, which is their causal order."""
        events = []
        for when, step in sorted(self._steps, key=itemgetter(0)):
            if isinstance(step, _Put):
                store.add(step.obj, step.collection)
            else:
                events.append(store.add(_event(when, step, store), "events"))
        return events


def _event(when: int, step: _Event, store: Store) -> dict[str, Any]:
    snapshot = store.get(step.collection, step.object_id)
    if snapshot is None:
        raise LookupError(f"event {step.event_type} about {step.object_id} before the object exists")
    data: dict[str, Any] = {"object": render(snapshot, step.version, store)}
    if step.previous is not None:
        data["previous_attributes"] = step.previous
    return {
        "id": step.event_id,
        "object": "event",
        "api_version": step.version,
        "created": when,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": step.request, "idempotency_key": None},
        "type": step.event_type,
        FROZEN: True,
    }
