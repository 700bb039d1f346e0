"""Counts of the API requests the stand-in received, so tests can assert how many calls a job made."""

from __future__ import annotations

import re
import threading
from collections import Counter
from typing import Any

# `/v1/charges/ch_123` -> `/v1/charges/{id}`: ids are the path segments after a collection name.
_ID_SEGMENT = re.compile(r"^(/v1/[a-z_]+)/[^/]+")


def route_of(path: str) -> str:
    return _ID_SEGMENT.sub(r"\1/{id}", path, count=1)


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_path: Counter[str] = Counter()
        self._by_route: Counter[str] = Counter()

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self._by_path[f"{method} {path}"] += 1
            self._by_route[f"{method} {route_of(path)}"] += 1

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """Requests with this method (any if None) and path: exact (`/v1/charges/ch_1`), a route
        (`/v1/charges/{id}`), or any path if None."""
        counter = self._by_route if path and "{" in path else self._by_path
        with self._lock:
            return sum(
                value
                for key, value in counter.items()
                if (method is None or key.split(" ", 1)[0] == method)
                and (path is None or key.split(" ", 1)[1] == path)
            )

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": sum(self._by_path.values()),
                "by_path": dict(self._by_path),
                "by_route": dict(self._by_route),
            }

    def reset(self) -> None:
        with self._lock:
            self._by_path.clear()
            self._by_route.clear()
