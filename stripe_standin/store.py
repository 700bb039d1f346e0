"""In-memory Stripe objects, kept per type in lists sorted by `created`, with indexes for list filters.

Objects are stored in the newest API shape (2025-03-31.basil and later) and may be compact: any field
left out is filled from `shapes.DEFAULTS` when the object is rendered, which keeps 100k generated
charges small. `render.py` derives the older shapes on the way out.

Lists are newest first, like Stripe. Each collection keeps entries `(created, seq, object)` sorted
oldest first (`seq` is a unique insertion number that breaks ties, so tuple comparison never reaches
the object), so a page, a cursor and a `created[...]` range are a bisect away and no request sorts
anything. Equality filters (`customer=`, `invoice=`, `type=`...) use per-value lists of the same
entries in the same order, so filtering 100k objects costs no more than listing them.
"""

from __future__ import annotations

import gc
import json
import secrets
import threading
import time
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# collection -> (object name, id prefix)
COLLECTIONS: dict[str, tuple[str, str]] = {
    "charges": ("charge", "ch_"),
    "refunds": ("refund", "re_"),
    "invoices": ("invoice", "in_"),
    "invoice_payments": ("invoice_payment", "inpay_"),
    "subscriptions": ("subscription", "sub_"),
    "customers": ("customer", "cus_"),
    "events": ("event", "evt_"),
    "payment_intents": ("payment_intent", "pi_"),
    "disputes": ("dispute", "dp_"),
}
COLLECTION_OF_OBJECT = {obj: name for name, (obj, _) in COLLECTIONS.items()}
# Longest prefix first: "inpay_" must win over "in_".
_PREFIXES = sorted(((prefix, name) for name, (_, prefix) in COLLECTIONS.items()), key=lambda p: -len(p[0]))

# Equality filters answered from an index: filter name -> path of the value inside a stored object.
INDEXES: dict[str, dict[str, tuple[str, ...]]] = {
    "charges": {"customer": ("customer",), "payment_intent": ("payment_intent",)},
    "refunds": {"charge": ("charge",), "payment_intent": ("payment_intent",)},
    "invoices": {
        "customer": ("customer",),
        "status": ("status",),
        "subscription": ("parent", "subscription_details", "subscription"),
    },
    "invoice_payments": {"invoice": ("invoice",), "payment_intent": ("payment", "payment_intent")},
    "subscriptions": {"customer": ("customer",), "status": ("status",)},
    "customers": {"email": ("email",)},
    "events": {"type": ("type",)},
    "payment_intents": {"customer": ("customer",)},
    "disputes": {"charge": ("charge",), "payment_intent": ("payment_intent",)},
}

Entry = tuple[int, int, dict[str, Any]]


def dig(obj: Any, path: Iterable[str]) -> Any:
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def collection_for_id(object_id: str) -> str | None:
    for prefix, name in _PREFIXES:
        if object_id.startswith(prefix):
            return name
    return None


@dataclass(frozen=True)
class Created:
    """A `created` filter: Stripe's `created=T` or any of `created[gt|gte|lt|lte]=T`."""

    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None

    def bounds(self, keys: list[Entry]) -> tuple[int, int]:
        low, high = 0, len(keys)
        if self.gte is not None:
            low = max(low, bisect_left(keys, (self.gte,)))
        if self.gt is not None:
            low = max(low, bisect_left(keys, (self.gt + 1,)))
        if self.lte is not None:
            high = min(high, bisect_left(keys, (self.lte + 1,)))
        if self.lt is not None:
            high = min(high, bisect_left(keys, (self.lt,)))
        return low, high


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Bulk loads make hundreds of thousands of dicts and no cycles: the cyclic GC would only rescan them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _insert(entries: list[Entry], entry: Entry) -> None:
    if not entries or entry > entries[-1]:
        entries.append(entry)  # the usual case: objects arrive in time order
    else:
        insort(entries, entry)


def _delete(entries: list[Entry], entry: Entry) -> None:
    del entries[bisect_left(entries, entry)]


class _Collection:
    def __init__(self, name: str) -> None:
        self.name = name
        self.entries: list[Entry] = []
        self.by_id: dict[str, Entry] = {}
        self.paths = INDEXES.get(name, {})
        self.indexes: dict[str, dict[Any, list[Entry]]] = {field: {} for field in self.paths}

    def _index_values(self, obj: dict[str, Any]) -> Iterable[tuple[dict[Any, list[Entry]], Any]]:
        for field, path in self.paths.items():
            value = obj.get(path[0]) if len(path) == 1 else dig(obj, path)
            if value is not None:
                yield self.indexes[field], value

    def add(self, entry: Entry) -> None:
        _insert(self.entries, entry)
        self.by_id[entry[2]["id"]] = entry
        for index, value in self._index_values(entry[2]):
            bucket = index.get(value)
            if bucket is None:
                index[value] = [entry]
            else:
                _insert(bucket, entry)

    def extend(self, entries: list[Entry]) -> None:
        """Append sorted entries that are all newer than the stored ones: no search, no insert."""
        self.entries.extend(entries)
        by_id = self.by_id
        for entry in entries:
            by_id[entry[2]["id"]] = entry
        for field, path in self.paths.items():
            index = self.indexes[field]
            if len(path) == 1:
                pairs = ((entry[2].get(path[0]), entry) for entry in entries)
            else:
                pairs = ((dig(entry[2], path), entry) for entry in entries)
            for value, entry in pairs:
                if value is not None:
                    bucket = index.get(value)
                    if bucket is None:
                        index[value] = [entry]
                    else:
                        bucket.append(entry)

    def remove(self, object_id: str) -> None:
        entry = self.by_id.pop(object_id)
        _delete(self.entries, entry)
        for index, value in self._index_values(entry[2]):
            _delete(index[value], entry)
            if not index[value]:
                del index[value]


class Store:
    """The stand-in's data. Thread-safe: tests add objects while the server thread reads them."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._collections = {name: _Collection(name) for name in COLLECTIONS}
        self._sequence = 0

    # -- adding ---------------------------------------------------------------------------------

    def _prepare(self, obj: dict[str, Any], collection: str | None) -> tuple[str, dict[str, Any]]:
        name = (
            collection
            or COLLECTION_OF_OBJECT.get(obj.get("object", ""))
            or collection_for_id(obj.get("id", ""))
        )
        if name not in COLLECTIONS:
            raise ValueError(f"cannot tell which collection {obj.get('id')!r} belongs to; pass collection=")
        object_name, prefix = COLLECTIONS[name]
        obj.setdefault("object", object_name)
        if not obj.get("id"):
            obj["id"] = prefix + secrets.token_hex(12)
        if obj.get("created") is None:
            obj["created"] = int(time.time())
        return name, obj

    def add(self, obj: dict[str, Any], collection: str | None = None) -> dict[str, Any]:
        """Store `obj` (newest API shape; missing `id`, `object`, `created` are filled in) and return it.

        Adding an id that is already stored replaces that object.
        """
        name, obj = self._prepare(obj, collection)
        with self._lock:
            target = self._collections[name]
            if obj["id"] in target.by_id:
                target.remove(obj["id"])
            self._sequence += 1
            target.add((int(obj["created"]), self._sequence, obj))
        return obj

    def add_many(self, objects: Iterable[dict[str, Any]], collection: str | None = None) -> int:
        """Store many objects at once, in any order; they are sorted once rather than inserted one by one."""
        prepared: dict[str, list[dict[str, Any]]] = {}
        for obj in objects:
            name, obj = self._prepare(obj, collection)
            prepared.setdefault(name, []).append(obj)
        added = 0
        with self._lock, _collector_paused():
            for name, batch in prepared.items():
                # A stable sort keeps equal timestamps in the caller's order.
                batch.sort(key=lambda o: int(o["created"]))
                target = self._collections[name]
                first = self._sequence + 1
                entries = [(int(obj["created"]), first + n, obj) for n, obj in enumerate(batch)]
                self._sequence += len(entries)
                if not target.entries and len({obj["id"] for obj in batch}) == len(batch):
                    target.extend(entries)  # the bulk-load case: an empty collection, unique ids
                elif entries[0][0] >= target.entries[-1][0] and not any(
                    o["id"] in target.by_id for o in batch
                ):
                    target.extend(entries)
                else:
                    for entry in entries:
                        if entry[2]["id"] in target.by_id:
                            target.remove(entry[2]["id"])
                        target.add(entry)
                added += len(batch)
        return added

    def add_event(
        self,
        event_type: str,
        obj: dict[str, Any],
        *,
        created: int | None = None,
        api_version: str | None = None,
        previous_attributes: dict[str, Any] | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """Record an event about `obj` as Stripe would: `data.object` is a snapshot taken now.

        `api_version` is the version `data.object` is shown in (a webhook endpoint's version); left out,
        the event is shown in the caller's version.
        """
        data: dict[str, Any] = {"object": dict(obj)}
        if previous_attributes is not None:
            data["previous_attributes"] = previous_attributes
        event = {"type": event_type, "data": data, "created": created or int(time.time())}
        if api_version:
            event["api_version"] = api_version
        if event_id:
            event["id"] = event_id
        return self.add(event, "events")

    def update(self, collection: str, object_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Replace the stored object by a copy with `changes` applied; events keep their own snapshots."""
        with self._lock:
            target = self._collections[collection]
            if object_id not in target.by_id:
                raise KeyError(object_id)
            created, sequence, old = target.by_id[object_id]
            new = {**old, **changes, "id": object_id, "created": old["created"]}
            target.remove(object_id)
            target.add((created, sequence, new))
            return new

    def load_seed(self, source: str | Path | dict[str, Any] | list[Any]) -> int:
        """Load a JSON seed: `{"charges": [...], "customers": [...]}`, or a list of objects with `object`."""
        document = source
        if isinstance(source, (str, Path)):
            document = json.loads(Path(source).read_text(encoding="utf-8"))
        if isinstance(document, dict):
            objects = []
            for name, items in document.items():
                if name not in COLLECTIONS:
                    raise ValueError(f"unknown collection {name!r} in seed; known: {', '.join(COLLECTIONS)}")
                object_name = COLLECTIONS[name][0]
                objects.extend({"object": object_name, **item} for item in items)
            return self.add_many(objects)
        return self.add_many(document)

    @classmethod
    def from_seed(cls, source: str | Path | dict[str, Any] | list[Any]) -> Store:
        store = cls()
        store.load_seed(source)
        return store

    # -- reading --------------------------------------------------------------------------------

    def get(self, collection: str, object_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._collections[collection].by_id.get(object_id)
        return found[2] if found else None

    def find(self, object_id: str) -> dict[str, Any] | None:
        """Any stored object by id, its type told by the id's prefix."""
        name = collection_for_id(object_id)
        return self.get(name, object_id) if name else None

    def count(self, collection: str) -> int:
        return len(self._collections[collection].entries)

    def counts(self) -> dict[str, int]:
        return {name: len(c.entries) for name, c in self._collections.items()}

    def list(
        self,
        collection: str,
        *,
        where: dict[str, Any] | None = None,
        created: Created | None = None,
        limit: int = 10,
        starting_after: str | None = None,
        ending_before: str | None = None,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page, newest first, and whether more objects lie beyond it (in the paging direction).

        `where` holds equality filters named in INDEXES. A cursor id that is not stored raises KeyError.
        """
        with self._lock:
            target = self._collections[collection]
            entries, checks = self._narrow(target, where or {})
            if predicate is not None:
                checks.append(predicate)
            low, high = (created or Created()).bounds(entries)
            if starting_after is not None:
                created_at, sequence = self._cursor(target, starting_after)
                high = min(high, bisect_left(entries, (created_at, sequence)))
            if ending_before is not None:
                created_at, sequence = self._cursor(target, ending_before)
                low = max(low, bisect_left(entries, (created_at, sequence + 1)))
            backwards = ending_before is not None and starting_after is None
            return _page(entries, low, high, limit, checks, backwards)

    def _narrow(self, target: _Collection, where: dict[str, Any]) -> tuple[list[Entry], list[Callable]]:
        """The shortest index list among the filters, and checks for the remaining filters."""
        candidates = []
        for field, value in where.items():
            if field not in target.indexes:
                raise ValueError(f"{target.name} has no index {field!r}")
            candidates.append((len(target.indexes[field].get(value, ())), field, value))
        if not candidates:
            return target.entries, []
        _, field, value = min(candidates, key=lambda c: c[0])
        checks = [
            (lambda obj, p=target.paths[f], v=v: dig(obj, p) == v) for _, f, v in candidates if f != field
        ]
        return target.indexes[field].get(value, []), checks

    @staticmethod
    def _cursor(target: _Collection, object_id: str) -> tuple[int, int]:
        found = target.by_id.get(object_id)
        if found is None:
            raise KeyError(object_id)
        return found[0], found[1]


def _page(
    entries: list[Entry],
    low: int,
    high: int,
    limit: int,
    checks: list[Callable[[dict[str, Any]], bool]],
    backwards: bool,
) -> tuple[list[dict[str, Any]], bool]:
    if not checks:
        if backwards:
            # ending_before: the `limit` objects just newer than the cursor, still shown newest first.
            stop = min(high, low + limit)
            return [entry[2] for entry in reversed(entries[low:stop])], stop < high
        start = max(low, high - limit)
        return [entry[2] for entry in reversed(entries[start:high])], start > low
    found: list[dict[str, Any]] = []
    positions = range(low, high) if backwards else range(high - 1, low - 1, -1)
    for position in positions:
        obj = entries[position][2]
        if all(check(obj) for check in checks):
            if len(found) == limit:
                return (found[::-1] if backwards else found), True
            found.append(obj)
    return (found[::-1] if backwards else found), False
